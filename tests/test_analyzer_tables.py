"""Pure parts: throughput figures, stats, Pareto flags, deterministic CSV cells."""
from __future__ import annotations

import math

import pytest

from analyzer import tables
from analyzer.quality_call import quality_inputs, run_quality
from analyzer.throughput import iso_utc, throughput, timing
from shared.messages import ClientMetrics, ReqEnd, ReqFirstToken, ReqStart


def end(api: dict) -> ReqEnd:
    return ReqEnd(rid="r", ok=True, api=api)


class TestThroughput:
    def test_ollama_eval_count_over_eval_duration(self):
        """The seed's toks/s: eval_count / (eval_duration_ns / 1e9)."""
        out = throughput(end({"eval_count": 120, "eval_duration_ns": 3_000_000_000}), 4.0, 0.5, 0.4)
        assert out["toks_per_s"] == 40.0 and out["toks_per_s_method"] == "eval_count/eval_duration"
        assert out["client_toks_per_s"] == pytest.approx(120 / 3.5)
        assert out["e2e_toks_per_s"] == 30.0

    def test_llama_cpp_timings(self):
        """OpenAI-compatible llama.cpp server: timings.predicted_n / predicted_ms."""
        e = end({"completion_tokens": 64, "timings": {"predicted_n": 64, "predicted_ms": 800.0,
                                                      "prompt_n": 10, "prompt_ms": 50.0}})
        out = throughput(e, 1.0, 0.2, 0.2)
        assert out["toks_per_s"] == 80.0 and out["toks_per_s_method"] == "timings.predicted_n/predicted_ms"
        assert out["prefill_toks_per_s"] == 200.0

    def test_completion_tokens_over_client_decode(self):
        """No server timings: completion_tokens / (latency − first token)."""
        out = throughput(end({"completion_tokens": 30}), 2.5, 0.5, None)
        assert out["toks_per_s"] == 15.0 and out["toks_per_s_method"] == "completion_tokens/client_decode_s"

    def test_nothing_known_is_absent_not_zero(self):
        out = throughput(end({}), 1.0, None, None)
        assert out["toks_per_s"] is None and out["output_tokens"] is None and out["client_toks_per_s"] is None

    def test_timing_falls_back_to_event_stamps(self):
        """Without client figures, latency and first-token times come from the monotonic stamps."""
        start = ReqStart(rid="r", t=1_000_000_000)
        e = ReqEnd(rid="r", ok=True, t=3_000_000_000)
        firsts = [ReqFirstToken(rid="r", t=1_500_000_000, kind="thinking"),
                  ReqFirstToken(rid="r", t=2_000_000_000, kind="content")]
        out = timing(start, e, firsts)
        assert out == {"latency_s": 2.0, "first_token_s": 1.0, "first_thinking_s": 0.5, "first_chunk_s": 0.5}

    def test_one_ttft_definition_client_and_event_stamps_agree(self):
        """A retried request: the answering attempt's first token, counted from req.start, either way."""
        start = ReqStart(rid="r", t=1_000_000_000)
        firsts = [ReqFirstToken(rid="r", t=1_200_000_000, kind="content", attempt=0),   # cut off, retried
                  ReqFirstToken(rid="r", t=2_500_000_000, kind="content", attempt=1)]
        bare = timing(start, ReqEnd(rid="r", ok=True, t=3_000_000_000), firsts)
        client = ClientMetrics(latency_s=2.0, first_token_s=1.5, first_chunk_s=1.5, attempt_s=1.2, retries=1)
        told = timing(start, ReqEnd(rid="r", ok=True, t=3_000_000_000, client=client), firsts)
        assert bare["first_token_s"] == told["first_token_s"] == 1.5 and bare["latency_s"] == told["latency_s"]

    def test_iso_utc(self):
        assert iso_utc(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123Z"


class TestStats:
    def test_mean_variance_and_t_interval(self):
        """Sample variance (n−1) and the Student-t 95 % interval of the mean."""
        d = tables.describe([1.0, 2.0, 3.0, 4.0])
        assert d["mean"] == 2.5 and d["variance"] == pytest.approx(5 / 3)
        half = 3.182 * math.sqrt(5 / 3) / 2
        assert d["ci95_low"] == pytest.approx(2.5 - half) and d["ci95_high"] == pytest.approx(2.5 + half)

    def test_single_value_has_no_spread(self):
        d = tables.describe([7.0])
        assert d["n"] == 1 and d["mean"] == 7.0 and d["variance"] is None and d["ci95_low"] is None

    def test_two_runs_give_no_interval_but_say_why(self):
        """n = 2: t = 12.7 made the interval of an energy reach −2156 J; below 3 runs there is none."""
        d = tables.describe([10.0, 400.0], 0.0, None)
        assert d["mean"] == 205.0 and d["std"] is not None
        assert d["ci95_low"] is None and d["ci95_high"] is None and d["ci95_note"] == "n too small"

    def test_interval_is_clipped_to_the_metric_range(self):
        d = tables.describe([0.0, 0.0, 0.9], *tables.metric_range("quality_score"))
        assert (d["ci95_low"], d["ci95_high"], d["ci95_note"]) == (0.0, 1.0, "clipped")  # raw: −0.99 … 1.59
        e = tables.describe([1.0, 1.0, 500.0], *tables.metric_range("total_energy_j"))
        assert e["ci95_low"] == 0.0 and e["ci95_high"] > 500.0
        assert tables.metric_range("bartscore_f") == (None, 0.0)

    def test_failed_rows_are_counted_not_averaged(self):
        rows = [{"model": "m", "task": "qa", "load": "short", "ok": True, "latency_s": 1.0},
                {"model": "m", "task": "qa", "load": "short", "ok": True, "latency_s": 3.0},
                {"model": "m", "task": "qa", "load": "short", "ok": False, "latency_s": 100.0}]
        lat = next(s for s in tables.stats(rows, False) if s["metric"] == "latency_s")
        assert lat["mean"] == 2.0 and lat["n"] == 2 and lat["n_failed"] == 1


class TestPareto:
    def test_flags(self):
        """Dominated = another point with energy ≤ and quality ≥, one strictly."""
        assert tables.pareto_flags([(1.0, 0.5), (2.0, 0.9), (2.0, 0.8), (3.0, 0.9), (1.0, 0.5)]) == \
            [True, True, False, False, True]


def _r(model, basis, q, e, task="qa", load="short"):
    return {"model": model, "task": task, "load": load, "ok": True, "quality_score": q, "total_energy_j": e,
            "quality_basis": basis, "quality_per_j": q / e, "quality_per_kj": 1000 * q / e}


class TestBases:
    def test_stats_split_quality_by_basis_never_mixing(self):
        rows = [_r("m", "bartscore", 0.3, 100.0), _r("m", "chrf", 0.9, 100.0), _r("m", "chrf", 0.7, 300.0)]
        st = tables.stats(rows, False)
        q = {s["quality_basis"]: s for s in st if s["metric"] == "quality_score"}
        assert set(q) == {"bartscore", "chrf"} and q["chrf"]["mean"] == pytest.approx(0.8) and q["chrf"]["n"] == 2
        energy = [s for s in st if s["metric"] == "total_energy_j"]
        assert len(energy) == 1 and energy[0]["quality_basis"] is None and energy[0]["n"] == 3
        assert "task qa" in tables.basis_problems(rows)[0] and "chrf: 2 requests" in tables.basis_problems(rows)[0]

    def test_ratio_of_means_and_mean_of_ratios_have_different_names(self):
        """quality 0.9 at 100 J and 0.1 at 900 J: mean of ratios 4.56 /kJ, ratio of means 1 /kJ."""
        rows = [_r("m", "chrf", 0.9, 100.0), _r("m", "chrf", 0.1, 900.0)]
        st = {s["metric"]: s for s in tables.stats(rows, False)}
        assert st["quality_per_kj"]["mean"] == pytest.approx((9.0 + 1 / 9) / 2)
        assert st["group_quality_per_kj"]["mean"] == pytest.approx(1.0)
        assert st["group_j_per_quality"]["mean"] == pytest.approx(1000.0)
        p = tables.pareto(rows, False)[0]
        assert p["group_quality_per_kj"] == pytest.approx(1.0) and p["quality_per_kj_mean"] == pytest.approx(
            st["quality_per_kj"]["mean"])
        assert "quality_per_j" not in tables.PARETO_COLUMNS  # the ambiguous name is gone from pareto.csv

    def test_pareto_front_per_task_and_basis(self):
        rows = [_r("a", "chrf", 0.5, 100.0), _r("b", "chrf", 0.4, 200.0), _r("c", "bartscore", 0.1, 500.0)]
        front = {(p["quality_basis"], p["model"]): p["pareto_optimal"] for p in tables.pareto(rows, False)}
        # c is alone on its basis, so optimal there; against chrF scores it would have been dominated
        assert front == {("chrf", "a"): True, ("chrf", "b"): False, ("bartscore", "c"): True}


class TestCsv:
    def test_cells_are_fixed_and_absent_is_blank(self):
        assert [tables.cell(v) for v in (None, float("nan"), True, 3, 0.1 + 0.2, "x")] == \
            ["", "", "true", "3", "0.3", "x"]

    def test_csv_text_quotes_and_keeps_unicode(self):
        text = tables.csv_text(["a", "b"], [{"a": "逗号,内", "b": 1.5}])
        assert text == 'a,b\n"逗号,内",1.5\n'


class TestQualityCall:
    def test_inputs_take_reference_lang_expect_from_the_case(self):
        cases = [{"task_type": "knowledge_qa", "reference_text": "ref", "lang": "zh", "prompt": "p"}]
        q = quality_inputs([{"rid": "r", "task": "knowledge_qa", "text": "t", "thinking": None, "case": 0}], cases)
        assert q == [{"rid": "r", "task": "qa", "text": "t", "thinking": None, "reference": "ref", "lang": "zh",
                      "expect": None, "prompt": "p", "suite": None, "item_id": None, "suite_data": None}]

    def test_bad_return_type_is_contained(self):
        """An assess that returns nonsense is reported, not raised."""
        result, problem = run_quality([{"rid": "r"}], None, assess=lambda reqs, opts, progress=False: [1, 2])
        assert result == {} and "expected dict" in problem


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 14])
def test_the_cases_order_placed_a_block_at_a_time_is_a_stable_sort(block, monkeypatch):
    """_CaseOrder's counting sort, a block of rows at a time: the rows in the order of a stable sort of
    their codes (codes with gaps: a basis's rows have some of the group's cases), each present case's
    first place and count."""
    import numpy as np

    monkeypatch.setattr(tables, "_BLOCK", block)
    rng = np.random.default_rng(block)
    for n in (0, 1, 2, 5, 40, 333):
        codes = rng.choice([0, 0, 3, 4, 4, 9, 12], size=n).astype(np.int32)
        got = tables._CaseOrder(codes)
        want = np.argsort(codes, kind="stable")
        assert got.order.tolist() == want.tolist()
        present = np.unique(codes)
        sorted_codes = codes[want]
        assert got.sizes.tolist() == [int((codes == c).sum()) for c in present.tolist()]
        assert got.starts.tolist() == [int(np.searchsorted(sorted_codes, c)) for c in present.tolist()]


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 14])
def test_run_to_run_a_block_at_a_time_is_its_definition(block, monkeypatch):
    """The within-case spread read through the cases' order a block of rows at a time: cases shorter and
    longer than a block, cut by its edges, values missing (NaN) among them, equal to the definition (the
    pooled within-case std, each case's mean an exact sum) to the bit, and the cases counted alike."""
    import random

    import numpy as np

    monkeypatch.setattr(tables, "_BLOCK", block)
    rnd = random.Random(block)
    for _ in range(40):
        n = rnd.randint(0, 60)
        codes = [rnd.choice([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]) for _ in range(n)]
        values = [rnd.choice([None, 1.0, 0.1, 2.5, 1e16, -3.0, 7.25, 0.3]) for _ in range(n)]
        by_case: dict[int, list[float]] = {}
        for c, v in zip(codes, values):
            if v is not None:
                by_case.setdefault(c, []).append(v)
        repeated = [by_case[c] for c in sorted(by_case) if len(by_case[c]) >= 2]
        df = sum(len(v) - 1 for v in repeated)
        ss = math.fsum((x - math.fsum(v) / len(v)) ** 2 for v in repeated for x in v)
        want = {"n_cases": len(by_case), "n_repeated_cases": len(repeated),
                "run_to_run_std": math.sqrt(ss / df) if df else None}
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        assert tables._run_to_run(np.array(codes, dtype=np.int32), arr) == want
        assert tables._run_to_run([str(c) for c in codes], values) == want
