"""The analysis pipeline on synthetic recordings (real stream.msgpack files) with known energy."""
from __future__ import annotations

import math

import pytest

from analyzer import pipeline, stream
from shared import messages as M
from shared.recording import read_recording
from tests import synth as S


def run(tmp_path, spec: S.Spec, **opts) -> pipeline.Analysis:
    bd = S.write_batch(tmp_path / "batch", spec)
    _, items, problem = read_recording(bd.stream)
    opts.setdefault("quality", False)
    return pipeline.analyze(stream.build(items), pipeline.Options(**opts), recording_problem=problem)


def by_model(a: pipeline.Analysis) -> dict:
    return {r["model"]: r for r in a.results}


def rel_err(got, true):
    return abs(got / true - 1)


class TestGpuEnergy:
    def test_counter_gpu_within_a_tenth_of_a_percent(self, tmp_path):
        """Counter + power on a ramp: < 0.1 % of the analytic integral; the method is named."""
        power = S.ramp(90.0, 15.0)
        spec = S.Spec(duration_s=8.0, gpus=[S.Gpu(power)], requests=[S.Req(1.2345, 6.7891)])
        row = run(tmp_path, spec).results[0]
        assert row["gpu_energy_method"] == "counter+power"
        assert rel_err(row["gpu_energy_j"], power.e_j(6.7891) - power.e_j(1.2345)) < 1e-3
        assert row["gpu_energy_uncertainty_j"] is not None and row["gpu_energy_uncertainty_j"] >= 0
        assert row["gpu_coverage"] == pytest.approx(1.0)
        assert row["gpu_short_window"] is False

    def test_power_only_gpu_within_one_percent(self, tmp_path):
        """No counter: trapezoid at 100 Hz on a smooth trace is within 1 %; no uncertainty claimed."""
        power = S.sine(150.0, 60.0, 2.5)
        spec = S.Spec(duration_s=8.0, gpus=[S.Gpu(power, counter=False)], requests=[S.Req(0.5055, 7.2222)])
        row = run(tmp_path, spec).results[0]
        assert row["gpu_energy_method"] == "power_trapezoid"
        assert rel_err(row["gpu_energy_j"], power.e_j(7.2222) - power.e_j(0.5055)) < 0.01
        assert row["gpu_energy_uncertainty_j"] is None
        assert row["gpu_short_window"] is None

    def test_counter_only_gpu(self, tmp_path):
        """A GPU that reports only the counter still gets energy, method 'counter'."""
        power = S.constant(75.0)
        spec = S.Spec(duration_s=5.0, gpus=[S.Gpu(power, publish_power=False)], requests=[S.Req(1.0101, 3.9393)])
        row = run(tmp_path, spec).results[0]
        assert row["gpu_energy_method"] == "counter"
        assert rel_err(row["gpu_energy_j"], 75.0 * (3.9393 - 1.0101)) < 1e-3
        assert row["gpu_power_avg_w"] is None

    def test_square_wave_two_gpus_summed(self, tmp_path):
        """Per-GPU energies add up; the per-GPU columns are there."""
        p0, p1 = S.square(250.0, 50.0, 1.0), S.constant(40.0)
        spec = S.Spec(duration_s=6.0, gpus=[S.Gpu(p0), S.Gpu(p1, counter=False)], requests=[S.Req(1.0003, 5.0003)])
        row = run(tmp_path, spec).results[0]
        e0, e1 = p0.e_j(5.0003) - p0.e_j(1.0003), 40.0 * 4.0
        assert rel_err(row["gpu0_energy_j"], e0) < 1e-3
        assert rel_err(row["gpu_energy_j"], e0 + e1) < 2e-3
        assert row["gpu_count"] == 2
        assert row["gpu_energy_method"] == "counter+power,power_trapezoid"

    def test_short_window_flagged(self, tmp_path):
        """A window shorter than two counter refreshes is flagged."""
        spec = S.Spec(duration_s=3.0, gpus=[S.Gpu(S.constant(100.0), refresh_s=0.1)], requests=[S.Req(1.0503, 1.1703)])
        row = run(tmp_path, spec).results[0]
        assert row["gpu_short_window"] is True
        assert rel_err(row["gpu_energy_j"], 100.0 * 0.12) < 0.01

    def test_seq_gap_lowers_coverage_and_is_counted(self, tmp_path):
        """Telemetry messages lost inside a window: coverage < 1, gaps counted; the counter still bridges it."""
        power = S.constant(100.0)
        base = S.Spec(duration_s=5.0, gpus=[S.Gpu(power)], requests=[S.Req(1.0, 4.0)])
        seqs = [p["seq"] for t, p in S.messages(base) if t == "tel.gpu" and 2.0 <= (p["t"] - S.T0_NS) / 1e9 <= 2.5]
        lost = set(range(min(seqs), max(seqs) + 1))
        spec = S.Spec(duration_s=5.0, gpus=[S.Gpu(power)], requests=[S.Req(1.0, 4.0)], drop_telemetry_seqs=lost)
        row = run(tmp_path, spec).results[0]
        assert row["gpu_seq_gaps"] == 1
        assert 0.8 < row["gpu_coverage"] < 0.9
        assert rel_err(row["gpu_energy_j"], 300.0) < 1e-3

    def test_window_without_samples_has_no_energy(self, tmp_path):
        """Zero samples: energy blank, coverage 0, method none — never an invented number."""
        spec = S.Spec(duration_s=3.0, requests=[S.Req(5.0, 6.0)])
        row = run(tmp_path, spec).results[0]
        assert row["gpu_energy_j"] is None
        assert row["gpu_coverage"] == 0.0
        assert row["gpu_energy_method"] == "none"
        assert row["j_per_token"] is None

    def test_window_between_two_samples_is_not_interpolated(self, tmp_path):
        """A window with no sample inside (here 4 ms between 100 Hz samples) gets no energy and coverage 0."""
        spec = S.Spec(duration_s=3.0, requests=[S.Req(1.0040, 1.0080), S.Req(1.5, 2.5, model="b")])
        rows = by_model(run(tmp_path, spec))
        assert rows["m1"]["gpu_samples"] == 0 and rows["m1"]["gpu_coverage"] == 0.0
        assert rows["m1"]["gpu_energy_j"] is None and rows["m1"]["gpu_energy_method"] == "none"
        assert rows["b"]["gpu_samples"] == 100 and rows["b"]["gpu_energy_j"] == pytest.approx(100.0, rel=1e-3)

    def test_concurrent_requests_share_energy_and_sum_to_total(self, tmp_path):
        """Overlapping windows split each interval equally; per-request energies add to the union's."""
        power = S.ramp(100.0, 10.0)
        reqs = [S.Req(1.0003, 4.0003, model="a"), S.Req(2.0003, 5.0003, model="b"), S.Req(2.5003, 3.0003, model="c")]
        spec = S.Spec(duration_s=6.0, gpus=[S.Gpu(power)], requests=reqs)
        rows = by_model(run(tmp_path, spec))
        total = sum(rows[m]["gpu_energy_j"] for m in "abc")
        assert rel_err(total, power.e_j(5.0003) - power.e_j(1.0003)) < 1e-3
        e = power.e_j
        expect_c = (e(3.0003) - e(2.5003)) / 3
        assert rel_err(rows["c"]["gpu_energy_j"], expect_c) < 1e-2
        assert rows["a"]["concurrency_max"] == 3 and rows["c"]["effective_window_s"] == pytest.approx(0.5 / 3)

    def test_idle_baseline_subtracted(self, tmp_path):
        """--idle-baseline: idle power measured before the first request, subtracted per window."""
        step = S.Power(lambda t: 50.0 if t < 3.0 else 150.0,
                       lambda t: 50.0 * min(t, 3.0) + 150.0 * max(t - 3.0, 0.0))
        spec = S.Spec(duration_s=6.0, gpus=[S.Gpu(step, counter=False)], requests=[S.Req(3.0003, 5.0003)])
        row = run(tmp_path, spec, idle_baseline=True).results[0]
        assert row["gpu_idle_w"] == pytest.approx(50.0)
        assert row["gpu_energy_net_j"] == pytest.approx(200.0, rel=1e-3)
        assert row["gpu_energy_j"] == pytest.approx(300.0, rel=1e-3)


