"""Goodput and the per-level load curve (analyzer.load_curve), on rows with known figures."""
import numpy as np
import pytest

from analyzer import load_curve as LC
from analyzer import tables


def row(rid, level, ttft, tpot, e2el, ok=True, tokens=10, gpu_j=5.0):
    return {"rid": rid, "model": "m", "sweep": "concurrency", "sweep_level": level, "ok": ok, "ttft_ms": ttft,
            "tpot_ms": tpot, "e2el_ms": e2el, "output_tokens": tokens, "gpu_energy_j": gpu_j}


def test_goodput_counts_exactly_the_requests_within_every_slo():
    slo = {"ttft": 500.0, "tpot": 50.0}
    assert LC.meets_slo(row("a", 1, 500.0, 50.0, 9e9), slo) is True  # at the limit counts (≤, as vLLM)
    assert LC.meets_slo(row("a", 1, 500.1, 10.0, 1.0), slo) is False
    assert LC.meets_slo(row("a", 1, 10.0, 50.1, 1.0), slo) is False
    assert LC.meets_slo(row("a", 1, 10.0, 10.0, 1.0, ok=False), slo) is False  # a failure is never good
    assert LC.meets_slo(row("a", 1, None, 10.0, 1.0), slo) is False  # no TTFT measured: not shown to be good
    assert LC.meets_slo({**row("a", 1, 10.0, None, 1.0), "output_tokens": 1}, slo) is True  # 1 token: no TPOT
    assert LC.meets_slo(row("a", 1, 10.0, 10.0, 1.0), None) is None


def test_level_rows_window_energy_goodput_and_idle_gap():
    """Level 1: two requests back to back with a 1 s idle gap; level 2: two overlapping. The
    level's energy is its whole window's (a constant 100 W here), the split sums the rows."""
    rows = [row("a", 1, 100, 10, 1000), row("b", 1, 700, 10, 1000),
            row("c", 2, 100, 10, 2000), row("d", 2, 200, 10, 2000)]
    spans = {"a": (0.0, 1.0), "b": (2.0, 3.0), "c": (10.0, 12.0), "d": (10.5, 12.5)}
    slo = {"ttft": 500.0}
    for r in rows:
        r["slo_ok"] = LC.meets_slo(r, slo)

    def energy(a, b):
        return {"gpu_j": 100.0 * (b - a), "gpu_unc_j": np.zeros_like(a), "cpu_j": 10.0 * (b - a)}

    curve, problems = LC.curve(rows, spans, energy, slo, simulated=False)
    one, two = curve
    assert (one["sweep_level"], two["sweep_level"]) == (1, 2)
    assert one["level_window_s"] == pytest.approx(3.0) and one["idle_s"] == pytest.approx(1.0)
    assert one["gpu_energy_j"] == pytest.approx(300.0) and one["gpu_energy_split_j"] == pytest.approx(10.0)
    assert one["idle_gap_j"] == pytest.approx(290.0)
    assert one["j_per_token"] == pytest.approx(300.0 / 20) and one["j_per_token_split"] == pytest.approx(0.5)
    assert one["j_per_token_gpu_cpu"] == pytest.approx(330.0 / 20)
    assert one["request_throughput_rps"] == pytest.approx(2 / 3.0)
    assert one["output_tokens_per_s"] == pytest.approx(20 / 3.0)
    assert one["achieved_concurrency"] == pytest.approx(2 / 3.0)
    assert two["achieved_concurrency"] == pytest.approx(4 / 2.5)
    assert (one["goodput_n"], one["goodput_share"], one["slo_met"]) == (1, 0.5, False)
    assert (two["goodput_n"], two["goodput_share"], two["slo_met"]) == (2, 1.0, True)
    assert two["goodput_rps"] == pytest.approx(2 / 2.5) and two["j_per_good_request"] == pytest.approx(125.0)
    lo, hi = two["goodput_share_ci95_low"], two["goodput_share_ci95_high"]
    assert lo < 1.0 and hi == 1.0  # Wilson: 2 of 2 is not certainty
    assert problems == []


