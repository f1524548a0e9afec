"""``python -m demo --ollama`` as a real subprocess against the Ollama stub (tests/stubs/ollama_stub.py,
its own process): the one-line switch to an Ollama server, Ctrl-C in the middle of the batch, and a
server that is not there. The telemetry daemon is the real one with its SIMULATED GPU."""
import re
import signal
import sys

import psutil
import pytest

from shared.bus import Inbox, connect_sub
from shared.messages import BATCH_END, REQ_END
from tests.conftest import free_port
from tests.fault_helpers import procs, read_csv, recorded, start_ollama_stub, wait_for  # noqa: F401

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)
# After its Ctrl-C the demo stops each child in turn, allowing each 10 s and a kill with 10 s more (the
# collector's closing analysis runs in that time): the wait is above the sum, not a guess at a busy machine.
STOP_WAIT_S = 120


def child_pids(log: str) -> dict[str, int]:
    """{child name: pid} from the demo's ``child_started`` log lines."""
    pids = {}
    for line in log.splitlines():
        if "child_started" in line:
            pids[re.search(r"child=(\w+)", line).group(1)] = int(re.search(r"pid=(\d+)", line).group(1))
    return pids


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_demo_runs_the_same_batch_against_an_ollama_server(procs, tmp_path):
    url = start_ollama_stub(procs)
    demo = procs.start("demo", "--log-level", "info", "--ollama", "--models", "ok", "--tasks", "qa", "code", "--loads", "short", "--langs", "en", "--runs",
                       "1", "--max-tokens", "8", "--no-quality", "--no-plots", "--out", str(tmp_path),
                       env={"OLLAMA_HOST": url.removeprefix("http://")})
    assert demo.wait(120) == 0, procs.output(demo)[-3000:]
    out = procs.output(demo)
    [batch] = [p for p in tmp_path.iterdir() if p.name.startswith("experiments_")]
    assert f"batch: {batch}" in out
    rows = read_csv(batch / "summary" / "results.csv")
    assert sorted(r["task"] for r in rows) == ["code", "qa"]
    assert all(r["status"] == "ok" and r["model"] == "ok:latest" and r["gpu_simulated"] == "true" for r in rows)
    assert "| ok:latest | qa | short | 1/1 |" in out and "SIMULATED" in out
    assert out.count("child_stopped") == 2  # telemetry and collector; no LLM server was started
    assert "live page: http://127.0.0.1:" in out  # the collector's live page, its URL printed


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT; on Windows Ctrl-C goes through CTRL_C_EVENT")
def test_ctrl_c_mid_batch_stops_every_child_and_keeps_what_finished(procs, tmp_path):
    url = start_ollama_stub(procs, token_delay_s=0.1)
    demo = procs.start("demo", "--log-level", "info", "--ollama", "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en", "--runs", "20",
                       "--max-tokens", "10", "--no-quality", "--no-plots", "--out", str(tmp_path),
                       env={"OLLAMA_HOST": url.removeprefix("http://")})

    def stream():
        found = [p for p in tmp_path.glob("experiments_*/raw/stream.msgpack")]
        return found[0] if found else None

    wait_for(lambda: (s := stream()) is not None and any(t == REQ_END and not p.get("warmup") for t, p in recorded(s)),
             180, "the first finished request after the warm-up")
    pids = child_pids(procs.output(demo))
    assert set(pids) == {"telemetry", "collector"}
    demo.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends to the demo
    assert demo.wait(STOP_WAIT_S) == 130, procs.output(demo)[-3000:]
    for name, pid in pids.items():
        assert gone(pid), f"{name} (pid {pid}) still running after the demo exited"
    items = recorded(stream())
    ends = [p for t, p in items if t == BATCH_END]
    assert ends and ends[-1]["interrupted"] is True  # the collector closed the batch properly
    assert 1 <= sum(1 for t, p in items if t == REQ_END and p["ok"] and not p.get("warmup")) < 20
    assert "--resume" in procs.output(demo)