class TestHost:
    def test_cpu_energy_approx_and_rapl(self, tmp_path):
        """cpu_energy_j_approx = ∫ TDP·cpu%/100 dt; RAPL from package-zone deltas (core is part of it)."""
        spec = S.Spec(duration_s=5.0, cpu_pct=lambda t: 50.0, rapl_w=30.0, requests=[S.Req(1.0003, 3.0003)])
        row = run(tmp_path, spec, cpu_tdp_w=80.0).results[0]
        assert row["cpu_energy_j_approx"] == pytest.approx(80.0, rel=1e-6)
        assert row["cpu_energy_j_rapl"] == pytest.approx(60.0, rel=1e-3)
        assert row["cpu_energy_j"] == row["cpu_energy_j_rapl"] and row["cpu_energy_basis"] == "rapl"
        assert row["cpu_util_avg"] == pytest.approx(50.0)
        assert row["total_energy_j"] == pytest.approx(row["gpu_energy_j"] + 60.0, rel=1e-3)
        assert row["energy_basis"] == "gpu+cpu_rapl"
        assert row["proc_ollama_rss_peak_mib"] == pytest.approx(503.0003, rel=1e-6)

    def test_no_rapl_uses_tdp_approx(self, tmp_path):
        spec = S.Spec(duration_s=4.0, requests=[S.Req(1.0, 2.0)])
        row = run(tmp_path, spec).results[0]
        assert row["cpu_energy_j_rapl"] is None
        assert row["cpu_energy_basis"] == "tdp_approx"
        assert row["cpu_energy_j"] == pytest.approx(65.0 * 0.25)


