"""--live and --batch give byte-identical outputs: a recording is published over a real loopback bus
to ``python -m analyzer --live`` (a subprocess) and compared with ``--batch`` on the same recording."""
from __future__ import annotations

import shutil
from contextlib import contextmanager
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from analyzer.live import LiveBuffer, resolve_batch_dir
from analyzer.live_spool import Spool
from shared import messages as M
from shared.messages import encode
from shared.recording import read_recording
from tests.conftest import free_port
from tests.test_analyzer_cli import ROOT, TINY, analyzer

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)


def _wait_subscribed(sock: zmq.Socket, timeout_s: float) -> None:
    """XPUB sees the subscriber's subscribe frame once it is connected: no slow-joiner guesswork."""
    if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
        raise AssertionError("the live analyzer never subscribed")
    frame = sock.recv()
    assert frame[:1] == b"\x01"


@contextmanager
def live_process(zctx, *args: str):
    """``python -m analyzer --live ARGS`` subscribed to two XPUB sockets (telemetry, events); yields
    ``(proc, send)`` once both are subscribed, ``send(topic, payload)`` publishing on the right one.
    Always killed at teardown."""
    tel_ep, ev_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    tel, ev = zctx.socket(zmq.XPUB), zctx.socket(zmq.XPUB)
    proc = None
    try:
        for s, ep in ((tel, tel_ep), (ev, ev_ep)):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            s.bind(ep)
        proc = subprocess.Popen([sys.executable, "-m", "analyzer", "--live", "--telemetry-endpoint", tel_ep,
                                 "--events-endpoint", ev_ep, *args],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_subscribed(tel, 60)
        _wait_subscribed(ev, 10)
        yield proc, lambda topic, payload: (tel if topic.startswith("tel.") else ev).send_multipart(
            [topic.encode("ascii"), encode(payload)])
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        tel.close(linger=0)
        ev.close(linger=0)


@contextmanager
def live_analyzer(zctx, *args: str, timeout_s: float):
    """live_process, then waits for the process to exit 0; yields ``send(topic, payload)``."""
    with live_process(zctx, *args) as (proc, send):
        yield send
        _, err = proc.communicate(timeout=timeout_s)
        assert proc.returncode == 0, err.decode("utf-8", "replace")[-2000:]


def test_live_replay_matches_batch_byte_for_byte(tmp_path, zctx):
    live_dir, batch_dir = tmp_path / "live" / "tiny", tmp_path / "batch" / "tiny"
    shutil.copytree(TINY, live_dir)
    shutil.copytree(TINY, batch_dir)
    _, items, problem = read_recording(TINY / "raw" / "stream.msgpack")
    assert problem is None
    spool = tmp_path / "spool"
    with live_analyzer(zctx, "--batch", str(live_dir), "--once", "--no-quality", "--no-plots", "--grace-s", "0.5",
                       "--exit-after-s", "90", "--spool-dir", str(spool), timeout_s=90) as send:
        for topic, payload in items:
            send(topic, payload)
    assert list(spool.iterdir()) == []  # the batch's spool file and the process's directory went after use
    r = analyzer("--batch", batch_dir, "--no-quality", "--no-plots")
    assert r.returncode == 0, r.stderr
    for rel in ("summary/results.csv", "summary/stats.csv", "summary/pareto.csv", "summary/warmups.csv"):
        assert (live_dir / rel).read_bytes() == (batch_dir / rel).read_bytes(), rel
    live_json = sorted(p.name for p in (live_dir / "raw").glob("*.json"))
    assert live_json and live_json == sorted(p.name for p in (batch_dir / "raw").glob("*.json"))
    for name in live_json:
        assert (live_dir / "raw" / name).read_bytes() == (batch_dir / "raw" / name).read_bytes(), name


def test_live_unfinished_batch_is_analysed_on_exit(tmp_path, zctx):
    """The collector dies mid-batch (no batch.end): on exit the live analyzer writes what it got,
    the unfinished requests marked incomplete."""
    from tests import synth as S

    spec = S.Spec(duration_s=3.0, requests=[S.Req(1.0, 1.5), S.Req(2.0, 2.5, end=False)], batch_end=False)
    out_dir, spool = tmp_path / "out", tmp_path / "spool"
    with live_analyzer(zctx, "--out-root", str(out_dir), "--no-quality", "--no-plots", "--exit-after-s", "4",
                       "--spool-dir", str(spool), timeout_s=60) as send:
        for topic, payload in S.messages(spec):
            send(topic, payload)
    text = (out_dir / spec.batch_id / "summary" / "results.csv").read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    assert len(lines) == 3
    assert ",ok," in lines[1] and ",incomplete," in lines[2]
    assert list(spool.iterdir()) == []


class TestLiveBuffer:
    def _p(self, t_s: float, **body):
        return {"v": 1, "src": "x", "seq": int(t_s * 1000), "t": int(t_s * 1e9), "wall": 0, **body}

    def test_keeps_lookback_telemetry_and_batch_events(self, tmp_path):
        """Telemetry older than the look-back is pruned while no batch is open; events only inside a batch."""
        buf = LiveBuffer(lookback_s=2.0, grace_s=0.5, spool=Spool(tmp_path))
        for t in range(10):
            buf.feed(M.TEL_HOST, self._p(t, cpu_pct=1.0), now_s=t)
        buf.feed(M.REQ_START, self._p(9.1, rid="stray"), now_s=9.1)
        buf.feed(M.BATCH_START, self._p(9.5, batch="b"), now_s=9.5)
        buf.feed(M.TEL_HOST, self._p(10, cpu_pct=1.0), now_s=10)
        buf.feed(M.BATCH_END, self._p(11, batch="b"), now_s=11)
        assert not buf.ready(11.2)
        assert buf.ready(11.6)
        got = list(buf.take())
        tel_t = sorted(p["t"] / 1e9 for t, p in got if t == M.TEL_HOST)
        assert tel_t == [7, 8, 9, 10]
        assert [t for t, _ in got if not t.startswith("tel.")] == [M.BATCH_START, M.BATCH_END]
        assert buf.dropped_events == 1 and not buf.open

    def test_an_invalid_message_moves_no_look_back(self, tmp_path):
        """A t beyond 64 bits is not the source's newest reading: the look-back kept is the same; a message
        the contract refuses still goes into an open batch (its analysis counts it invalid, as a replay's)."""
        buf = LiveBuffer(lookback_s=2.0, grace_s=0.5, spool=Spool(tmp_path))
        for t in range(10):
            buf.feed(M.TEL_HOST, self._p(t, cpu_pct=1.0), now_s=t)
            if t == 8:
                buf.feed(M.TEL_HOST, {**self._p(t, cpu_pct=1.0), "seq": 1, "t": 2**64 - 1}, now_s=t)
                buf.feed(M.TEL_HOST, {**self._p(t, cpu_pct=1.0), "seq": 2, "src": {"x": 1}}, now_s=t)
        buf.feed(M.BATCH_START, self._p(9.5, batch="b"), now_s=9.5)
        buf.feed(M.TEL_HOST, {**self._p(10, cpu_pct=1.0), "t": 2**64 - 1}, now_s=10)
        buf.feed(M.BATCH_END, self._p(11, batch="b"), now_s=11)
        got = [p for t, p in buf.take() if t == M.TEL_HOST]
        assert sorted(p["t"] / 1e9 for p in got if p["t"] < 2**63 and p["src"] == "x") == [7, 8, 9]
        assert [p["src"] for p in got if p["src"] != "x"] == [{"x": 1}]
        assert [p["t"] for p in got if p["t"] >= 2**63] == [2**64 - 1] * 2  # (held in arrival order)

    def test_hosts_with_far_apart_clocks_and_clock_sync_around_the_batch(self, tmp_path):
        """Two daemons whose monotonic clocks are 1000 s apart: each keeps its own look-back (pruning per
        source); clock.sync probes from before batch.start and after batch.end belong to the batch."""
        buf = LiveBuffer(lookback_s=2.0, grace_s=0.5, spool=Spool(tmp_path))
        for t in range(10):
            buf.feed(M.TEL_HOST, {**self._p(t, cpu_pct=1.0), "src": "telemetry@near"}, now_s=t)
            buf.feed(M.TEL_HOST, {**self._p(1000 + t, cpu_pct=1.0), "src": "telemetry@far"}, now_s=t)
        buf.feed(M.CLOCK_SYNC, self._p(9.2, source="telemetry@far"), now_s=9.2)
        buf.feed(M.BATCH_START, self._p(9.5, batch="b"), now_s=9.5)
        buf.feed(M.BATCH_END, self._p(11, batch="b"), now_s=11)
        buf.feed(M.CLOCK_SYNC, self._p(11.1, source="telemetry@far"), now_s=11.1)
        got = list(buf.take())
        near = sorted(p["t"] / 1e9 for t, p in got if t == M.TEL_HOST and p["src"] == "telemetry@near")
        far = sorted(p["t"] / 1e9 - 1000 for t, p in got if t == M.TEL_HOST and p["src"] == "telemetry@far")
        assert near == far == [7, 8, 9]
        assert [p["t"] / 1e9 for t, p in got if t == M.CLOCK_SYNC] == [9.2, 11.1]
        assert buf.batch is None and not buf._next

    def test_next_batch_during_grace_is_kept_for_later(self, tmp_path):
        """A batch.start arriving while the previous batch waits out its grace period is not lost."""
        buf = LiveBuffer(lookback_s=5.0, grace_s=1.0, spool=Spool(tmp_path))
        buf.feed(M.BATCH_START, self._p(1, batch="a"), now_s=1)
        buf.feed(M.BATCH_END, self._p(2, batch="a"), now_s=2)
        buf.feed(M.BATCH_START, self._p(2.1, batch="b"), now_s=2.1)
        buf.feed(M.REQ_START, self._p(2.2, rid="r"), now_s=2.2)
        first = list(buf.take())
        assert [p.get("batch") for _, p in first] == ["a", "a"]
        assert buf.open and buf.batch.events == 2 and buf.batch.batch_start["batch"] == "b"
        buf.feed(M.BATCH_END, self._p(3, batch="b"), now_s=3)
        second = list(buf.take())
        assert [t for t, _ in second] == [M.BATCH_START, M.REQ_START, M.BATCH_END]

    def test_output_dir_rules(self, tmp_path):
        """--batch wins; then config exp_dir; then config out_dir / batch id; then --out-root / batch id."""
        bs = {"batch": "experiments_3_x", "config": {"out_dir": {"value": "data", "source": "cli"}}}
        assert resolve_batch_dir(bs, tmp_path, None) == tmp_path
        assert resolve_batch_dir(bs, None, None) == Path("data") / "experiments_3_x"
        assert resolve_batch_dir({"batch": "b", "config": {"exp_dir": "d/e"}}, None, None) == Path("d/e")
        assert resolve_batch_dir({"batch": "b", "config": {}}, None, tmp_path) == tmp_path / "b"
        assert resolve_batch_dir({"batch": "b"}, None, None) is None


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is TerminateProcess on Windows: not catchable")
def test_sigterm_with_a_batch_open_removes_the_spool(tmp_path, zctx):
    """The proxy and `collector --serve` stop their live analyzer with SIGTERM while a batch is open: it
    still ends as SIGTERM ends a process, and its spool goes with it."""
    import signal
    import time

    from tests import synth as S

    spool = tmp_path / "spool"
    with live_process(zctx, "--no-outputs", "--spool-dir", str(spool)) as (proc, send):
        spec = S.Spec(duration_s=2.0, requests=[S.Req(0.5, 1.0)], batch_end=False)
        for topic, payload in S.messages(spec):
            send(topic, payload)
        deadline = time.monotonic() + 30
        while not list(spool.glob("analyzer-live-*/batch-*.msgpack")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(spool.glob("analyzer-live-*/batch-*.msgpack")), "the open batch was never spooled"
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGTERM, err.decode("utf-8", "replace")[-2000:]
        assert list(spool.iterdir()) == []
