"""Each request's row as soon as the telemetry after its end has arrived (analyzer.live_rows), and
``analyzer --live --publish-endpoint`` publishing them as ``ana.row`` over a real loopback bus."""
from __future__ import annotations

import math
import shutil
import time

import pytest

from analyzer import pipeline, stream
from analyzer.live_rows import NO_TELEMETRY, TIMED_OUT, RowTracker
from shared import messages as M
from shared.bus import Inbox, connect_sub
from shared.recording import read_recording
from tests import synth as S
from tests.conftest import free_port, watch_handshake
from tests.test_analyzer_cli import TINY, analyzer
from tests.test_analyzer_live import live_analyzer

NUMERIC_TOL = 1e-9  # float rounding only: times are counted from a different origin in a slice
# The bound's refresh-period term is fitted over the run so far (docs/analyzer.md): an early row's
# uncertainty may move in its later digits once the whole run is fitted, never its energy.
UNCERTAINTY_TOL = 1e-6
# judged against the case's other runs, which an early row has not seen yet (the final rows carry them)
AGAINST_OTHER_RUNS = ("latency_outlier", "latency_vs_twins")


def _rows_equal(early: dict, final: dict) -> list[str]:
    """Columns where the early row differs from the batch's row beyond float rounding."""
    out = []
    for k, v in final.items():
        if k in AGAINST_OTHER_RUNS:
            continue
        w = early.get(k)
        if isinstance(v, float) and isinstance(w, float):
            tol = UNCERTAINTY_TOL if "uncertainty" in k else NUMERIC_TOL
            if not math.isclose(v, w, rel_tol=tol, abs_tol=1e-12):
                out.append(f"{k}: {w} != {v}")
        elif v != w:
            out.append(f"{k}: {w!r} != {v!r}")
    return out


def _feed_all(tr: RowTracker, msgs, settle_s: float = 0.3) -> dict[str, M.AnaRow]:
    """Feed messages at the pace their stamps say; collect rows as they become due."""
    got: dict[str, M.AnaRow] = {}
    now = 0.0
    for topic, p in msgs:
        now = (p["t"] - S.T0_NS) / 1e9 if M.is_int64(p["t"]) else now  # (a hostile stamp: arrives now)
        tr.feed(topic, p, now)
        tr.tick(now)
        for row in tr.rows(tr.due(now)):
            assert row.rid not in got
            got[row.rid] = row
            got[row.rid].row["_due_at_s"] = now
    return got


def test_each_row_comes_after_its_end_with_the_replays_numbers():
    """Overlapping requests on a square-wave GPU: each row is due within the settle time of its end
    (not at batch.end) and holds the numbers the whole batch's analysis gives."""
    reqs = [S.Req(1.0, 2.5), S.Req(2.0, 4.0, model="m2"), S.Req(3.0, 3.5), S.Req(5.0, 7.2, run=1),
            S.Req(8.0, 8.05), S.Req(8.5, 9.0, warmup=True)]
    spec = S.Spec(duration_s=12.0, gpus=[S.Gpu(S.square(200.0, 80.0, 0.7))], requests=reqs)
    msgs = S.messages(spec)
    got = _feed_all(RowTracker(pipeline.Options(quality=False), settle_s=0.3), msgs)
    full = pipeline.analyze(stream.build(msgs), pipeline.Options(quality=False))
    assert sorted(got) == sorted(r["rid"] for r in full.results)  # the warm-up has no row
    for row in full.results:
        early = got[row["rid"]]
        assert early.energy_ready and early.reason is None and early.batch == spec.batch_id
        req = next(r for i, r in enumerate(reqs) if S.rid_of(spec, i, r) == row["rid"])
        assert req.b_s + 0.3 <= early.row.pop("_due_at_s") <= req.b_s + 0.35  # the next samples after settle
        assert _rows_equal(early.row, row) == []
    # the concurrency split holds: overlapping requests share the energy as in the batch's analysis
    assert got[S.rid_of(spec, 2, reqs[2])].row["concurrency_max"] == 2


