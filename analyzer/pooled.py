"""A group's pooled values (stats.csv's inter-token gaps: every gap of every request of a model × task
× load) in bounded memory: doubles held up to HELD of them, the rest in a temporary file, read back a
chunk at a time. A week of requests has tens of millions of gaps (~400 bytes a request); held, they
were most of what the analysis grew by per request.

Exact order statistics without sorting them all (``kth``): the values' bit patterns, mapped so that
their order is the numbers' order, are counted 16 bits at a time (a 65,536-bin histogram per pass)
until the bin that holds the wanted rank is small enough to sort, so the percentiles are the very
numbers a sort of every value gives."""
from __future__ import annotations

import tempfile
from array import array
from itertools import chain
from typing import Iterable, Iterator

import numpy as np

HELD = 1 << 17     # values held in memory (1 MiB); beyond, they go to the file (a block at a time)
CHUNK = 1 << 16    # values read back at a time
SORTED = 1 << 18   # a bin of at most this many values is sorted to find the rank in it
_BITS, _BINS = 16, 1 << 16
_SIGN = np.uint64(1 << 63)


class PooledValues:
    """Doubles appended in order (``extend``), then read again as often as needed, in that order
    (``chunks``, iteration, ``len``). ``close`` deletes the file (also done when collected)."""

    def __init__(self, held: int | None = None) -> None:
        self._limit = HELD if held is None else held  # (read when made: a test may lower it)
        self._held = array("d")
        self._file = None
        self._spilled = 0

    def extend(self, values: Iterable[float]) -> None:
        self._held.extend(values)
        if len(self._held) >= self._limit:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="genai-power-pooled-")
            self._held.tofile(self._file)
            self._spilled += len(self._held)
            self._held = array("d")

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def __len__(self) -> int:
        return self._spilled + len(self._held)

    def _from_file(self) -> Iterator[np.ndarray]:
        if self._file is None:
            return
        self._file.seek(0)
        left = self._spilled
        while left:
            data = self._file.read(min(left, CHUNK) * 8)
            if not data:
                raise OSError("the pooled values' temporary file ended early")
            got = np.frombuffer(data, dtype=np.float64)
            left -= got.size
            yield got

    def chunks(self) -> Iterator[np.ndarray]:
        """The values in order, CHUNK at a time from the file, then those held (read-only arrays)."""
        yield from self._from_file()
        if self._held:
            yield np.frombuffer(self._held, dtype=np.float64)

    def __iter__(self) -> Iterator[float]:
        # (C iterators all the way: describe's fsum passes go over millions)
        if self._file is None:
            return iter(self._held)
        return chain(chain.from_iterable(map(np.ndarray.tolist, self._from_file())), self._held)

    def held(self) -> array | None:
        """The values as one array of doubles when none went to the file (else None)."""
        return None if self._file is not None else self._held

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _keys(c: np.ndarray) -> np.ndarray:
    """Each double's bits as an unsigned integer in the numbers' order (negatives' bits inverted,
    positives' sign bit set): -inf < … < 0.0 < … < inf, -0.0 taken as 0.0 (equal numbers: a sort
    keeps them in their order, and so does kth)."""
    u = (c + 0.0).view(np.uint64)  # (-0.0 + 0.0 is 0.0)
    return np.where(u & _SIGN, ~u, u | _SIGN)


def _value(key: int) -> float:
    u = np.uint64(key)
    return float((u & ~_SIGN if u & _SIGN else ~u).view(np.float64))


class InArray:
    """An array's values as ``kth`` reads a pool: CHUNK at a time (no copy of the array)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return int(self.values.size)

    def chunks(self) -> Iterator[np.ndarray]:
        return (self.values[lo:lo + CHUNK] for lo in range(0, self.values.size, CHUNK))


def kth(pool: PooledValues | InArray, rank: int, small: int | None = None) -> float:
    """The ``rank``-th smallest value (0-based), as ``sorted(values)[rank]`` would give it: the bin
    holding it narrowed 16 bits of the key a pass, then sorted once it holds ``small`` (SORTED) or fewer."""
    small = SORTED if small is None else small
    if not 0 <= rank < len(pool):
        raise IndexError(rank)
    prefix, shift = 0, 64  # the values still in play have key >> shift == prefix
    while shift:
        shift -= _BITS
        counts = np.zeros(_BINS, dtype=np.int64)
        for c in pool.chunks():
            k = _keys(c)
            if shift + _BITS < 64:
                k = k[(k >> np.uint64(shift + _BITS)) == np.uint64(prefix)]
            counts += np.bincount(((k >> np.uint64(shift)) & np.uint64(_BINS - 1)).astype(np.int64), minlength=_BINS)
        below = np.cumsum(counts)
        b = int(np.searchsorted(below, rank, side="right"))
        rank -= int(below[b - 1]) if b else 0
        prefix = (prefix << _BITS) | b
        if shift and counts[b] <= small:  # small enough: its values sorted, the rank read off
            mine = [c[(_keys(c) >> np.uint64(shift)) == np.uint64(prefix)] for c in pool.chunks()]
            got = np.sort(np.concatenate(mine), kind="stable")
            return float(got[rank])
    value = _value(prefix)  # every bit fixed: that one number (repeated)
    if value == 0.0:  # the rank-th zero in their order, signed as it is
        for c in pool.chunks():
            zeros = c[c == 0.0]
            if rank < zeros.size:
                return float(zeros[rank])
            rank -= zeros.size
    return value
