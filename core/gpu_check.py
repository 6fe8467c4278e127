"""``python -m core.gpu_check``: The GPU readiness check (the code: ``core.tools.gpu_check``).

An entry point of the public interface (docs/api.md, "Entry points and aliases"); it holds
no code of its own."""
import sys

from core.tools.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
