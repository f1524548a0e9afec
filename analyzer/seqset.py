"""Which (source, seq) pairs some messages hold: is one sent twice, does another message hold one of them.

Every message carries its publisher's seq, counting up, so a recording's pairs are all different unless
one was sent (or recorded) twice. The checks that want that answered (columnar._first_of_duplicates,
gpu_store.HostScan) used to sort every pair's key (8 bytes a message, sorted in place: all of them
resident at once). ``SeqSet`` holds a bit for each seq in each source's range instead, set a block of
pairs at a time, in a mapped file where large (analyzer.mapped), its pages handed back as they are set:
a day of requests' events are ~30 KiB of bits, not 2 MiB of keys, and no sort. A source whose seqs are
too sparse for bits (a daemon's heartbeats among its 100 Hz ticks, a counter restarted far from where
it was) has its pairs' keys sorted, as before (``SortedKeys``): a few.
"""
from __future__ import annotations

import numpy as np

from analyzer import mapped

DENSE = 64         # a source's bits may be this many times its pairs (plus SLACK: no more bytes than their
                   # keys), else its keys are sorted
SLACK = 1 << 16
SEQ_BITS = 40      # a seq's bits in a key (columnar.sorted_keys)
_BLOCK = 1 << 16   # pairs read at a time
_BIT = np.array([1 << k for k in range(8)], dtype=np.uint8)
_POP = np.array([bin(k).count("1") for k in range(256)], dtype=np.int64)


def out_of_range(seq: np.ndarray) -> bool:
    """Whether a seq is outside [0, 2**SEQ_BITS): no key can be made of it."""
    return bool(seq.size) and (int(seq.min()) < 0 or int(seq.max()) >= 1 << SEQ_BITS)


def _by_source(src: np.ndarray, seq: np.ndarray):
    """(source code, its seqs) of a block of pairs (one source, the usual, without a split)."""
    if not src.size:
        return
    first = int(src[0])
    if (src == first).all():
        yield first, seq
        return
    for code in np.unique(src).tolist():
        yield code, seq[src == code]


class SeqSet:
    """The pairs: of each source dense enough, bits (source code → its lowest seq, and a bit a seq from
    there); of the others, their keys sorted (``sparse``, None when there are none). ``repeats``: whether
    a pair is held twice."""

    def __init__(self, lo: dict[int, int], bits: dict[int, np.ndarray], repeats: bool,
                 sparse: SortedKeys | None = None):
        self.lo, self.bits, self.sparse = lo, bits, sparse
        self.repeats = repeats or (sparse is not None and sparse.repeats)

    def hits(self, src: np.ndarray, seq: np.ndarray) -> bool:
        """Whether any of these pairs is in the set."""
        for code, mine in _by_source(src, seq):
            bits = self.bits.get(code)
            if bits is None:
                if self.sparse is not None and self.sparse.hits(np.full(mine.size, code, dtype=np.int64), mine):
                    return True
                continue
            s = mine - self.lo[code]
            s = s[(s >= 0) & (s < bits.size * 8)]
            found = bool((bits[s >> 3] & _BIT[s & 7]).any())
            mapped.written(bits)  # (the pages read: a scan asks a block at a time)
            if found:
                return True
        return False


class SortedKeys:
    """Pairs as their keys (source code << SEQ_BITS | seq), sorted: for seqs too sparse for bits."""

    def __init__(self, keys: np.ndarray):
        self.keys = keys
        self.repeats = any((b[1:] == b[:-1]).any() for b in mapped.in_blocks(keys, overlap=1))

    def hits(self, src: np.ndarray, seq: np.ndarray) -> bool:
        key = src.astype(np.int64) << SEQ_BITS | seq
        at = np.searchsorted(self.keys, key)
        inside = at < self.keys.size
        return bool((self.keys[at[inside]] == key[inside]).any())


def seq_set(parts: list[tuple[np.ndarray, np.ndarray]]) -> SeqSet | None:
    """The (source code, seq) pairs of the parts; None where a seq is outside [0, 2**SEQ_BITS) (no key
    can be made of it, as columnar.sorted_keys)."""
    lo: dict[int, int] = {}
    hi: dict[int, int] = {}
    count: dict[int, int] = {}
    for src, seq in parts:  # each source's range and count
        for s, q in zip(mapped.in_blocks(src, _BLOCK), mapped.in_blocks(seq, _BLOCK)):
            if out_of_range(q):
                return None
            for code, mine in _by_source(s, q):
                a, b = int(mine.min()), int(mine.max())
                lo[code], hi[code] = min(lo.get(code, a), a), max(hi.get(code, b), b)
                count[code] = count.get(code, 0) + mine.size
    sparse = sorted(c for c in lo if hi[c] - lo[c] + 1 > DENSE * count[c] + SLACK)
    keys = None
    if sparse:  # (a heartbeat among a daemon's 100 Hz ticks: its keys, few, sorted)
        from analyzer.columnar import sorted_keys  # (columnar uses this module: imported when needed)

        keys = SortedKeys(sorted_keys([(s[m], q[m]) for s, q in parts for m in [np.isin(s, sparse)]]))
    dense = [c for c in lo if c not in sparse]
    bits = {c: mapped.full((hi[c] - lo[c]) // 8 + 1, 0, dtype=np.uint8) for c in dense}
    for src, seq in parts:
        for s, q in zip(mapped.in_blocks(src, _BLOCK), mapped.in_blocks(seq, _BLOCK)):
            for code, mine in _by_source(s, q):
                if code in bits:
                    at = mine - lo[code]
                    np.bitwise_or.at(bits[code], at >> 3, _BIT[at & 7])
                    mapped.written(bits[code])  # (the pages set: not resident for the whole pass)
    held = sum(int(_POP[b].sum()) for c in dense for b in mapped.in_blocks(bits[c], _BLOCK))
    return SeqSet({c: lo[c] for c in dense}, bits, held < sum(count[c] for c in dense), keys)