def test_queueing_is_flagged_when_ttft_grows_like_a_queue():
    rows = [row(f"a{i}", 1, 5, 10, 100) for i in range(3)] + [row(f"b{i}", 4, 300, 10, 400) for i in range(3)]
    spans = {r["rid"]: (i * 1.0, i * 1.0 + 0.5) for i, r in enumerate(rows)}
    curve, problems = LC.curve(rows, spans, lambda a, b: {}, None, simulated=False)
    assert [c["queueing"] for c in curve] == [False, True]
    assert len(problems) == 1 and "QUEUEING: m at concurrency 4" in problems[0]
    assert curve[0].get("gpu_energy_j") is None and "goodput_share" not in curve[0]  # no telemetry, no SLOs


def test_stats_key_gains_the_level_only_when_set():
    rows = [{**row("a", 4, 1, 1, 1), "task": "qa", "load": "short"}, {**row("b", 1, 1, 1, 1), "task": "qa",
                                                                          "load": "short"}]
    st = tables.stats(rows, False)
    assert [r["sweep_level"] for r in st if r["metric"] == "ttft_ms"] == [1, 4]  # numeric order
    assert tables.stats_columns(leveled=True)[:4] == ("model", "task", "load", "sweep_level")
    plain = tables.stats([{k: v for k, v in r.items() if k != "sweep_level"} for r in rows], False)
    assert "sweep_level" not in plain[0] and "sweep_level" not in tables.stats_columns()


def test_fixed_output_length_still_gets_an_honest_interval_from_the_requests():
    """Every request answers exactly 64 tokens (--ignore-eos): the old interval, from the spread of
    output lengths alone, had zero width. Now it comes from how the requests' times and energies
    differ, checked against a bootstrap of the same per-request ratios; a level whose requests are
    identical in every way keeps a zero-width interval, and the row says the level ran once."""
    rng = np.random.default_rng(7)
    dur = 1.0 + 0.3 * rng.random(12)
    joules = 40.0 * dur + rng.normal(0.0, 2.0, 12)
    rows, spans, t = [], {}, 0.0
    for i in range(12):
        rows.append(row(f"r{i}", 4, 100, 10, 1000, tokens=64, gpu_j=float(joules[i])))
        spans[f"r{i}"] = (t, t + float(dur[i]))
        t += 0.25  # overlapping, as at concurrency 4

    def energy(a, b):
        return {"gpu_j": 50.0 * (b - a), "gpu_unc_j": np.zeros_like(a), "cpu_j": None}

    (lv,), _ = LC.curve(rows, spans, energy, None, simulated=False)
    assert lv["ci95_basis"] == "per-request spread (n=12), level ran once"
    for fig, x, y in (("output_tokens_per_s", np.full(12, 64.0), dur), ("j_per_token", joules, np.full(12, 64.0))):
        lo, hi, v = lv[f"{fig}_ci95_low"], lv[f"{fig}_ci95_high"], lv[fig]
        assert lo < v < hi and hi - lo > 0.02 * v, (fig, lo, v, hi)
        # the same relative width as a bootstrap over requests of sum(x) / sum(y)
        idx = rng.integers(0, 12, size=(4000, 12))
        boot = x[idx].sum(axis=1) / y[idx].sum(axis=1)
        b_lo, b_hi = np.percentile(boot, [2.5, 97.5])
        r = x.sum() / y.sum()
        assert (hi - lo) / v == pytest.approx((b_hi - b_lo) / r, rel=0.35)
    same = [row(f"s{i}", 1, 100, 10, 1000, tokens=64, gpu_j=40.0) for i in range(5)]
    sspans = {f"s{i}": (2.0 * i, 2.0 * i + 1.0) for i in range(5)}
    (one,), _ = LC.curve(same, sspans, energy, None, simulated=False)
    assert one["j_per_token_ci95_low"] == pytest.approx(one["j_per_token_ci95_high"])
    # two requests: too few for an interval, left empty rather than shown as certain
    (few,), _ = LC.curve(same[:2], sspans, energy, None, simulated=False)
    assert few.get("j_per_token_ci95_low") is None and few.get("output_tokens_per_s_ci95_low") is None
    assert few.get("ci95_basis") is None
