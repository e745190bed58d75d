"""remedy: a Kubernetes operator that turns incident runbooks into safe, audited remediation.

Public surface (tested in tests/unit/test_architecture.py, test_public_surface):
- ``remedy.api``: the pydantic models of the CRDs (the single source of truth for crds/).
- ``remedy.errors``: the exception tree carrying retry intent.
- ``remedy.actions.registry``: the explicit map from ``spec.action`` member to action.
"""

from .base.constants import GROUP, VERSION

__version__ = "0.1.0"

__all__ = ["GROUP", "VERSION", "__version__"]
