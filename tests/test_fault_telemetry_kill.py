"""Fault: the telemetry daemon is killed with SIGKILL in the middle of a batch, then restarted.

Real processes: the Ollama stub (slowed to ~0.05 s per token so that the batch lasts seconds),
``python -m telemetry --gpu sim`` (SIMULATED GPU), ``python -m collector`` and the analyzer it runs.
"""
import time

import pytest

from shared.messages import REQ_END, REQ_START, TEL_GPU
from tests.fault_helpers import loopback, procs, read_csv, recorded, start_ollama_stub, wait_for  # noqa: F401

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

RUNS = 16


def daemon_args(endpoint: str) -> list[str]:
    return ["telemetry", "--gpu", "sim", "--endpoint", endpoint, "--gpu-hz", "50", "--host-hz", "5", "--watch",
            "--no-rapl", "--duration", "120"]


def test_kill9_daemon_gap_is_uncovered_not_invented_and_restart_recovers(procs, tmp_path):
    """Requests run while the daemon is dead get coverage 0 and no energy (method none); the batch
    goes on; after a restart on the same endpoint later requests are covered again."""
    url = start_ollama_stub(procs, token_delay_s=0.05)
    tel_ep = loopback()
    batch = tmp_path / "b"
    batch.mkdir()
    stream = batch / "raw" / "stream.msgpack"
    daemon = procs.start(*daemon_args(tel_ep))
    collector = procs.start(
        "collector", "--exp-dir", str(batch), "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en",
        "--runs", str(RUNS), "--max-tokens", "12", "--keepalive", "5m", "--base-url", url,
        "--telemetry-endpoint", tel_ep, "--telemetry-wait", "30", "--events-endpoint", loopback(), "--no-progress",
        "--analyzer-args", "--no-quality --no-plots --no-progress")

    def ends() -> list[dict]:
        return [p for t, p in recorded(stream) if t == REQ_END]

    wait_for(lambda: len(ends()) >= 2 or collector.poll() is not None, 60, "two finished requests")
    daemon.kill()  # SIGKILL: no goodbye message, the SUB side just stops receiving
    daemon.wait(10)
    t_kill = time.monotonic_ns()

    def gap_requests_done() -> int:
        items = recorded(stream)
        late = {p["rid"] for t, p in items if t == REQ_START and p["t"] > t_kill}
        return sum(1 for t, p in items if t == REQ_END and p["rid"] in late)

    wait_for(lambda: gap_requests_done() >= 2 or collector.poll() is not None, 60, "two requests in the gap")
    assert collector.poll() is None, "the batch must still be running when the daemon comes back"
    procs.start(*daemon_args(tel_ep))  # same endpoint; the collector's SUB socket reconnects by itself
    wait_for(lambda: any(t == TEL_GPU and p["t"] > t_kill for t, p in recorded(stream)), 30,
             "the restarted daemon's first sample in the recording")
    assert collector.poll() is None, "the batch ended before the restarted daemon was up: make it longer"
    assert collector.wait(90) == 0, procs.output(collector)

    items = recorded(stream)
    starts = {p["rid"]: p["t"] for t, p in items if t == REQ_START}
    stops = {p["rid"]: p["t"] for t, p in items if t == REQ_END}
    gpu_t = sorted(p["t"] for t, p in items if t == TEL_GPU)
    first_after = min(t for t in gpu_t if t > t_kill)  # the restarted daemon's first sample
    last_before = max(t for t in gpu_t if t < t_kill)
    rows = {r["rid"]: r for r in read_csv(batch / "summary" / "results.csv")}
    assert len(rows) == RUNS and all(r["status"] == "ok" for r in rows.values())  # the collector went on

    before = [rid for rid in rows if stops[rid] < last_before]
    in_gap = [rid for rid in rows if starts[rid] > last_before and stops[rid] < first_after]
    after = [rid for rid in rows if starts[rid] > first_after]
    assert len(before) >= 1 and len(in_gap) >= 2 and len(after) >= 1, (len(before), len(in_gap), len(after))
    for rid in in_gap:  # no sample inside: nothing is invented
        r = rows[rid]
        assert float(r["gpu_coverage"]) == 0.0, r
        assert r["gpu_energy_j"] == "" and r["gpu_energy_method"] == "none", r
        assert r["cpu_energy_j"] == "" or float(r["cpu_coverage"]) == 0.0
    for rid in before + after:
        r = rows[rid]
        assert float(r["gpu_coverage"]) > 0.9, r
        assert float(r["gpu_energy_j"]) > 0 and r["gpu_simulated"] == "true"
