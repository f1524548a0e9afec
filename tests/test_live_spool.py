"""``analyzer --live`` keeps an open batch in a spool file (analyzer.live_spool), not in memory: what it
holds does not grow with the time a batch stays open, the batch read back from the spool is the batch
the message list gave (array for array), the spool goes after use, and a killed live analyzer's
leftover is removed by the next one without touching a running one's."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analyzer import stream
from analyzer.live import LiveBuffer
from analyzer.live_spool import PREFIX, Spool, is_stale, remove_stale
from shared import messages as M
from tests import synth as S
from tests.test_analyzer_columnar import assert_same_telemetry, clock_items, messy_items

ROOT = Path(__file__).resolve().parent.parent
T0 = 10**12


class _Feed:
    """An open batch's bus traffic: 2 GPUs at ``hz``, the host at hz/10, a heartbeat a second, a 2-s
    request every 10 s; ``until(minutes)`` feeds it into the buffer up to that time."""

    def __init__(self, buf: LiveBuffer, hz: int = 20):
        self.buf, self.hz, self.k = buf, hz, 0
        self.tel, self.col = M.Stamper("telemetry@feed"), M.Stamper("collector@feed")
        self.sent = self.events = 0

    def send(self, stamper, topic, body, t_s):
        t = T0 + int(t_s * 1e9)
        self.buf.feed(topic, stamper.stamp(body, t=t, wall=t), now_s=t_s)
        self.sent += 1
        self.events += not topic.startswith("tel.")

    def until(self, minutes: float) -> None:
        while self.k / self.hz < minutes * 60:
            k, t = self.k, self.k / self.hz
            for gpu in (0, 1):
                self.send(self.tel, M.TEL_GPU, {"gpu": gpu, "uuid": f"GPU-{gpu}", "power_mw": 100_000.0 + k % 7,
                                                "energy_mj": 5 * k, "power_kind": "instant"}, t)
            if k % 10 == 0:
                self.send(self.tel, M.TEL_HOST, {"cpu_pct": 20.0}, t)
            if k % self.hz == 0:
                self.send(self.tel, M.TEL_HB, {"gpu_source": "nvml", "gpus": 2}, t)
            if k % (10 * self.hz) == 5:
                self.send(self.col, M.REQ_START, {"rid": f"r{k}", "model": "m", "task": "qa"}, t)
            if k % (10 * self.hz) == 2 * self.hz + 5:
                self.send(self.col, M.REQ_END, {"rid": f"r{k - 2 * self.hz}", "ok": True, "text": "x" * 500}, t)
            self.k += 1


def test_open_batch_holds_the_lookback_not_the_hours(tmp_path):
    """An hour of an open batch holds what five minutes hold (the look-back per source); the rest is in
    the spool file, every message once. (Counts, not a timing: the bench measures the bytes.)"""
    buf = LiveBuffer(lookback_s=10.0, grace_s=0.5, spool=Spool(tmp_path))
    feed = _Feed(buf)
    feed.until(0.5)  # before the batch: the look-back fills
    lookback = buf.held()
    assert 0 < lookback <= (10 * 20 + 1) * 2 + 21 + 11  # 10 s of 2 GPUs at 20 Hz, the host at 2 Hz, heartbeats
    buf.feed(M.BATCH_START, feed.col.stamp({"batch": "b"}, t=T0 + 30 * 10**9, wall=1), now_s=30.0)
    sent_before, events_before = feed.sent, feed.events
    feed.until(5)
    held_5min = buf.held()
    feed.until(60)
    assert buf.held() == held_5min <= lookback + 2
    assert buf.batch.messages == lookback + 1 + feed.sent - sent_before
    buf.feed(M.BATCH_END, feed.col.stamp({"batch": "b"}, t=T0 + 3600 * 10**9, wall=1), now_s=3600.0)
    batch = buf.take()
    assert batch.events == 2 + feed.events - events_before and feed.events > 600 and buf.dropped_events == events_before
    assert batch.path.stat().st_size > 100 * feed.sent  # the hour is on disk instead


def _order_for_live(items: list) -> list:
    """The batch's messages as a live analyzer would hear them from the start: batch.start first,
    batch.end last (a message after batch.end belongs to the grace period or the next batch)."""
    start = [m for m in items if m[0] == M.BATCH_START]
    end = [m for m in items if m[0] == M.BATCH_END]
    rest = [m for m in items if m[0] not in (M.BATCH_START, M.BATCH_END)]
    return start + rest + end


@pytest.mark.parametrize("case", ["tiny", "clock", "messy"])
def test_spooled_batch_is_the_message_lists_batch(tmp_path, case):
    """The BatchData read back from the spool (analyzer.columnar, as --batch) equals stream.build on the
    messages the live analyzer used to keep in memory: duplicates, invalid messages, a remote clock."""
    items = {"tiny": lambda: S.messages(S.tiny_spec()), "clock": clock_items, "messy": messy_items}[case]()
    items = _order_for_live(items)
    buf = LiveBuffer(lookback_s=120.0, grace_s=0.5, spool=Spool(tmp_path))
    for k, (topic, payload) in enumerate(items):
        buf.feed(topic, payload, now_s=k * 1e-3)
    assert buf.ready(len(items))
    batch = buf.take()
    assert len(list(batch)) == len(items)
    assert_same_telemetry(stream.build(items, 120.0), batch.data(120.0))


def test_lookback_before_the_batch_is_cut_as_a_replay_cuts_it(tmp_path):
    """The batch opens 3 s into the stream with a 1-s look-back: what the buffer kept from before, pruned
    per source on its own clock, is what stream.scope keeps on the collector's clock."""
    spec = S.Spec(duration_s=6.0, rate_hz=50.0, requests=[S.Req(3.5, 4.5), S.Req(4.8, 5.5, run=1)])
    items = S.messages(spec)
    start = next(m for m in items if m[0] == M.BATCH_START)
    opened = S.T0_NS + 3 * 10**9
    start = (M.BATCH_START, {**start[1], "t": opened})
    live = [m for m in items if m[0] != M.BATCH_START]
    cut = next(i for i, m in enumerate(live) if m[1]["t"] > opened)
    live = live[:cut] + [start] + live[cut:]
    buf = LiveBuffer(lookback_s=1.0, grace_s=0.5, spool=Spool(tmp_path))
    for topic, payload in live:
        buf.feed(topic, payload, now_s=(payload["t"] - S.T0_NS) / 1e9)
    batch = buf.take()
    fed_in_batch = len(list(batch))
    assert fed_in_batch <= len(live) - 190  # about the first 2 s were pruned, not spooled
    assert_same_telemetry(stream.build(live, 1.0), batch.data(1.0))


