"""Pooled values in bounded memory (analyzer.pooled): the order statistics found bin by bin are a full
sort's, and stats.csv's pooled rows are the same whether the values stayed in memory or went to the file."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer import pooled, tables


def _pool(values, held: int) -> pooled.PooledValues:
    p = pooled.PooledValues(held)
    for at in range(0, len(values), 37):  # (appended a request's worth at a time)
        p.extend(values[at:at + 37])
    return p


@pytest.mark.parametrize("kind", ["spread", "narrow", "constant", "signed", "ties", "zeros"])
def test_kth_is_the_sorted_values_rank(kind, monkeypatch):
    monkeypatch.setattr(pooled, "SORTED", 16)  # bins narrowed bit by bit, not sorted at once
    monkeypatch.setattr(pooled, "CHUNK", 100)
    rng = np.random.default_rng(5)
    values = {"spread": rng.lognormal(3.0, 2.0, 3000),
              "narrow": 20.0 + rng.random(3000) * 1e-9,     # all in one bin of the top 16 bits
              "constant": np.full(3000, 21.5),
              "signed": rng.normal(0.0, 1e3, 3000),
              "ties": rng.integers(0, 4, 3000).astype(float) * 0.25,
              "zeros": rng.choice([0.0, -0.0, 1.5], 3000)}[kind].tolist()
    p = _pool(values, held=250)
    assert p.spilled and len(p) == len(values) and list(p) == values  # in order, file first, then held
    want = sorted(values)
    for rank in sorted({0, 1, 17, len(values) // 2, len(values) - 2, len(values) - 1, *rng.integers(0, 3000, 20)}):
        assert repr(pooled.kth(p, int(rank))) == repr(want[rank])  # (a zero's sign as a stable sort leaves it)
    with pytest.raises(IndexError):
        pooled.kth(p, len(values))
    p.close()


def test_stats_pooled_rows_are_the_same_held_or_in_the_file(monkeypatch):
    rng = np.random.default_rng(9)
    results = [{"rid": f"r{i}", "model": "m", "task": "short", "load": 1 + i % 2, "run": i, "ok": True,
                "latency_s": float(rng.random())} for i in range(300)]
    gaps = {r["rid"]: rng.gamma(4.0, 5.0, int(rng.integers(0, 60))).tolist() for r in results}
    gaps["r3"] = [float("nan"), 1.0, None]  # not finite, not values: left out either way
    held = tables.stats(results, False, (50.0, 90.0, 99.0, 99.9), {"itl_ms": gaps})
    monkeypatch.setattr(pooled, "HELD", 64)
    monkeypatch.setattr(pooled, "SORTED", 32)
    spilled = tables.stats(results, False, (50.0, 90.0, 99.0, 99.9), {"itl_ms": gaps})
    assert spilled == held
    itl = [row for row in held if row["metric"] == "itl_ms"]
    assert len(itl) == 2 and all(row["n"] > 64 for row in itl)
    mine = [v for r in results if r["load"] == 1 for v in gaps[r["rid"]] if isinstance(v, float) and v == v]
    row = next(row for row in itl if row["load"] == "1")
    assert row["n"] == len(mine) and row["p99"] == float(np.percentile(mine, 99.0))
