"""Pooled values in bounded memory (analyzer.pooled): the order statistics found bin by bin are a full
sort's, and stats.csv's pooled rows are the same whether the values stayed in memory or went to the file."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer import pooled, stream, tables
from analyzer import rows as ROWS


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
    assert len(itl) == 2 and all(row["n"] > 64 for row in itl)  # (so each went to the file)
    mine = [v for r in results if r["load"] == 1 for v in gaps[r["rid"]] if isinstance(v, float) and v == v]
    row = next(row for row in itl if row["load"] == "1")
    assert row["n"] == len(mine) and row["p99"] == float(np.percentile(mine, 99.0))


def test_an_analysis_gaps_found_by_row_are_those_found_by_rid(tmp_path):
    """stats.csv's pooled gaps of an analysis are read by each row's place in the results table
    (Gaps.of_rows), not by its rid read back as a string: the same values, request by request, and so
    the same stats rows as by rid; other rows (plain dicts) are looked up by rid."""
    from analyzer import cli, pipeline
    from tests import synth as S
    from tests.test_analyzer_columnar import write

    reqs = [S.Req(0.2 + 0.3 * k, 0.45 + 0.3 * k, run=k, warmup=k == 0, case=k % 2,
                  chunk_s=[0.05 + 0.01 * j * (1 + k % 3) for j in range(5 + k)]) for k in range(8)]
    msgs = S.messages(S.Spec(duration_s=3.0, rate_hz=20.0, gpus=[S.Gpu(S.constant(100.0))], requests=reqs))
    root = tmp_path / "b"
    write(root / "raw" / "stream.msgpack", msgs)
    _bd, data, _problem = cli.load_data(root, 120.0)
    a = pipeline.analyze(data, pipeline.Options(quality=False, progress=False))
    # every request's row in the requests' order (as analyze holds them): the measured ones and the warm-ups
    warm = stream.request_columns(data.requests)["warmup"]
    places = np.empty(len(data.requests), dtype=np.int64)
    places[~warm], places[warm] = a.results.places, a.warmups.places
    assert warm.any() and isinstance(a.results, ROWS.RowList)
    gaps = pipeline.Gaps(pipeline.Places(stream.request_rids(data.requests)), data.requests,
                         ROWS.RowList(a.results.table, places))
    rows = a.results
    by_row = list(gaps.of_rows(rows))
    by_rid = [gaps.get(r["rid"], []) for r in rows]
    assert by_row == by_rid and sum(map(len, by_row)) > 10
    assert list(gaps.of_rows([dict(r) for r in rows])) == by_rid
    flipped = rows.take(np.arange(len(rows))[::-1])  # (any order: each its own)
    assert list(gaps.of_rows(flipped)) == by_rid[::-1]
    pct = (50.0, 99.0)
    assert tables.stats(rows, False, pct, {"itl_ms": gaps}) == tables.stats(rows, False, pct, {"itl_ms": dict(zip(
        [r["rid"] for r in rows], by_rid))})
