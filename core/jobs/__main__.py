"""``python -m core.jobs``: submit, watch, cancel and resume training jobs (``core.jobs.manager``)."""
import sys

from core.jobs.manager import main

sys.exit(main())
