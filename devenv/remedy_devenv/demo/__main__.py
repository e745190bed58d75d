"""``python -m remedy_devenv.demo`` (what ./scripts/demo runs)."""

import sys

from .runner import main

sys.exit(main())