def test_stamps_beyond_64_bits_move_no_row_ahead():
    """A telemetry t or a clock probe's offset beyond 64 bits (tests/synth.hostile, which the analysis
    drops) is no source's newest reading: each row is still due after the telemetry past its end, with
    the replay's numbers."""
    reqs = [S.Req(1.0, 2.5), S.Req(5.0, 7.2, run=1)]
    spec = S.Spec(duration_s=10.0, gpus=[S.Gpu(S.square(200.0, 80.0, 0.7))], requests=reqs)
    msgs = S.messages(spec)
    probe = M.Stamper("collector@synth", first_seq=500).stamp(M.ClockSync(
        source=spec.tel_src, sent_ns=S.T0_NS, received_ns=S.T0_NS, remote_ns=S.T0_NS).to_msg(), t=S.T0_NS, wall=0)
    mixed = msgs[:5] + S.hostile(msgs) + [(M.CLOCK_SYNC, {**probe, "offset_ns": 2**64 - 1})] + msgs[5:]
    got = _feed_all(RowTracker(pipeline.Options(quality=False), settle_s=0.3), mixed)
    full = pipeline.analyze(stream.build(msgs), pipeline.Options(quality=False))
    assert sorted(got) == sorted(r["rid"] for r in full.results)
    for row in full.results:
        early = got[row["rid"]]
        req = next(r for i, r in enumerate(reqs) if S.rid_of(spec, i, r) == row["rid"])
        assert early.energy_ready and req.b_s + 0.3 <= early.row.pop("_due_at_s") <= req.b_s + 0.35
        assert _rows_equal(early.row, row) == []


def _rows_without_telemetry(msgs, stale_s: float = 3.0) -> list[M.AnaRow]:
    """The events alone, to a tracker that has listened for stale_s: each row as soon as it is due."""
    tr = RowTracker(stale_s=stale_s)
    tr.tick(0.0)
    got = []
    for topic, p in (m for m in msgs if not m[0].startswith("tel.")):
        tr.feed(topic, p, stale_s)
        got += tr.rows(tr.due(stale_s))
    return got


def test_no_telemetry_row_goes_out_at_once_with_the_reason():
    spec = S.Spec(duration_s=3.0, requests=[S.Req(1.0, 1.5)])
    got = _rows_without_telemetry(S.messages(spec))
    assert len(got) == 1
    assert not got[0].energy_ready and got[0].reason == NO_TELEMETRY
    assert got[0].row["status"] == "ok" and got[0].row["latency_s"] == pytest.approx(0.5)


def test_events_ahead_of_the_first_telemetry_wait_for_it():
    """Just started: a request's events arrive before any telemetry (they come on a socket of their own).
    Its row waits for the telemetry rather than saying none is connected, and holds the energy; with no
    telemetry at all it goes out stale_s after the tracker started, with the reason."""
    spec = S.Spec(duration_s=3.0, requests=[S.Req(1.0, 1.5)])
    msgs = S.messages(spec)
    events = [m for m in msgs if not m[0].startswith("tel.")]
    tr = RowTracker(pipeline.Options(quality=False), stale_s=3.0)
    for topic, p in events:
        tr.feed(topic, p, 0.0)
    assert tr.due(0.0) == [] and tr.due(2.9) == []
    for topic, p in msgs:
        if topic.startswith("tel."):
            tr.feed(topic, p, 2.9)
    (row,) = tr.rows(tr.due(2.9))
    assert row.energy_ready and row.reason is None and row.row["gpu_count"] == 1
    alone = RowTracker(stale_s=3.0)
    for topic, p in events:
        alone.feed(topic, p, 0.0)
    assert alone.due(2.9) == []
    (due,) = alone.due(3.0)
    assert due.reason == NO_TELEMETRY


def test_telemetry_far_ahead_of_the_events_is_kept_for_them():
    """A replay at full speed: the telemetry's socket delivers seconds of stamps before the events'
    socket delivers the request that ran then (each socket is drained in turn). What arrived in the
    last stale_s stays, so the late request's row holds its GPU samples and the replay's numbers."""
    reqs = [S.Req(1.0, 1.5, warmup=True), S.Req(2.0, 2.5)]
    spec = S.Spec(duration_s=9.0, gpus=[S.Gpu(S.square(200.0, 80.0, 0.7))], requests=reqs)
    msgs = S.messages(spec)
    tr = RowTracker(pipeline.Options(quality=False), settle_s=0.3, context_s=3.0, stale_s=3.0)
    now = 10.0
    for topic, p in msgs:  # every telemetry message within 10 ms, the warm-up's events among them
        if topic.startswith("tel.") or p.get("rid") == S.rid_of(spec, 0, reqs[0]) or topic == M.BATCH_START:
            tr.feed(topic, p, now)
            now += 1e-5
        tr.tick(now)
        tr.rows(tr.due(now))  # the warm-up's (no row): then no request is open
    assert not tr.requests
    for topic, p in msgs:  # then the rest of the events, 50 ms later
        if not topic.startswith("tel.") and topic != M.BATCH_START and p.get("rid") != S.rid_of(spec, 0, reqs[0]):
            tr.feed(topic, p, now + 0.05)
    tr.tick(now + 0.05)
    (row,) = tr.rows(tr.due(now + 0.05))
    full = pipeline.analyze(stream.build(msgs), pipeline.Options(quality=False))
    (want,) = full.results
    assert row.energy_ready and row.reason is None and row.row["gpu_samples"] > 0
    assert _rows_equal(row.row, want) == []
    # later, the same telemetry is let go: stale_s after it arrived, nothing open needs it
    tr.tick(now + 3.1)
    kept = sum(len(q) for q in tr.telemetry.values())
    assert 0 < kept <= 3 * 100 * 3.5  # about context_s of a 100 Hz source (gpu, host and heartbeat messages)


