"""``python -m core.bench``: The side-by-side speed benchmark (the code: ``core.tools.bench``).

An entry point of the public interface (docs/api.md, "Entry points and aliases"); it holds
no code of its own."""
import sys

from core.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
