"""Load sweeps end to end against the stubs with known service times: the collector's levels and
open-loop arrivals, the analyzer's load_curve.csv and goodput, and resuming inside a level."""
import asyncio
import csv
import signal
import sys
import time
from collections import Counter

import shutil

import pytest

from analyzer import compare

from shared.recording import RecordingReader, read_recording
from tests.conftest import ROOT, free_port
from tests.stubs import ollama_stub, openai_stub, serve
from tests.test_collector_cli import SimTelemetry, by_topic, collector_env, run_collector

pytestmark = pytest.mark.slow

SERVICE_S = 0.5


def read_csv(path):
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def curve_of(batch):
    return {r["sweep_level"]: r for r in read_csv(batch / "summary" / "load_curve.csv")}


def base_args(url, *extra):
    return ["--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en", "--max-tokens", "8",
            "--base-url", url, "--no-progress", *extra]


async def test_concurrency_sweep_scales_to_the_server_limit_and_counts_goodput(tmp_path):
    """Stub: every answer takes 0.5 s, 2 generate at once, the rest queue. Levels 1, 2, 4: throughput
    doubles from 1 to 2 and stays at 4; level 4 queues (TTFT ≈ 0.5 s), so ttft:250 fails there."""
    app = ollama_stub.make_app(load_s=0.0, service_s=SERVICE_S, parallel=2)
    tel_ep = f"tcp://127.0.0.1:{free_port()}"
    exp = tmp_path / "sweep"
    exp.mkdir()
    async with serve(app) as url:
        with SimTelemetry(tel_ep):
            rc, log = await run_collector("--exp-dir", str(exp), *base_args(url, "--runs", "8", "--sweep",
                                          "concurrency=1,2,4", "--goodput", "ttft:250", "--telemetry-endpoint",
                                          tel_ep, "--analyzer-args", "--no-quality --no-plots"), timeout_s=120)
    assert rc == 0, log
    assert app[ollama_stub.STATE].max_active == 2
    assert "server_parallel_unknown" in log  # Ollama does not say how many it serves at once
    results = read_csv(exp / "summary" / "results.csv")
    assert Counter(r["sweep_level"] for r in results) == {"1": 8, "2": 8, "4": 8}
    assert {r["sweep"] for r in results} == {"concurrency"}
    level4 = {r["level_concurrency"] for r in results if r["sweep_level"] == "4"}
    assert level4 == {curve_of(exp)["4"]["achieved_concurrency"]}  # each row carries its level's achieved load
    assert all(r["rid"].split("/")[-2] == f"c{r['sweep_level']}" for r in results)
    curve = {r["sweep_level"]: r for r in read_csv(exp / "summary" / "load_curve.csv")}
    assert list(curve) == ["1", "2", "4"]
    rps = {k: float(v["request_throughput_rps"]) for k, v in curve.items()}
    assert rps["1"] == pytest.approx(1 / SERVICE_S, rel=0.25)
    assert 1.5 < rps["2"] / rps["1"] < 2.3, rps
    assert 0.75 < rps["4"] / rps["2"] < 1.3, rps  # the stub's limit: more streams only queue
    assert float(curve["4"]["achieved_concurrency"]) > 3.0 > float(curve["2"]["achieved_concurrency"]) > 1.6
    assert curve["4"]["queueing"] == "true" and curve["2"]["queueing"] == "false"
    assert {(v["gpu_power_limit_w"], v["gpu_driver"]) for v in curve.values()} == {("300", "550.54.15")}
    # goodput: exactly the requests whose TTFT is within 250 ms
    for level, row in curve.items():
        good = sum(1 for r in results if r["sweep_level"] == level and float(r["ttft_ms"]) <= 250)
        assert int(row["goodput_n"]) == good
        assert float(row["goodput_share"]) == pytest.approx(good / 8)
        assert sum(r["slo_ok"] == "true" for r in results if r["sweep_level"] == level) == good
    assert curve["1"]["goodput_share"] == "1" and int(curve["4"]["goodput_n"]) <= 4
    # energy per token from each level's window: the simulated GPU draws ~50 W throughout, so serving
    # two at once halves J/token; level 4 gains nothing over 2
    jpt = {k: float(v["j_per_token"]) for k, v in curve.items()}
    assert jpt["2"] < 0.7 * jpt["1"] and jpt["4"] == pytest.approx(jpt["2"], rel=0.3)
    for v in curve.values():
        assert float(v["gpu_energy_j"]) >= float(v["gpu_energy_split_j"]) * 0.99  # gaps only add
        assert float(v["j_per_token_ci95_low"]) <= float(v["j_per_token"]) <= float(v["j_per_token_ci95_high"])
    stats = read_csv(exp / "summary" / "stats.csv")
    assert list(stats[0])[:4] == ["model", "task", "load", "sweep_level"]
    assert {r["sweep_level"] for r in stats if r["metric"] == "ttft_ms"} == {"1", "2", "4"}
    html = (exp / "summary" / "report.html").read_text(encoding="utf-8")
    assert 'id="load-curve-plot"' in html and html.count('class="mark lvl') == 3
    assert html.count("slo-met") == 2  # levels 1 and 2 met ttft:250 for every request; 4 did not
    md = (exp / "summary" / "report.md").read_text(encoding="utf-8")
    assert "## Energy under load" in md and "ttft:250" in md
    # analyzer.compare overlays batches: the same sweep under a second name is a second line
    shutil.copytree(exp, tmp_path / "sweep2")
    rc = compare.main([str(exp), str(tmp_path / "sweep2"), "--out", str(tmp_path / "cmp")])
    assert rc == 0
    overlay = read_csv(tmp_path / "cmp" / "load_curve.csv")
    assert [(r["batch"], r["sweep_level"]) for r in overlay] == [(b, lv) for b in ("sweep", "sweep2")
                                                                 for lv in ("1", "2", "4")]
    page = (tmp_path / "cmp" / "compare.html").read_text(encoding="utf-8")
    assert page.count("<polyline points=") == 2 and "ok:latest · sweep2" in page


