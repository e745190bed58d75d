"""glibc allocator settings for the operator process: fewer malloc arenas, and freed memory
handed back to the kernel after a burst.

Why: the operator's memory is set by bursts (a start over thousands of objects, an alert storm),
not by how many objects exist (docs/scale.md). The Kubernetes client decodes every response in
one of 32 worker threads, and glibc gives threads their own malloc arenas (up to 8 per core),
each keeping its freed pages; after a burst the process keeps that high-water mark. Two arenas
and a periodic ``malloc_trim(0)`` keep the resident set near what is actually in use
(bench/memory.py measures it). No-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """Looked up once: find_library runs ``ldconfig -p`` in a subprocess on every call, and
    ``trim`` runs every 30 s."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only: musl has neither mallopt nor malloc_trim
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(count: int) -> bool:
    """Cap glibc malloc arenas; call before worker threads start. True when applied."""
    libc = _libc()
    if libc is None or count <= 0:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, count))


def trim() -> bool:
    """Return free heap pages of every arena to the kernel (glibc ``malloc_trim(0)``)."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
