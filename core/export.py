"""``python -m core.export RUN OUT [--format hf|sentence-transformers]``: publish a trained
checkpoint, or take its encoder out of the studio (the code: ``core.tools.export``).

An entry point of the public interface (docs/api.md, "Entry points and aliases"); it holds
no code of its own."""
import sys

from core.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
