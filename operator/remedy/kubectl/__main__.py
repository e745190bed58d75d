"""``python -m remedy.kubectl``: the same as the ``kubectl-remedy`` console script."""

import sys

from .main import main

sys.exit(main())