class TestRequests:
    def test_warmup_excluded_and_incomplete_listed(self, tmp_path):
        """Warm-ups go to the warm-up list; a req.start without req.end is reported, not dropped."""
        reqs = [S.Req(0.2, 0.6, warmup=True), S.Req(1.0, 2.0), S.Req(2.5, 3.5, run=1, ok=False), S.Req(3.8, 4.0, end=False)]
        a = run(tmp_path, S.Spec(duration_s=5.0, requests=reqs))
        assert [r["status"] for r in a.results] == ["ok", "failed", "incomplete"]
        assert len(a.warmups) == 1 and a.warmups[0]["status"] == "ok"
        assert any("never ended" in p for p in a.problems)
        lat = next(s for s in a.stats if s["metric"] == "latency_s")
        assert lat["n"] == 1 and lat["n_failed"] == 2
        assert a.results[1]["error_kind"] == "busy"

    def test_simulated_gpu_is_labelled(self, tmp_path):
        """simulated: true on tel.gpu → gpu_simulated on rows, stats and JSON."""
        a = run(tmp_path, S.Spec(duration_s=3.0, requests=[S.Req(1.0, 2.0)]))
        assert a.simulated and a.results[0]["gpu_simulated"] is True
        assert all(s["gpu_simulated"] for s in a.stats)
        assert next(iter(a.request_json.values()))["metadata"]["gpu_simulated"] is True
        real = run(tmp_path / "r", S.Spec(duration_s=3.0, gpus=[S.Gpu(S.constant(80.0), simulated=False)],
                                          requests=[S.Req(1.0, 2.0)]))
        assert real.results[0]["gpu_simulated"] is False and not real.simulated

    def test_throughput_and_per_token_energy(self, tmp_path):
        """toks/s = eval_count / eval_duration; J/token from GPU energy."""
        spec = S.Spec(duration_s=4.0, gpus=[S.Gpu(S.constant(100.0))],
                      requests=[S.Req(1.0003, 3.0003, eval_count=50, eval_duration_ns=2_000_000_000)])
        row = run(tmp_path, spec).results[0]
        assert row["toks_per_s"] == pytest.approx(25.0)
        assert row["toks_per_s_method"] == "eval_count/eval_duration"
        assert row["j_per_token"] == pytest.approx(200.0 / 50, rel=1e-3)
        assert row["first_token_s"] == pytest.approx(0.2)
        assert row["client_toks_per_s"] == pytest.approx(50 / 1.8)

    def test_request_json_has_seed_fields(self, tmp_path):
        a = run(tmp_path, S.Spec(duration_s=3.0, requests=[S.Req(1.0, 2.0, text="你好 world")]))
        j = next(iter(a.request_json.values()))
        for key in ("model", "prompt", "generated_text", "latency_seconds", "first_token_seconds",
                    "throughput_tokens_per_sec", "api_metrics", "system_metrics_summary", "system_metrics_full",
                    "quality", "metadata"):
            assert key in j
        assert j["generated_text"] == "你好 world"
        assert j["api_metrics"]["eval_count"] == 100
        assert len(j["system_metrics_full"]["gpus"]["gpu0"]["power_w"]) == 100
        assert j["metadata"]["warmup"] is False


