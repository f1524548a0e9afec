"""Arrays that grow with the requests, kept in temporary files mapped into memory.

A run's index of its requests (their stamps and places in the events file, their rids, their windows)
is a few hundred bytes a request: on the heap, a month of requests' is hundreds of MiB that no phase
of the analysis reads at once. An array made here lives in a temporary file mapped into the process:
the passes read and write it as any array, and ``drop()`` (memory.give_back calls it between slabs and
phases) hands its pages back to the OS, which keeps them in the file (its page cache first) and pages
them in again when read. So what stays resident is what the current phase touches, not the run's
requests. Only arrays of ``MIN_BYTES`` or more go to a file, and only where a mapping's pages can be
dropped (``madvise``: Linux); elsewhere, or for a small batch, an array stays on the heap: only the
figure for peak memory differs, never a value. The files are unlinked as soon as they are made (they
go with the last array using them, or with the process) and are made where ``tempfile`` puts its
files (``TMPDIR``: on a machine whose temporary directory is RAM, point it at a disk).
"""
from __future__ import annotations

import mmap
import tempfile
import weakref
from array import array
from typing import Any, Iterator

import numpy as np

MIN_BYTES = 1 << 18  # smaller arrays stay on the heap (a file and a mapping each is not worth it)
_BLOCK = 1 << 16  # values a pass over an array made here fills or reads at a time
_CAN = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap.mmap, "madvise")
_maps: weakref.WeakSet = weakref.WeakSet()  # the live mappings (each goes with its last array)


def empty(shape: Any, dtype: Any = np.float64) -> np.ndarray:
    """``np.empty``, in a mapped file where large enough (its bytes zero there, not undefined)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not _CAN or dtype.hasobject or n < max(MIN_BYTES, 1):
        return np.empty(shape, dtype)
    with tempfile.TemporaryFile(prefix="genai-power-index-") as f:
        f.truncate(n)
        m = mmap.mmap(f.fileno(), n)  # (the mapping keeps its own handle: the file object can go)
    _maps.add(m)
    return np.frombuffer(m, dtype=dtype).reshape(shape)


def full(shape: Any, value: Any, dtype: Any = np.float64) -> np.ndarray:
    """``np.full``, in a mapped file where large enough (its pages handed back once filled)."""
    out = empty(shape, dtype)
    out[...] = value
    return written(out)


def arange(n: int) -> np.ndarray:
    """``np.arange(n)`` (int64), made a block at a time in a mapped file where large enough."""
    out = empty(n, np.int64)
    for lo in range(0, n, _BLOCK):
        out[lo:lo + _BLOCK] = np.arange(lo, min(lo + _BLOCK, n))
    return written(out)


def kept(a: Any) -> np.ndarray:
    """``a`` as an array, copied into a mapped file where large enough (then ``a`` can go; the copy's
    pages handed back once written)."""
    a = np.asarray(a)
    if not _CAN or a.dtype.hasobject or a.nbytes < MIN_BYTES or is_mapped(a):
        return a
    out = empty(a.shape, a.dtype)
    out[...] = a
    return written(out)


def take(a: np.ndarray, idx: Any) -> np.ndarray:
    """``a[idx]`` (positions along the first axis), gathered a block at a time into a mapped file where
    large enough, the pages of ``a``, ``idx`` and the result handed back after each block: taking a
    run's rows of a run's array leaves neither resident, nor a heap copy of the result beside its file's."""
    idx = np.asarray(idx, dtype=np.int64)
    if not (is_mapped(a) or is_mapped(idx)):
        return kept(a[idx])
    out = empty((idx.size, *a.shape[1:]), a.dtype)
    for lo in range(0, idx.size, _BLOCK):
        np.take(a, idx[lo:lo + _BLOCK], axis=0, out=out[lo:lo + _BLOCK])
        for m in (a, idx, out):
            written(m)
    return out


