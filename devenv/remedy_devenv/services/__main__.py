"""`python -m remedy_devenv.services` (scripts/services)."""

import sys

from .cli import main

sys.exit(main())