async def test_rate_sweep_is_open_loop_and_late_starts_are_counted(tmp_path):
    """Constant arrivals at 4 and 40 requests/s, answers of 0.1 s, at most 1 in flight: at 40/s
    the bound makes starts late, and every one of them is counted, none silently delayed."""
    app = ollama_stub.make_app(load_s=0.0, service_s=0.1)
    exp = tmp_path / "rate"
    exp.mkdir()
    async with serve(app) as url:
        rc, log = await run_collector("--exp-dir", str(exp), *base_args(url, "--runs", "5", "--sweep", "rate=4,40",
                                      "--arrival", "constant", "--max-concurrency", "1", "--no-telemetry",
                                      "--analyzer-args", "--no-quality --no-plots"))
    assert rc == 0, log
    _, items, _ = read_recording(exp / "raw" / "stream.msgpack")
    t = by_topic(items)
    starts = [s for s in t["req.start"] if not s.get("warmup")]
    slow = [s for s in starts if s["sweep_level"] == 4]
    fast = [s for s in starts if s["sweep_level"] == 40]
    assert len(slow) == len(fast) == 5 and all(s["sweep"] == "rate" for s in starts)
    assert not any(s["start_blocked"] for s in slow) and all(s["start_lag_ms"] < 10 for s in slow)
    assert sum(s["start_blocked"] for s in fast) == 4  # all but the first waited for the one slot
    assert t["batch.end"][-1]["late_starts"] == 4
    assert "4 open-loop start(s) missed their scheduled arrival" in log
    curve = {r["sweep_level"]: r for r in read_csv(exp / "summary" / "load_curve.csv")}
    assert float(curve["4"]["achieved_rate_rps"]) == pytest.approx(4.0, rel=0.15)
    assert float(curve["40"]["achieved_rate_rps"]) < 12  # the bound, not the schedule, set the pace
    assert curve["40"]["late_starts"] == "4" and curve["4"]["late_starts"] == "0"


async def test_killing_mid_sweep_and_resuming_runs_each_planned_request_once(tmp_path):
    app = ollama_stub.make_app(load_s=0.0, service_s=0.1)
    exp = tmp_path / "b"
    exp.mkdir()
    stream = exp / "raw" / "stream.msgpack"
    async with serve(app) as url:
        args = ["--exp-dir", str(exp), *base_args(url, "--runs", "4", "--sweep", "concurrency=1,2",
                                                  "--no-telemetry", "--no-analyze")]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", *args, cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=collector_env())
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                if stream.exists() and sum(t == "req.end" for t, _ in RecordingReader(stream)) >= 3:
                    break  # the warm-up and two requests of level 1
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
        assert proc.returncode == 130, err.decode()
        _, items, _ = read_recording(stream)
        first_ok = {p["rid"] for p in by_topic(items)["req.end"] if p["ok"] and "/warmup/" not in p["rid"]}
        assert 0 < len(first_ok) < 4
        rc, log = await run_collector("--exp-dir", str(exp), "--resume", "--base-url", url, "--no-telemetry",
                                      "--no-analyze", "--no-progress")
        assert rc == 0, log
    _, items, _ = read_recording(stream)
    t = by_topic(items)
    ok = Counter(p["rid"] for p in t["req.end"] if p["ok"] and "/warmup/" not in p["rid"])
    planned = {f"b/ok:latest/000-qa/short/c{lv}/{run}" for lv in (1, 2) for run in range(1, 5)}
    assert set(ok) == planned and set(ok.values()) == {1}
    assert len(t["batch.start"]) == 2 and t["batch.start"][1]["already_done"] == len(first_ok)
    sent = Counter(s["rid"] for s in t["req.start"])
    assert all(sent[rid] == 1 for rid in first_ok)  # nothing finished was sent again
    assert all(s["sweep_level"] == int(s["rid"].split("/")[-2][1:]) for s in t["req.start"])


async def test_ignore_eos_is_sent_to_llamacpp_and_its_slots_are_read(tmp_path):
    app = openai_stub.make_app("llamacpp", token_delay_s=0.0, parallel=2)
    exp = tmp_path / "eos"
    exp.mkdir()
    async with serve(app) as url:
        rc, log = await run_collector("--exp-dir", str(exp), "--backend", "openai", "--models", "ok", "--tasks", "qa",
                                      "--loads", "short", "--langs", "en", "--max-tokens", "8", "--base-url", url,
                                      "--sweep", "concurrency=1,4", "--ignore-eos", "--no-telemetry", "--no-analyze",
                                      "--no-progress")
    assert rc == 0, log
    bodies = [b for b in app[openai_stub.STATE].requests if b.get("max_tokens") == 8]
    assert bodies and all(b.get("ignore_eos") is True for b in bodies)
    _, items, _ = read_recording(exp / "raw" / "stream.msgpack")
    load = by_topic(items)["batch.start"][0]["load"]
    assert load["server_parallel"] == 2 and "total_slots" in load["server_parallel_source"]
    assert "concurrency_above_server_parallel" in log
