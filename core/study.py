"""``python -m core.study``: The reproduction study (the code: ``core.experiments.study``).

An entry point of the public interface (docs/api.md, "Entry points and aliases"); it holds
no code of its own."""
import sys

from core.experiments.study import main

if __name__ == "__main__":
    sys.exit(main())
