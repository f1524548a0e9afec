"""Per-phase time (TTFT, TPOT, ITL, E2EL) and energy (prefill, decode) on synthetic recordings with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer import cli, pipeline, stream, tables
from tests import synth as S
from tests.test_analyzer_pipeline import by_model, run


class TestTokenLatency:
    def test_ttft_tpot_itl_e2el_from_chunk_times(self, tmp_path):
        """Chunks at 0.2, 0.3, 0.45, 0.5, 0.8, 1.0 s after the start of a 1 s request with 5 output tokens."""
        chunks = [0.2, 0.3, 0.45, 0.5, 0.8, 1.0]
        spec = S.Spec(duration_s=3.0, requests=[S.Req(1.0, 2.0, eval_count=5, chunk_s=chunks)])
        row = run(tmp_path, spec).results[0]
        assert row["ttft_ms"] == pytest.approx(200.0)
        assert row["e2el_ms"] == pytest.approx(1000.0)
        assert row["tpot_ms"] == pytest.approx((1000.0 - 200.0) / 4)
        assert row["itl_ms_mean"] == pytest.approx(160.0)
        assert row["itl_ms_max"] == pytest.approx(300.0)

    def test_chunks_before_the_first_token_are_not_itl(self, tmp_path):
        """A role-only chunk before the first token (OpenAI streams) opens no inter-token gap."""
        spec = S.Spec(duration_s=3.0, requests=[S.Req(1.0, 2.0, eval_count=3, chunk_s=[0.3, 0.5, 0.9])])
        msgs = S.messages(spec)
        for topic, p in msgs:  # an extra chunk at 0.05 s that carries no token
            if topic == "req.end":
                p["client"]["chunk_t_ns"] = [S.T0_NS + 1_050_000_000] + p["client"]["chunk_t_ns"]
        row = pipeline.analyze(stream.build(msgs), pipeline.Options(quality=False)).results[0]
        assert row["ttft_ms"] == pytest.approx(300.0)
        assert row["itl_ms_mean"] == pytest.approx(300.0)  # gaps 200 and 400 ms; none from 0.05 s

    def test_one_token_has_no_tpot_and_no_chunks_no_itl(self, tmp_path):
        spec = S.Spec(duration_s=3.0, requests=[S.Req(1.0, 1.5, eval_count=1, model="one", chunk_s=[0.4, 0.5]),
                                                S.Req(1.0, 1.5, eval_count=9, model="none")])
        rows = by_model(run(tmp_path, spec))
        assert rows["one"]["tpot_ms"] is None and rows["one"]["itl_ms_mean"] == pytest.approx(100.0)
        assert rows["none"]["itl_ms_mean"] is None
        assert rows["none"]["ttft_ms"] == pytest.approx(50.0)  # the collector's first_token_s (0.1 × latency)
        assert rows["none"]["tpot_ms"] == pytest.approx(450.0 / 8)


class TestPercentileStats:
    def test_percentiles_match_numpy_linear(self):
        vals = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
        got = tables.percentiles_of(vals, (90.0, 99.0, 12.5))
        assert got["median"] == pytest.approx(np.percentile(vals, 50))
        for q in (90.0, 99.0, 12.5):
            assert got[tables.pct_name(q)] == pytest.approx(np.percentile(vals, q))

    def test_pooled_doubles_give_the_lists_figures(self):
        """Pooled gaps are held as an array of doubles: the same figures, bit for bit, as the list of
        floats (signed zeros in their order included), and the same describe()."""
        rng = np.random.default_rng(3)
        parts = [rng.exponential(0.02, 40).tolist() + [0.0, -0.0, float("nan"), None] for _ in range(30)]
        pooled = tables._pooled(iter(parts))
        as_list = [v for p in parts for v in p if v is not None and v == v]
        assert list(pooled) == as_list
        qs = (50.0, 90.0, 99.0, 12.5, 0.0, 100.0)
        got, want = tables.percentiles_of(pooled, qs), tables.percentiles_of(as_list, qs)
        assert {k: repr(v) for k, v in got.items()} == {k: repr(v) for k, v in want.items()}
        assert all(type(v) is float for v in got.values())
        assert tables.describe(pooled) == tables.describe(as_list)
        for zeros in ([-0.0, 0.0, 1.0], [0.0, -0.0, 1.0], [1.0, -0.0, -0.0]):
            low = tables.percentiles_of(tables._pooled(iter([zeros])), (0.0, 25.0, 50.0))
            assert repr(low) == repr(tables.percentiles_of(zeros, (0.0, 25.0, 50.0)))
        assert tables.percentiles_of([], (90.0,)) == {"median": None, "p90": None}

    def test_stats_rows_and_pooled_itl(self, tmp_path):
        """Two runs of one group: per-request metrics over 2 values; ITL pooled over every gap of both."""
        reqs = [S.Req(1.0, 2.0, run=1, eval_count=5, chunk_s=[0.2, 0.3, 0.45, 0.5, 0.8, 1.0]),
                S.Req(2.5, 3.0, run=2, eval_count=3, chunk_s=[0.1, 0.2, 0.5])]
        a = run(tmp_path, S.Spec(duration_s=4.0, requests=reqs))
        st = {s["metric"]: s for s in a.stats}
        itl = [100, 150, 50, 300, 200, 100, 300]
        assert st["itl_ms"]["n"] == 7
        assert st["itl_ms"]["mean"] == pytest.approx(np.mean(itl))
        assert st["itl_ms"]["median"] == pytest.approx(np.median(itl))
        assert st["itl_ms"]["p99"] == pytest.approx(np.percentile(itl, 99))
        assert st["ttft_ms"]["n"] == 2 and st["ttft_ms"]["mean"] == pytest.approx(150.0)
        assert st["e2el_ms"]["p90"] == pytest.approx(np.percentile([1000.0, 500.0], 90))
        assert st["tpot_ms"]["median"] == pytest.approx(np.median([200.0, 200.0]))
        assert a.stats_columns == tables.STATS_COLUMNS + tables.SPREAD_COLUMNS
        assert tables.csv_text(a.stats_columns, a.stats).splitlines()[0].endswith(
            "median,p90,p99,n_cases,n_repeated_cases,run_to_run_std,suite")

    def test_metric_percentiles_flag(self, tmp_path):
        default = cli.options_from(cli.build_parser().parse_args(["--batch", "x"]))
        assert default.metric_percentiles == (90.0, 99.0)
        opts = cli.options_from(cli.build_parser().parse_args(["--batch", "x", "--metric-percentiles", "50,99.9"]))
        assert opts.metric_percentiles == (50.0, 99.9)
        reqs = [S.Req(1.0, 2.0, eval_count=5, chunk_s=[0.2, 0.3, 0.45, 0.5, 0.8, 1.0])]
        a = run(tmp_path, S.Spec(duration_s=3.0, requests=reqs), metric_percentiles=opts.metric_percentiles)
        assert a.stats_columns[-7:-4] == ("median", "p50", "p99.9")
        itl = next(s for s in a.stats if s["metric"] == "itl_ms")
        assert itl["p99.9"] == pytest.approx(np.percentile([100, 150, 50, 300, 200], 99.9))
        for bad in ("0", "101", "x"):
            with pytest.raises(cli.BadInput, match="--metric-percentiles"):
                cli.parse_percentiles(bad)


class TestPhaseEnergy:
    def test_prefill_and_decode_energy_on_a_ramp(self, tmp_path):
        """Prefill = ∫ from start to the first chunk, decode = the rest; per-token figures from them."""
        power = S.ramp(90.0, 20.0)
        req = S.Req(1.0031, 3.0031, eval_count=50, prompt_eval_count=400, chunk_s=[0.5, 1.0, 2.0])
        row = run(tmp_path, S.Spec(duration_s=4.0, gpus=[S.Gpu(power)], requests=[req], dither=True)).results[0]
        pre, dec = power.e_j(1.5031) - power.e_j(1.0031), power.e_j(3.0031) - power.e_j(1.5031)
        assert row["gpu_energy_prefill_j"] == pytest.approx(pre, rel=1e-3)
        assert row["gpu_energy_decode_j"] == pytest.approx(dec, rel=1e-3)
        assert row["gpu_energy_prefill_j"] + row["gpu_energy_decode_j"] == pytest.approx(row["gpu_energy_j"], rel=1e-9)
        assert row["j_per_prompt_token"] == pytest.approx(row["gpu_energy_prefill_j"] / 400)
        assert row["j_per_output_token"] == pytest.approx(row["gpu_energy_decode_j"] / 50)
        assert row["j_per_token"] == pytest.approx(row["gpu_energy_j"] / 50)
        for phase, true in (("prefill", pre), ("decode", dec)):
            unc = row[f"gpu_energy_{phase}_uncertainty_j"]
            assert abs(row[f"gpu_energy_{phase}_j"] - true) <= unc < 0.01 * true
        assert row["gpu_prefill_short"] is False and row["gpu_decode_short"] is False

    def test_short_prefill_flagged(self, tmp_path):
        """A 0.1 s prefill on a 50 ms counter is short (fewer than 3 refresh periods); the decode is not."""
        req = S.Req(1.0031, 2.0031, chunk_s=[0.1, 0.5, 1.0])
        row = run(tmp_path, S.Spec(duration_s=3.0, gpus=[S.Gpu(S.constant(100.0))], requests=[req])).results[0]
        assert row["gpu_prefill_short"] is True and row["gpu_decode_short"] is False
        assert row["gpu_energy_prefill_j"] == pytest.approx(10.0, rel=1e-3)

    def test_concurrent_phases_follow_the_window_split(self, tmp_path):
        """Phases share each interval among the *requests* active in it, so they add to the window share."""
        power = S.constant(120.0)
        reqs = [S.Req(1.0031, 3.0031, model="a", chunk_s=[1.0, 2.0]),
                S.Req(2.0031, 4.0031, model="b", chunk_s=[0.5, 2.0])]
        rows = by_model(run(tmp_path, S.Spec(duration_s=5.0, gpus=[S.Gpu(power)], requests=reqs)))
        a, b = rows["a"], rows["b"]
        # a: prefill 1.0–2.0 alone (120 J); decode 2.0–3.0 shared with b (60 J)
        assert a["gpu_energy_prefill_j"] == pytest.approx(120.0, rel=1e-3)
        assert a["gpu_energy_decode_j"] == pytest.approx(60.0, rel=1e-3)
        # b: prefill 2.0–2.5 shared (30 J); decode 2.5–3.0 shared (30 J) + 3.0–4.0 alone (120 J)
        assert b["gpu_energy_prefill_j"] == pytest.approx(30.0, rel=1e-3)
        assert b["gpu_energy_decode_j"] == pytest.approx(150.0, rel=1e-3)
        for r in (a, b):
            assert r["gpu_energy_prefill_j"] + r["gpu_energy_decode_j"] == pytest.approx(r["gpu_energy_j"], rel=1e-9)

    def test_no_stream_no_phases(self, tmp_path):
        """Without a first token or chunk there is no boundary: phases empty, never a guess."""
        msgs = S.messages(S.Spec(duration_s=3.0, requests=[S.Req(1.0, 2.0)]))
        msgs = [(t, p) for t, p in msgs if t != "req.first_token"]
        for t, p in msgs:
            if t == "req.end":
                p["client"].pop("first_token_s")
        row = pipeline.analyze(stream.build(msgs), pipeline.Options(quality=False)).results[0]
        assert row["gpu_energy_j"] == pytest.approx(100.0, rel=1e-3)
        assert row["gpu_energy_prefill_j"] is None and row["gpu_energy_decode_j"] is None
        assert row["j_per_output_token"] is None


class TestMeasurementColumns:
    def test_rate_refresh_and_fit_reported(self, tmp_path):
        spec = S.Spec(duration_s=6.0, rate_hz=100.0, dither=True, gpus=[S.Gpu(S.sine(150, 50, 1.0), refresh_s=0.05)],
                      requests=[S.Req(1.0, 5.0)])
        row = run(tmp_path, spec).results[0]
        assert row["gpu_sampling_hz"] == pytest.approx(100.0, rel=0.02)
        assert row["gpu_counter_refresh_ms"] == pytest.approx(50.0, rel=1e-3)
        assert row["gpu_counter_refresh_fit"] == "periodic_fit"
        assert row["gpu_power_kind"] == "sim" and row["gpu_energy_method"] == "counter+power"

    def test_short_window_from_the_refresh_period(self, tmp_path):
        """0.1 s on a 50 ms counter is short; 0.2 s is not (3 periods = 0.15 s)."""
        reqs = [S.Req(1.0031, 1.1031, model="short"), S.Req(2.0031, 2.2031, model="long")]
        rows = by_model(run(tmp_path, S.Spec(duration_s=3.0, requests=reqs)))
        assert rows["short"]["gpu_short_window"] is True and rows["long"]["gpu_short_window"] is False


class TestServerCpu:
    def test_server_share_with_tdp(self, tmp_path):
        """8 cores, host 25 % busy (2 cores), the server 0.5 core: share 1/4, other processes 18.75 %,
        cpu_energy_j_server = the TDP approximation × the share = TDP × server CPU s / cores."""
        spec = S.Spec(duration_s=5.0, server_cores=0.5, requests=[S.Req(1.0031, 3.0031)])
        row = run(tmp_path, spec, cpu_tdp_w=80.0).results[0]
        assert row["server_cpu_s"] == pytest.approx(1.0, rel=1e-6)
        assert row["cpu_server_share"] == pytest.approx(0.25, rel=1e-6)
        assert row["host_cpu_other_pct"] == pytest.approx(18.75, rel=1e-6)
        assert row["cpu_energy_j_server"] == pytest.approx(80.0 * 1.0 / 8, rel=1e-6)
        assert row["cpu_server_basis"] == "tdp_share"
        assert row["cpu_energy_j_approx"] == pytest.approx(80.0 * 0.25 * 2.0, rel=1e-6)  # the seed's, unchanged

    def test_server_share_with_rapl_and_contention_warning(self, tmp_path):
        """RAPL 35 W × the server's share; other processes at 43.75 % of the CPU: the report warns."""
        spec = S.Spec(duration_s=5.0, server_cores=0.5, rapl_w=35.0, cpu_pct=lambda t: 50.0,
                      requests=[S.Req(1.0031, 3.0031)])
        a = run(tmp_path, spec)
        row = a.results[0]
        assert row["cpu_server_share"] == pytest.approx(0.125, rel=1e-6)
        assert row["cpu_energy_j_server"] == pytest.approx(35.0 * 2.0 * 0.125, rel=1e-4)
        assert row["cpu_server_basis"] == "rapl_share"
        assert row["host_cpu_other_pct"] == pytest.approx(43.75, rel=1e-6)
        assert any(p.startswith("CPU contention") and row["rid"] in p for p in a.problems)

    def test_windows_before_the_server_was_found_stay_empty_never_zero(self, tmp_path):
        """The daemon found the server's process 2 s in (it started after the daemon): a request before that
        has no server figures and says why (clamping its window to the trace gave server_cpu_s = 0 and
        cpu_energy_j_server = 0, the flaky demo rows); one after it is measured as usual."""
        spec = S.Spec(duration_s=5.0, server_cores=0.5, server_found_s=2.0,
                      requests=[S.Req(0.5031, 1.5031, model="early"), S.Req(1.9031, 2.9031, model="straddles"),
                                S.Req(3.0031, 4.0031, model="late")])
        a = run(tmp_path, spec, cpu_tdp_w=80.0)
        rows = by_model(a)
        for early in ("early", "straddles"):
            assert rows[early]["server_cpu_s"] is None and rows[early]["cpu_energy_j_server"] is None
            assert rows[early]["cpu_server_share"] is None and rows[early]["cpu_server_basis"] == "server_not_seen"
            assert rows[early]["cpu_energy_j_approx"] is not None  # the host's own CPU figures stay
        assert rows["late"]["server_cpu_s"] == pytest.approx(0.5, rel=1e-6)
        assert rows["late"]["cpu_server_basis"] == "tdp_share"
        note = next(p for p in a.problems if "server_not_seen" in p)
        assert note.startswith("2 request(s)") and rows["early"]["rid"] in note and rows["late"]["rid"] not in note

    def test_server_never_above_the_host(self, tmp_path):
        """Seen on the demo: the process's CPU time ran a few % above the host's cpu_pct integral (they are
        sampled apart). The share is clipped to 1, so the server's energy is at most the host's."""
        spec = S.Spec(duration_s=5.0, server_cores=3.0, requests=[S.Req(1.0031, 3.0031)])  # host: 2 cores busy
        row = run(tmp_path, spec, cpu_tdp_w=80.0).results[0]
        assert row["cpu_server_share"] == 1.0 and row["host_cpu_other_pct"] == 0.0
        assert row["cpu_energy_j_server"] == pytest.approx(row["cpu_energy_j_approx"], rel=1e-9)

    def test_no_server_figures_without_them(self, tmp_path):
        a = run(tmp_path, S.Spec(duration_s=3.0, requests=[S.Req(1.0, 2.0)]))
        row = a.results[0]
        assert row["cpu_energy_j_server"] is None and row["host_cpu_other_pct"] is None
        assert not any(p.startswith("CPU contention") for p in a.problems)