def inverse(places: np.ndarray, n: int) -> np.ndarray:
    """Of each of n positions, where it is in ``places`` (distinct positions; int64, -1: not there), set a
    block at a time into a mapped file where large enough: no heap ``arange`` of the places beside it."""
    out = full(n, -1, np.int64)
    for lo in range(0, places.shape[0], _BLOCK):
        hi = min(lo + _BLOCK, places.shape[0])
        out[places[lo:hi]] = np.arange(lo, hi)
        written(out)
        written(places)
    return out


def written(a: np.ndarray) -> np.ndarray:
    """``a``, its mapping's resident pages handed back when it is mapped (a whole array just written: its
    pages would otherwise stay resident, beside the next pass's, until the next ``drop()``)."""
    m = _mapping(a)
    if m is not None and not m.closed:
        m.madvise(mmap.MADV_DONTNEED)
    return a


class Spooled:
    """An array made by appending to ``buf`` (an ``array`` of ``typecode``), never all on the heap: the
    owner calls ``spill()`` now and then (every ``CHUNK`` appends or so), which writes what ``buf`` holds
    to a temporary file and empties it once it is ``MIN_BYTES`` or more. ``array()``: every value
    appended, one array (mapped once any was spilled; ``buf`` itself, viewed, when none was)."""

    CHUNK = 1 << 16  # values an owner lets buf hold before it spills

    def __init__(self, typecode: str):
        self.buf = array(typecode)
        self._dtype = np.dtype(typecode)
        self._file: Any = None
        self._n = 0  # values in the file

    def __len__(self) -> int:
        return self._n + len(self.buf)

    def spill(self) -> None:
        if _CAN and len(self.buf) * self._dtype.itemsize >= max(MIN_BYTES, 1):  # (a small one stays)
            self._write()

    def _write(self) -> None:
        if not self.buf:
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="genai-power-index-")
        self.buf.tofile(self._file)
        self._n += len(self.buf)
        self.buf = array(self.buf.typecode)

    def array(self) -> np.ndarray:
        """Every value appended (then append no more)."""
        dtype = self._dtype
        if self._file is not None:
            self._write()  # (the rest, however short)
            with self._file as f:
                f.flush()
                m = mmap.mmap(f.fileno(), self._n * dtype.itemsize)
            self._file, self._n = None, 0
            _maps.add(m)
            self.buf = np.frombuffer(m, dtype)  # (what a second call returns)
        if isinstance(self.buf, np.ndarray):
            return self.buf
        return np.frombuffer(self.buf, dtype) if len(self.buf) else np.zeros(0, dtype)


def in_blocks(a: np.ndarray, size: int = _BLOCK, overlap: int = 0) -> Iterator[np.ndarray]:
    """``a``'s values a block of ``size`` at a time (views, each with the next one's first ``overlap``
    values too), a mapped array's pages handed back after each: a pass over a run's array (a check, a
    count) leaves no more of it resident than a block."""
    for lo in range(0, a.shape[0], size):
        yield a[lo:lo + size + overlap]
        written(a)


def rising(a: np.ndarray, strictly: bool = True) -> bool:
    """Whether ``a`` rises (or, not ``strictly``, never falls), checked a block at a time (``in_blocks``)."""
    return all(((b[1:] > b[:-1]) if strictly else (b[1:] >= b[:-1])).all() for b in in_blocks(a, overlap=1))


def is_mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is (a view of) an array made here."""
    return _mapping(a) is not None


def _mapping(a: Any) -> mmap.mmap | None:
    """The mapping ``a`` is (a view of), else None."""
    base: Any = a
    while True:
        if isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        elif isinstance(base, memoryview):
            base = base.obj
        else:
            return base if isinstance(base, mmap.mmap) else None


def drop() -> None:
    """Hand every mapped array's resident pages back (their values stay in the files)."""
    for m in list(_maps):
        if not m.closed:
            m.madvise(mmap.MADV_DONTNEED)
