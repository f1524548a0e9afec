"""Which (source, seq) pairs messages hold (analyzer.seqset): bits over each source's range, or its keys
sorted where the seqs are too sparse; either way the same answers as a set of the pairs."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer import mapped, seqset


def _parts(rng, sizes, spread):
    return [(rng.integers(0, 3, n), rng.integers(0, spread, n) + 1000) for n in sizes]


@pytest.mark.parametrize("block", [1, 5, 1 << 16])
@pytest.mark.parametrize("sparse", [False, True])
def test_repeats_and_hits_are_those_of_a_set_of_the_pairs(block, sparse, monkeypatch):
    """Parts of pairs from three sources, read in blocks that cut them anywhere: ``repeats`` is whether
    any pair is held twice (within a part or across), ``hits`` whether any asked pair is held; with bits
    (the seqs dense) and with sorted keys (bits not allowed), and with the bits in mapped files."""
    monkeypatch.setattr(seqset, "_BLOCK", block)
    monkeypatch.setattr(mapped, "MIN_BYTES", 1)
    if sparse:
        monkeypatch.setattr(seqset, "DENSE", 0)
        monkeypatch.setattr(seqset, "SLACK", 0)
    rng = np.random.default_rng(block + sparse)
    kinds = set()
    for k in range(60):
        parts = _parts(rng, rng.integers(0, 12, int(rng.integers(1, 4))), spread=int(rng.choice([8, 60, 5000])))
        pairs = [(int(s), int(q)) for src, seq in parts for s, q in zip(src, seq)]
        got = seqset.seq_set(parts)
        if pairs:
            kinds.add("keys" if got.sparse is not None and not got.bits else "bits" if got.sparse is None else "both")
        assert got.repeats == (len(set(pairs)) < len(pairs))
        for _ in range(5):
            src, seq = _parts(rng, [int(rng.integers(1, 6))], spread=70)[0]
            seq = seq - int(rng.integers(0, 20))  # (some below a source's lowest seq)
            want = any((int(s), int(q)) in set(pairs) for s, q in zip(src, seq))
            assert got.hits(src, seq) == want
    assert kinds == {"keys" if sparse else "bits"}


def test_a_seq_a_key_cannot_hold_gives_none_and_no_pairs_no_repeats():
    one = np.zeros(1, dtype=np.int64)
    assert seqset.seq_set([(one, np.array([1 << 40]))]) is None
    assert seqset.seq_set([(one, np.array([5])), (one, np.array([-1]))]) is None
    empty = seqset.seq_set([(np.zeros(0, np.int64), np.zeros(0, np.int64))])
    assert not empty.repeats and not empty.hits(one, one)


def test_a_far_restarted_counter_falls_back_to_sorted_keys():
    """A source whose seqs leave a gap far wider than its pairs (a counter restarted near 2**39): its
    bits would be 64 GiB, so the pairs' keys are sorted, with the same answers."""
    src = np.zeros(4, dtype=np.int64)
    seq = np.array([1, 2, 1 << 39, (1 << 39) + 1])
    got = seqset.seq_set([(src, seq)])
    assert got.sparse is not None and not got.bits and not got.repeats
    assert got.hits(src[:1], np.array([1 << 39])) and not got.hits(src[:1], np.array([3]))
    assert seqset.seq_set([(src, seq), (src[:1], seq[2:3])]).repeats


def test_dense_and_sparse_sources_side_by_side():
    """A collector's events (dense seqs: bits) beside a daemon's heartbeats (one seq in a hundred: keys),
    in one part and across parts: each answered by its own kind."""
    hb = (np.full(2000, 1), np.arange(2000) * 100 + 7)
    events = (np.zeros(3000, dtype=np.int64), np.arange(3000))
    mixed = (np.concatenate([hb[0][:5], events[0][:5]]), np.concatenate([hb[1][:5], events[1][:5] + 5000]))
    got = seqset.seq_set([hb, events, mixed])
    assert set(got.bits) == {0} and got.sparse is not None and got.repeats  # (the mixed part repeats hb's)
    alone = seqset.seq_set([hb, events])
    assert not alone.repeats
    assert alone.hits(np.array([1]), np.array([107])) and not alone.hits(np.array([1]), np.array([108]))
    assert alone.hits(np.array([1, 0]), np.array([108, 2999])) and not alone.hits(np.array([0]), np.array([3000]))
    again = seqset.seq_set([hb, events, (np.zeros(1, dtype=np.int64), np.array([17]))])
    assert again.repeats and set(again.bits) == {0}