def test_telemetry_that_stops_gives_a_row_after_the_timeout():
    """The daemon goes quiet just before the request ends: the row waits timeout_s, then goes out
    with the reason; while the daemon counts as connected, nothing is published early."""
    spec = S.Spec(duration_s=6.0, requests=[S.Req(1.0, 2.0)])
    msgs = [(t, p) for t, p in S.messages(spec)
            if not (t.startswith("tel.") and p["t"] > S.T0_NS + int(1.9e9))]
    tr = RowTracker(timeout_s=2.0, stale_s=10.0)
    for topic, p in msgs:
        tr.feed(topic, p, (p["t"] - S.T0_NS) / 1e9)
    assert tr.due(3.9) == []
    (due,) = tr.due(4.1)
    assert due.reason == TIMED_OUT
    (row,) = tr.rows([due])
    assert row.reason in (TIMED_OUT, None)  # the samples up to 1.9 s may still give an energy
    assert row.row["status"] == "ok"


def test_memory_is_bounded_by_time():
    """A long quiet stretch and many requests: telemetry kept is the context, not the history."""
    reqs = [S.Req(1.0 + k * 2.0, 1.5 + k * 2.0, run=k) for k in range(20)]
    spec = S.Spec(duration_s=45.0, rate_hz=50.0, requests=reqs)
    tr = RowTracker(context_s=5.0)
    got = _feed_all(tr, S.messages(spec))
    assert len(got) == 20 and all(r.energy_ready for r in got.values())
    kept = sum(len(q) for q in tr.telemetry.values())
    assert kept <= 3 * 50 * 6  # gpu + host + heartbeat messages of about context_s + settle
    assert not tr.requests and not tr.finished


@pytest.mark.slow
def test_live_analyzer_publishes_ana_row_then_final_rows(tmp_path, zctx):
    """`analyzer --live --publish-endpoint`: every request's row on the bus before batch.end arrives,
    then final rows equal to a replay's results.csv."""
    live_dir, batch_dir = tmp_path / "live" / "tiny", tmp_path / "batch" / "tiny"
    shutil.copytree(TINY, live_dir)
    shutil.copytree(TINY, batch_dir)
    _, items, _ = read_recording(TINY / "raw" / "stream.msgpack")
    pub = f"tcp://127.0.0.1:{free_port()}"
    sub = connect_sub(zctx, pub, topics=(M.ANA_ROW,))
    connected = watch_handshake(sub)
    inbox = Inbox()
    received: list[dict] = []
    end_at = None
    # the row timeout is headroom only: every request's telemetry past its end is in the recording
    with live_analyzer(zctx, "--batch", str(live_dir), "--once", "--no-quality", "--no-plots", "--grace-s", "0.5",
                       "--publish-endpoint", pub, "--row-timeout-s", "30", "--exit-after-s", "240",
                       timeout_s=240) as send:
        connected(60)  # the SUB reached the analyzer's PUB (bound once its own SUBs connected)
        for topic, payload in items:
            if topic == M.BATCH_END:
                # stop before batch.end until every request's early row is out (the recording's pace)
                deadline = time.monotonic() + 90
                rids = {p["rid"] for t, p in items if t == M.REQ_START and not p.get("warmup")}
                while {r["rid"] for r in received} < rids and time.monotonic() < deadline:
                    msg = inbox.recv(sub, timeout_ms=200)
                    if msg is not None:
                        received.append(M.AnaRow.from_msg(msg[1]).to_msg())
                end_at = len(received)
            send(topic, payload)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum(1 for r in received if r.get("final")) < end_at:
            msg = inbox.recv(sub, timeout_ms=200)
            if msg is not None:
                M.validate(msg[0], msg[1], strict=True)
                received.append(msg[1])
    sub.close(linger=0)
    early = [r for r in received[:end_at]]
    final = [r for r in received if r.get("final")]
    assert early and not any(r.get("final") for r in early)
    r = analyzer("--batch", batch_dir, "--no-quality", "--no-plots")
    assert r.returncode == 0, r.stderr
    import csv
    with open(batch_dir / "summary" / "results.csv", encoding="utf-8-sig") as f:
        replay = {row["rid"]: row for row in csv.DictReader(f)}
    assert sorted(r["rid"] for r in final) == sorted(replay) == sorted(r["rid"] for r in early)
    for row in final:
        want = replay[row["rid"]]
        assert str(row["row"]["gpu_energy_j"]) == want["gpu_energy_j"] or math.isclose(
            row["row"]["gpu_energy_j"], float(want["gpu_energy_j"]), rel_tol=1e-12)
        assert row["energy_ready"] == bool(want["gpu_energy_j"])
    finals = {r["rid"]: r["row"] for r in final}
    for r in early:  # the early rows already held the replay's numbers
        assert _rows_equal(r["row"], finals[r["rid"]]) == [], r["rid"]


