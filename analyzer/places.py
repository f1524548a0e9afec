"""rid → its place among a batch's requests, as a dict would give it, held as one array.

A dict of a week's rids costs ~90 bytes a request (its entry, its table and an int object for each
place), most of it small blocks the allocator keeps after the analysis lets go of them. Here: one
64-bit key a rid, its hash's high bits above its place's bits, made a block of rids at a time and
sorted in place in a mapped file (analyzer.mapped: 8 bytes a request, not resident once sorted); a
lookup finds the hash's keys and checks each one's rid itself.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import islice

import numpy as np

from analyzer import mapped

_BLOCK = 1 << 15  # rids hashed (and keys compared) at a time
_MASK = (1 << 64) - 1


class Places(Mapping):
    """``{rid: p for p, rid in enumerate(rids)}`` (a repeated rid: its last place, as the dict's)."""

    def __init__(self, rids: Sequence[str]):
        self._rids = rids
        n = len(rids)
        self._bits = max(n - 1, 1).bit_length()  # a place's bits; the hash's top 64 - bits above them
        bits = np.uint64(self._bits)
        keys = mapped.empty(n, np.uint64)
        it = iter(rids)
        for lo in range(0, n, _BLOCK):
            k = min(_BLOCK, n - lo)
            h = np.fromiter(map(hash, islice(it, k)), dtype=np.int64, count=k).view(np.uint64)
            keys[lo:lo + k] = ((h >> bits) << bits) | np.arange(lo, lo + k, dtype=np.uint64)
            mapped.drop()  # (the block's rids read from their mapped text: not resident for the whole pass)
        keys.sort()  # (in place: the keys are distinct, their places differ)
        self._keys = mapped.written(keys)
        self._last: tuple[str | None, int] = (None, -1)
        self._n = n - self._repeats()

    def _repeats(self) -> int:
        """How many places hold a rid that another place holds too (the dict keeps one of each): among
        each run of keys sharing a hash (rare but for a repeated rid), its rids compared."""
        keys, bits = self._keys, np.uint64(self._bits)
        shared: list[int] = []  # i where key i and key i + 1 share a hash
        for lo in range(0, max(keys.size - 1, 0), _BLOCK):
            top = keys[lo:lo + _BLOCK + 1] >> bits
            shared.extend((np.flatnonzero(top[1:] == top[:-1]) + lo).tolist())
        out, k = 0, 0
        while k < len(shared):
            end = k
            while end + 1 < len(shared) and shared[end + 1] == shared[end] + 1:
                end += 1
            run = range(shared[k], shared[end] + 2)
            out += len(run) - len({self._rid_at(j) for j in run})
            k = end + 1
        return out

    def _rid_at(self, at: int) -> str:
        return self._rids[int(self._keys[at]) & ((1 << self._bits) - 1)]

    def __getitem__(self, rid: str) -> int:
        if rid == self._last[0] and type(rid) is str:  # (the outputs ask a request's place a few times in a row)
            return self._last[1]
        if type(rid) is not str:
            raise KeyError(rid)
        keys, bits = self._keys, self._bits
        top = (hash(rid) & _MASK) >> bits
        at = int(keys.searchsorted(np.uint64(top << bits)))
        found = -1
        while at < keys.size and int(keys[at]) >> bits == top:  # (in place order: the last one found wins)
            p = int(keys[at]) & ((1 << bits) - 1)
            if self._rids[p] == rid:
                found = p
            at += 1
        if found < 0:
            raise KeyError(rid)
        self._last = (rid, found)
        return found

    def __iter__(self) -> Iterator[str]:
        if self._n == len(self._rids):
            return iter(self._rids)
        return iter(dict.fromkeys(self._rids))  # (each once, in first-seen order, as the dict's keys)

    def __len__(self) -> int:
        return self._n
