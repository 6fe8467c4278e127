"""``python -m core.jobs``: submit, watch, cancel and resume training jobs. The command line
is ``core.jobs.cli``; the jobs themselves are ``core.jobs.manager``'s :class:`JobManager`."""
import sys

from core.jobs.cli import main

sys.exit(main())
