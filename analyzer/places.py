"""rid → its place among a batch's requests, as a dict would give it, held as two arrays.

A dict of a week's rids costs ~90 bytes a request (its entry, its table and an int object for each
place), most of it small blocks the allocator keeps after the analysis lets go of them. Here: each rid's
hash and place, sorted by hash (16 bytes a request); a lookup finds the hash and checks the rid itself.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from analyzer import mapped


class Places(Mapping):
    """``{rid: p for p, rid in enumerate(rids)}`` (a repeated rid: its last place, as the dict's)."""

    def __init__(self, rids: Sequence[str]):
        self._rids = rids
        h = np.fromiter(map(hash, rids), dtype=np.int64, count=len(rids))
        self._order = mapped.kept(np.argsort(h, kind="stable"))  # (equal hashes: by place)
        self._h = mapped.kept(h[self._order])
        self._last: tuple[str | None, int] = (None, -1)
        self._n = len(set(rids)) if self._h.size and (np.diff(self._h) == 0).any() else len(rids)

    def __getitem__(self, rid: str) -> int:
        if rid == self._last[0] and type(rid) is str:  # (the outputs ask a request's place a few times in a row)
            return self._last[1]
        if type(rid) is not str:
            raise KeyError(rid)
        h, hs = hash(rid), self._h
        at = int(hs.searchsorted(h))
        found = -1
        while at < hs.size and hs[at] == h:
            p = int(self._order[at])
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
