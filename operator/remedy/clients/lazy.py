"""Database drivers loaded on first use, not at operator start.

Why: psycopg and pymongo add about 14 MiB to every operator process (measured with
``ru_maxrss`` over the other imports), although most installations never run a Postgres or
MongoDB action. The action modules name the driver at module level (``except psycopg.Error``),
so they get a module object whose real import happens at the first attribute access
(``importlib.util.LazyLoader``), which is when an action of that kind first runs or fails.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name`` as a module that imports itself on first attribute access (already imported: as is)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
