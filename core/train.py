"""``python -m core.train``: Train a MultitaskBert from a YAML recipe (the code: ``core.training.cli``, the loop ``core.training.trainer``).

An entry point of the public interface (docs/api.md, "Entry points and aliases"); it holds
no code of its own."""
import sys

from core.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
