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


def _libc_fn(name: str):
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name, None)
    except OSError:
        return None


_TRIM, _MALLOPT = _libc_fn("malloc_trim"), _libc_fn("mallopt")
_M_MMAP_THRESHOLD = -3  # (glibc's malloc.h)
MMAP_THRESHOLD = 1 << 17  # bytes: a block this large or more is its own mapping, handed back when freed


def fix_mmap_threshold() -> bool:
    """Serve every block of MMAP_THRESHOLD bytes or more (an array of 16,384 doubles) by a mapping of its
    own, unmapped when freed. glibc starts there but raises the threshold each time such a block is freed
    (up to 32 MiB), so after a phase that made and freed large arrays the next one's come from the heap,
    and what they leave there decided the statistics' peak by 5-11 MiB (BENCHMARKS.md). Fixed, the
    peak no longer depends on what came before. False where there is no mallopt (then nothing changes)."""
    return _MALLOPT is not None and _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


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