def test_batch_start_without_end_keeps_the_telemetry_only(tmp_path):
    buf = LiveBuffer(lookback_s=5.0, grace_s=1.0, spool=Spool(tmp_path))
    p = lambda t, **b: {"v": 1, "src": "x", "seq": int(t * 1000), "t": int(t * 1e9), "wall": 0, **b}  # noqa: E731
    buf.feed(M.BATCH_START, p(1, batch="a"), now_s=1)
    buf.feed(M.TEL_HOST, p(1.5, cpu_pct=1.0), now_s=1.5)
    buf.feed(M.REQ_START, p(1.6, rid="r"), now_s=1.6)
    old = buf.batch.path
    buf.feed(M.BATCH_START, p(2, batch="b"), now_s=2)
    buf.feed(M.BATCH_END, p(3, batch="b"), now_s=3)
    batch = buf.take()
    assert [(t, m.get("batch")) for t, m in batch] == [(M.TEL_HOST, None), (M.BATCH_START, "b"), (M.BATCH_END, "b")]
    assert not old.exists() and batch.batch_start["batch"] == "b"


def test_spool_goes_after_use(tmp_path):
    spool = Spool(tmp_path)
    buf = LiveBuffer(lookback_s=5.0, grace_s=1.0, spool=spool)
    buf.feed(M.BATCH_START, {"v": 1, "src": "c", "seq": 0, "t": 1, "wall": 0, "batch": "a"}, now_s=0)
    batch = buf.take()
    assert batch.path.is_file() and batch.path.parent.name.startswith(PREFIX)
    batch.remove()
    assert not batch.path.exists()
    buf.feed(M.BATCH_START, {"v": 1, "src": "c", "seq": 1, "t": 2, "wall": 0, "batch": "b"}, now_s=0)
    buf.close()  # at exit, with a batch open
    assert list(tmp_path.iterdir()) == []


def test_unwritable_spool_is_reported_not_raised(tmp_path):
    """A spool directory that cannot be made (here: a file is in the way) costs the batch's analysis,
    with a message naming the path and the fix, never the live analyzer."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    buf = LiveBuffer(lookback_s=5.0, grace_s=1.0, spool=Spool(blocker))
    buf.feed(M.BATCH_START, {"v": 1, "src": "c", "seq": 0, "t": 1, "wall": 0, "batch": "a"}, now_s=0)
    buf.feed(M.TEL_HOST, {"v": 1, "src": "t", "seq": 0, "t": 2, "wall": 0, "cpu_pct": 1.0}, now_s=0)
    batch = buf.take()
    assert "--spool-dir" in batch.problem and str(blocker) in batch.problem
    with pytest.raises(OSError, match="spool"):
        batch.data(120.0)
    buf.close()


def test_killed_live_analyzers_leftover_is_removed_by_the_next(tmp_path):
    """A process killed with a batch open leaves its spool directory; the next one removes it (its pid is
    gone), and leaves alone a running process's directory and anything not a spool."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom analyzer.live_spool import Spool\n"
            "b = Spool(Path(sys.argv[1])).open_batch()\nb.write('tel.host', {'t': 1})\nb._writer.flush()\n"
            "print('SPOOL', b.path, flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("SPOOL "):  # (its log lines come first)
            line = proc.stdout.readline()
            assert line, "the child exited before it opened its spool"
        path = Path(line[len("SPOOL "):].strip())
        assert path.is_file()
        assert not is_stale(path.parent.name)  # running: not touched
        assert remove_stale(tmp_path) == 0 and path.is_file()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    mine = Spool(tmp_path)
    mine.open_batch().close()  # a running analyzer's directory (this process)
    reused = tmp_path / f"{PREFIX}{os.getpid()}-{int((time.time() - 86400) * 1000)}-x"  # this pid, another start
    reused.mkdir()
    other = tmp_path / "analyzer-live-notes"
    other.mkdir()
    assert remove_stale(tmp_path) == 2
    assert not path.parent.exists() and not reused.exists()
    assert mine.dir.is_dir() and other.is_dir()
    kept = mine.dir
    mine.close()
    assert not kept.exists()