def test_a_failed_request_row_says_it_failed_not_that_telemetry_is_missing():
    """A request the server answered with an error at once (a proxied 404, a 500): its row has no energy
    because it failed, and the reason says so with the error, not "no GPU telemetry"; a request without
    telemetry that failed says it failed too."""
    reqs = [S.Req(1.0, 1.004, ok=False, error="HTTP 404 from server: model 'nope' not found"), S.Req(2.0, 3.0)]
    # an energy counter that refreshes once a second: a 4 ms failure falls between two of its readings
    spec = S.Spec(duration_s=5.0, gpus=[S.Gpu(S.square(200.0, 80.0, 0.7), publish_power=False, refresh_s=1.0)],
                  requests=reqs)
    got = _feed_all(RowTracker(pipeline.Options(quality=False), settle_s=0.3), S.messages(spec))
    failed, ok = got[S.rid_of(spec, 0, reqs[0])], got[S.rid_of(spec, 1, reqs[1])]
    assert not failed.energy_ready and failed.row["status"] == "failed"
    assert failed.reason.startswith("the request failed") and "model 'nope' not found" in failed.reason, failed
    assert ok.energy_ready and ok.reason is None
    # without telemetry the failure is still the reason that matters
    by = {r.rid: r for r in _rows_without_telemetry(S.messages(spec))}
    assert "model 'nope' not found" in by[failed.rid].reason and by[ok.rid].reason == NO_TELEMETRY


def test_the_final_row_of_a_failed_request_says_it_failed():
    """At batch.end the batch's rows go out again (final): a failed request's reason is its failure."""
    from analyzer.live_service import LiveService

    class Rows:  # the live page's side: what it is handed
        def __init__(self):
            self.rows = []

        def on_row(self, row):
            self.rows.append(row)

        def on_batch(self, analysis):
            pass

    reqs = [S.Req(1.0, 1.004, ok=False, error="HTTP 404 from server: model 'nope' not found"), S.Req(2.0, 3.0)]
    spec = S.Spec(duration_s=5.0, requests=reqs)
    # no telemetry at all: neither row has energy; only the failed one blames its failure
    msgs = [m for m in S.messages(spec) if not m[0].startswith("tel.")]
    analysis = pipeline.analyze(stream.build(msgs), pipeline.Options(quality=False))
    seen = Rows()
    LiveService(RowTracker(), viewer=seen).on_analysis(analysis)
    by = {r.rid: r for r in seen.rows}
    failed = by[S.rid_of(spec, 0, reqs[0])]
    assert failed.final and not failed.energy_ready
    assert failed.reason.startswith("the request failed") and "model 'nope' not found" in failed.reason, failed.reason
    assert "the request failed" not in by[S.rid_of(spec, 1, reqs[1])].reason


def test_the_live_page_is_handed_only_what_the_contract_allows():
    """A message the contract refuses (a wall that is a map, tests/synth.hostile's) goes neither to the
    row tracker nor to the live page's state: the listener goes on, the page shows the good ones."""
    from analyzer.live_page import PageHub
    from analyzer.live_service import LiveService

    msgs = S.messages(S.Spec(duration_s=2.0, requests=[S.Req(0.5, 1.0)]))
    gpu = next(p for t, p in msgs if t == M.TEL_GPU)
    bad = S.hostile(msgs) + [(M.TEL_GPU, {**gpu, "seq": 10**6, "wall": {"x": 1}})]
    hub = PageHub()
    service = LiveService(RowTracker(), viewer=hub)
    for topic, p in bad + msgs:
        service.on_message(topic, p, 1.0)
    assert list(hub.state.gpus) == ["synth/GPU-synth-0"] and hub.state.telemetry_gaps == {"telemetry@synth": (
        max(p["seq"] for t, p in msgs if t.startswith("tel.")), 0)}
