"""Hand freed memory back to the OS between long phases of work.

glibc keeps freed heap pages (and the analysis frees a slab's arrays, a request JSON's text, ... by the
thousand), so the resident size of a long run climbs to a high-water mark that no live data explains;
``malloc_trim`` returns them. Arrow's pool likewise keeps freed buffers until asked, and the arrays kept
in mapped files (analyzer.mapped) keep the pages last read until dropped. A no-op where none of
these exists (Windows, macOS, musl): only the figure for peak memory changes, never a result.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

from analyzer import mapped


def _trim_fn():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


_TRIM = _trim_fn()


def give_back() -> None:
    """Return what the allocators hold freed, and the mapped arrays' resident pages (analyzer.mapped; a
    few ms: call it between slabs, not per request)."""
    mapped.drop()
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    if _TRIM is not None:
        _TRIM(0)
