"""``python -m core.evaluate``: Evaluate a checkpoint on the dev sets (the code: ``core.evaluation.evaluator``).

An entry point of the public interface (docs/api.md, "Entry points and aliases"); it holds
no code of its own."""
import sys

from core.evaluation.evaluator import main

if __name__ == "__main__":
    sys.exit(main())