def test_no_ollama_server_is_a_clear_error_and_the_daemon_is_stopped(procs, tmp_path):
    demo = procs.start("demo", "--log-level", "info", "--ollama", "--models", "ok", "--out", str(tmp_path),
                       env={"OLLAMA_HOST": f"127.0.0.1:{free_port()}"})
    assert demo.wait(60) == 1
    out = procs.output(demo)
    assert "no Ollama server answers on http://127.0.0.1:" in out and "OLLAMA_HOST" in out
    pids = child_pids(out)
    assert set(pids) == {"telemetry"} and gone(pids["telemetry"])


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT; on Windows Ctrl-C goes through CTRL_C_EVENT")
def test_keep_running_leaves_the_daemon_publishing_until_ctrl_c(procs, tmp_path, zctx):
    url = start_ollama_stub(procs)
    demo = procs.start("demo", "--log-level", "info", "--ollama", "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en", "--runs", "1",
                       "--max-tokens", "4", "--no-quality", "--no-plots", "--keep-running", "--out", str(tmp_path),
                       env={"OLLAMA_HOST": url.removeprefix("http://")})
    wait_for(lambda: "still running" in procs.output(demo) or demo.poll() is not None, 240, "the batch to finish")
    line = next(x for x in procs.output(demo).splitlines() if x.startswith("still running"))
    endpoint = re.search(r"telemetry (tcp://\S+)", line).group(1)
    sub = connect_sub(zctx, endpoint, ["tel.hb"])
    try:
        hb = Inbox().recv(sub, timeout_ms=30_000)
    finally:
        sub.close(linger=0)
    assert hb is not None and hb[1]["simulated"] is True  # the daemon still publishes after the batch
    assert demo.poll() is None
    demo.send_signal(signal.SIGINT)
    assert demo.wait(STOP_WAIT_S) == 0  # Ctrl-C is how --keep-running ends: not an error
    assert all(gone(pid) for pid in child_pids(procs.output(demo)).values())


def test_bartscore_checkpoint_from_the_environment_is_used(procs, tmp_path):
    """BARTSCORE_CHECKPOINT pointing at a local checkpoint (a tiny random BART built here, since no real
    weights are available offline) reaches the analyzer's quality step: bartscore is filled."""
    pytest.importorskip("transformers")
    from analyzer.quality.testing import build_tiny_bart

    ckpt = build_tiny_bart(tmp_path / "tiny-bart")
    url = start_ollama_stub(procs)
    out = tmp_path / "out"
    demo = procs.start("demo", "--log-level", "info", "--ollama", "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en", "--runs", "1",
                       "--max-tokens", "6", "--no-plots", "--out", str(out),
                       env={"OLLAMA_HOST": url.removeprefix("http://"), "BARTSCORE_CHECKPOINT": str(ckpt),
                            "HF_HUB_OFFLINE": "1"})
    assert demo.wait(180) == 0, procs.output(demo)[-3000:]
    [batch] = list(out.iterdir())
    [row] = read_csv(batch / "summary" / "results.csv")
    assert row["bartscore_model"] == str(ckpt) and float(row["bartscore"]) < 0  # a log-likelihood
    assert "BARTScore is empty" not in procs.output(demo)


def test_llm_server_killed_mid_batch_the_demo_reports_and_keeps_what_finished(procs, tmp_path):
    """kill -9 of the model server during the demo: the collector stops the batch (exit 3, with the fix),
    the analyzer still runs on what finished, the demo prints the summary and stops its children."""
    url = start_ollama_stub(procs, token_delay_s=0.05)
    stub = procs.started[-1]
    demo = procs.start("demo", "--log-level", "info", "--ollama", "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en", "--runs", "20",
                       "--max-tokens", "8", "--no-quality", "--no-plots", "--out", str(tmp_path),
                       env={"OLLAMA_HOST": url.removeprefix("http://")})

    def finished() -> int:
        found = list(tmp_path.glob("experiments_*/raw/stream.msgpack"))
        return sum(1 for t, p in recorded(found[0]) if t == REQ_END and p["ok"] and not p.get("warmup")) if found else 0

    wait_for(lambda: finished() >= 2 or demo.poll() is not None, 60, "two finished requests")
    stub.kill()
    stub.wait(10)
    assert demo.wait(60) == 3, procs.output(demo)[-3000:]
    out = procs.output(demo)
    assert "Is the server running" in out
    [batch] = list(tmp_path.glob("experiments_*"))
    rows = read_csv(batch / "summary" / "results.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 2 and len(rows) < 20 and f"batch: {batch}" in out  # finished requests kept and analysed
    assert all(gone(pid) for pid in child_pids(out).values())