class TestQualityStep:
    def test_raising_scorer_leaves_columns_empty_and_analysis_completes(self, tmp_path):
        """If assess raises, quality columns are empty and everything else is still computed."""
        def boom(requests, options, progress=False):
            raise RuntimeError("model weights missing")
        a = run(tmp_path, S.Spec(duration_s=3.0, requests=[S.Req(1.0, 2.0)]), quality=True, assess=boom)
        row = a.results[0]
        assert row["quality_score"] is None and row["bartscore"] is None
        assert "model weights missing" in row["quality_error"]
        assert row["gpu_energy_j"] is not None
        assert any("quality step failed" in p for p in a.problems)

    def test_scores_feed_the_ratio_and_pareto(self, tmp_path):
        """quality_per_j = quality_score / (GPU + CPU J); the cheaper-and-better model is Pareto-optimal."""
        seen = []

        def scorer(requests, options, progress=False):
            seen.extend(requests)
            return {r["rid"]: {"quality_score": 0.8 if "/a/" in r["rid"] else 0.5, "bartscore": -1.2,
                               "distinct_2": 0.9} for r in requests}
        reqs = [S.Req(0.5, 1.5, model="a"), S.Req(2.0, 4.0, model="b"), S.Req(4.5, 5.0, model="c")]
        a = run(tmp_path, S.Spec(duration_s=6.0, requests=reqs), quality=True, assess=scorer)
        rows = by_model(a)
        assert seen[0]["reference"] == "ref" and seen[0]["task"] == "qa" and seen[0]["text"] == "an answer"
        ra = rows["a"]
        assert ra["quality_per_j"] == pytest.approx(0.8 / ra["total_energy_j"])
        assert ra["j_per_quality"] == pytest.approx(ra["total_energy_j"] / 0.8)
        flags = {p["model"]: p["pareto_optimal"] for p in a.pareto}
        # a: 1 s, q 0.8; b: 2 s, q 0.5 (dominated by a); c: 0.5 s, q 0.5 (cheapest).
        assert flags == {"a": True, "b": False, "c": True}
        assert rows["a"]["bartscore"] == -1.2


    def test_two_bases_in_one_task_are_split_and_reported(self, tmp_path):
        """English scored by BARTScore, Chinese by chrF (one checkpoint missing): two fronts, a Problems line."""
        def scorer(requests, options, progress=False):
            return {r["rid"]: {"quality_score": 0.9 if "/a/" in r["rid"] else 0.2,
                               "quality_basis": "bartscore" if "/a/" in r["rid"] else "chrf"} for r in requests}
        reqs = [S.Req(0.5, 1.5, model="a"), S.Req(2.0, 2.5, model="b")]
        a = run(tmp_path, S.Spec(duration_s=3.0, requests=reqs), quality=True, assess=scorer)
        assert by_model(a)["b"]["quality_basis"] == "chrf" and by_model(a)["b"]["quality_per_kj"] > 0
        assert {(p["quality_basis"], p["model"], p["pareto_optimal"]) for p in a.pareto} == {
            ("bartscore", "a", True), ("chrf", "b", True)}
        assert any("2 bases" in p and "never mixed" in p for p in a.problems)


def test_stream_order_does_not_matter():
    """Shuffled and duplicated messages give the same analysis as the recording order."""
    import random
    msgs = S.messages(S.Spec(duration_s=3.0, requests=[S.Req(1.0, 2.0), S.Req(1.5, 2.5, model="b")]))
    shuffled = msgs[:] + msgs[:50]
    random.Random(7).shuffle(shuffled)
    a1 = pipeline.analyze(stream.build(msgs), pipeline.Options(quality=False))
    a2 = pipeline.analyze(stream.build(shuffled), pipeline.Options(quality=False))
    assert a1.results == a2.results
    assert stream.build(shuffled).duplicates == 50
    assert not math.isnan(a1.results[0]["gpu_energy_j"])


class TestBatchCompleteness:
    """The report says when a batch is not whole, and how to finish it (collector --resume)."""

    REQS = [S.Req(1.0, 2.0, run=1), S.Req(3.0, 4.0, run=2)]

    def test_interrupted_batch_is_marked_partial(self, tmp_path):
        a = run(tmp_path, S.Spec(duration_s=5, requests=self.REQS, planned=3, interrupted=True))
        assert a.problems[0].startswith("PARTIAL: the batch was interrupted; 2 of 3 planned request(s)")
        assert "--resume" in a.problems[0]

    def test_recording_without_batch_end_is_marked_partial(self, tmp_path):
        a = run(tmp_path, S.Spec(duration_s=5, requests=self.REQS, planned=3, batch_end=False))
        assert a.problems[0].startswith("PARTIAL: the recording ends without batch.end")

    def test_failed_requests_make_it_incomplete_and_a_whole_batch_says_nothing(self, tmp_path):
        failed = [S.Req(1.0, 2.0, run=1), S.Req(3.0, 4.0, run=2, ok=False)]
        a = run(tmp_path, S.Spec(duration_s=5, requests=failed, planned=2))
        assert a.problems[0].startswith("INCOMPLETE: 1 of 2 planned")
        whole = run(tmp_path / "whole", S.Spec(duration_s=5, requests=self.REQS, planned=2))
        assert not [p for p in whole.problems if p.startswith(("PARTIAL", "INCOMPLETE"))]


def test_progress_events_do_not_change_the_results():
    """req.progress (live views' tokens so far) is ignored by the analysis: the same rows with and without."""
    msgs = S.messages(S.Spec(duration_s=3.0, requests=[S.Req(1.0, 2.0), S.Req(1.5, 2.5, model="b")]))
    stamper = M.Stamper("collector@other")
    with_progress = list(msgs)
    for topic, p in msgs:
        if topic == M.REQ_FIRST_TOKEN:
            body = M.ReqProgress(rid=p["rid"], attempt=0, chunks_so_far=3, tokens_so_far=3, tokens_basis="chunks",
                                 chars_so_far=12)
            with_progress.append((M.REQ_PROGRESS, stamper.stamp(body.to_msg(), t=p["t"] + 1000, wall=p["wall"])))
    a1 = pipeline.analyze(stream.build(msgs), pipeline.Options(quality=False))
    a2 = pipeline.analyze(stream.build(with_progress), pipeline.Options(quality=False))
    assert len(with_progress) == len(msgs) + 2
    assert a1.results == a2.results and a1.problems == a2.problems and len(a1.results) == 2


def test_windows_are_the_done_requests_with_their_prefill_end():
    """Analysis.windows (made when read): each finished request's window, label and first token; a
    warm-up marked; a request without a first token has no first_s."""
    spec = S.tiny_spec()
    spec.requests.append(S.Req(spec.duration_s - 1.2, spec.duration_s - 1.0, rid="silent/one", ok=False))
    msgs = [(t, p) for t, p in S.messages(spec) if not (t == M.REQ_FIRST_TOKEN and p["rid"] == "silent/one")]
    for t, p in msgs:  # no first token at all for this one
        if t == M.REQ_END and p["rid"] == "silent/one":
            del p["client"]["first_token_s"]
    a = pipeline.analyze(stream.build(msgs), pipeline.Options(quality=False))
    rows = {r["rid"]: r for r in a.results + a.warmups}
    got = list(a.windows)
    assert len(got) == len(a.windows) == len(rows) and a.windows[-1] == got[-1] and a.windows[1:3] == got[1:3]
    assert [w["rid"] for w in got if w["warmup"]] == ["warmup/tiny-a:1b"]
    for w in got:
        row = rows[w["rid"]]
        assert w["b_s"] - w["a_s"] == pytest.approx(row["latency_s"], abs=1e-6)
        assert w["label"] == f"{row['model']}/{row['task']}/{row['load']}#{row['run']}"
        first = row.get("first_token_s")
        assert w["first_s"] == (None if first is None or math.isnan(first) else w["a_s"] + first)
    assert any(w["first_s"] is None for w in got) and any(w["first_s"] is not None for w in got)
