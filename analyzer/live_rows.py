"""Each request's row as soon as the telemetry after its end has arrived (``analyzer --live``).

The batch's analysis waits for batch.end (and the proxy has none until Ctrl-C), so the live analyzer
also finishes requests one by one: when every connected telemetry source has sent samples past a
request's end (plus ``settle_s``, so the energy counter has refreshed after it), or ``timeout_s``
after its req.end arrived (at once when no source is connected: none heard for ``stale_s``, which
takes ``stale_s`` of listening to know, since the events come on a socket of their own and may
overtake the telemetry that covers them), the request is analysed by the same pipeline as a replay,
on a slice of the stream: the telemetry from ``context_s`` before the earliest start among the
requests that overlap it, and those requests (ones still running get an end just after it, which
gives the same concurrency split inside its window). Rows computed so can differ from the batch-end analysis only
where the batch fits something over the whole run (the counter's refresh period, noise); the
batch-end rows are published again with ``final`` and equal a replay's results.csv.

Pure apart from the clock passed in: ``feed`` every bus message, ``due(now_s)`` says which requests
are ready, ``rows(due)`` analyses them. Memory is bounded by time: telemetry older than the oldest
running request (or ``max_keep_s``) is pruned, but never before ``stale_s`` of listening after it
arrived (a request's req.start may still be on the events' socket), and finished requests are
forgotten once nothing running overlaps them.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from analyzer import clock, pipeline
from analyzer.stream import build
from shared import messages as M
from shared.logs import get_logger

log = get_logger("analyzer.live_rows")

Message = tuple[str, dict[str, Any]]
TELEMETRY_TOPICS = (M.TEL_GPU, M.TEL_HOST, M.TEL_HB)
NO_TELEMETRY = "no telemetry connected"
TIMED_OUT = "timed out waiting for telemetry after the end"
NO_GPU = "no GPU telemetry in the request's window"


def failed_reason(end: dict[str, Any] | None) -> str | None:
    """Why a failed request has no energy: its failure, not the telemetry (a fast 404 has no window to
    measure); None for a request that did not fail."""
    if end is None or end.get("ok") is not False:
        return None
    why = end.get("error") or end.get("error_kind") or "no reason given"
    kind = end.get("error_kind")
    return f"the request failed ({kind}: {why})" if kind and kind != why else f"the request failed ({why})"


class _Refused(ValueError):
    """The slice's clocks cannot be joined (as analyzer.clock.refused): rows go out without figures."""


@dataclass
class Due:
    rid: str
    reason: str | None  # None: the telemetry after the end arrived


@dataclass
class _Req:
    start: dict[str, Any]
    firsts: list[dict[str, Any]]
    end: dict[str, Any] | None = None
    end_seen_s: float | None = None  # local clock when req.end arrived (for the timeout)
    batch: str | None = None


def clean_value(v: Any) -> Any:
    """A row value msgpack and JSON both carry: numpy scalars as Python, NaN/inf as nil."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, (list, tuple)):
        return [clean_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): clean_value(x) for k, x in v.items()}
    return v


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    return {str(k): clean_value(v) for k, v in row.items()}


class RowTracker:
    def __init__(self, opts: pipeline.Options | None = None, *, settle_s: float = 0.3, timeout_s: float = 5.0,
                 context_s: float = 3.0, stale_s: float = 3.0, max_keep_s: float = 600.0,
                 lookback_s: float = 120.0):
        base = opts or pipeline.Options()
        # no quality here (it runs at batch.end); no idle baseline (it is measured before the batch's
        # first request, which a slice does not hold)
        self.opts = dataclasses.replace(base, quality=False, progress=False, idle_baseline=False,
                                        log_skipped_quality=False)
        self.settle_ns = int(settle_s * 1e9)
        self.timeout_s = timeout_s
        self.context_ns = int(context_s * 1e9)
        self.stale_s = stale_s
        self.max_keep_ns = int(max_keep_s * 1e9)
        self.lookback_s = lookback_s
        self.telemetry: dict[str, deque[Message]] = {}   # per telemetry publisher, in arrival order
        self.arrived_s: dict[str, deque[float]] = {}      # local time each of those arrived
        self.newest_t: dict[str, int] = {}                # newest t per telemetry publisher (its clock)
        self.seen_s: dict[str, float] = {}                # local time its last message arrived
        self.since_s: float | None = None                 # local time this tracker was first fed or ticked
        self.now_s = 0.0                                  # local time it was last fed or ticked
        self.offset_ns: dict[str, int] = {}               # its clock minus the collector's (clock.sync)
        self.clock_syncs: deque[Message] = deque(maxlen=64)
        self.batch_start: dict[str, Any] | None = None
        self.requests: dict[str, _Req] = {}               # started, not yet published
        self.finished: dict[str, tuple[int, int]] = {}    # published: (start t, end t), for concurrency

    # -- input -------------------------------------------------------------------------------
    def feed(self, topic: str, payload: dict[str, Any], now_s: float) -> bool:
        """Take one message; False when the contract refuses it (the analysis drops it too): it moves no
        source's newest t and is no source."""
        self._listening(now_s)
        try:
            M.validate(topic, payload)
        except M.MessageError:
            return False
        if topic in TELEMETRY_TOPICS:
            src = str(payload.get("src"))
            self.telemetry.setdefault(src, deque()).append((topic, payload))
            self.arrived_s.setdefault(src, deque()).append(now_s)
            t = payload.get("t")
            if isinstance(t, int):
                self.newest_t[src] = max(self.newest_t.get(src, t), t)
            self.seen_s[src] = now_s
        elif topic == M.CLOCK_SYNC:
            self.clock_syncs.append((topic, payload))
            if isinstance(payload.get("offset_ns"), int) and payload.get("source"):
                self.offset_ns[str(payload["source"])] = payload["offset_ns"]
        elif topic == M.BATCH_START:
            self.batch_start = payload
        elif topic == M.REQ_START and payload.get("rid") is not None:
            rid = str(payload["rid"])
            self.requests[rid] = _Req(payload, [], batch=self.batch_id())
            self.finished.pop(rid, None)
        elif topic == M.REQ_FIRST_TOKEN:
            req = self.requests.get(str(payload.get("rid")))
            if req is not None and req.end is None:
                req.firsts.append(payload)
        elif topic == M.REQ_END:
            req = self.requests.get(str(payload.get("rid")))
            if req is not None and req.end is None:
                req.end, req.end_seen_s = payload, now_s
        return True

    def batch_id(self) -> str | None:
        return str(self.batch_start["batch"]) if self.batch_start and self.batch_start.get("batch") else None

    def in_flight(self) -> list[dict[str, Any]]:
        """req.start payloads of the requests without req.end (for the live page)."""
        return [r.start for r in self.requests.values() if r.end is None]

    def forget(self, rids) -> None:
        """The batch's analysis published these (final rows): no provisional row after it."""
        for rid in rids:
            req = self.requests.pop(rid, None)
            if req is not None and req.end is not None:
                self.finished[rid] = (req.start["t"], req.end["t"])

    # -- readiness -----------------------------------------------------------------------------
    def _listening(self, now_s: float) -> float:
        """Seconds since this tracker first heard anything (its start, for the receive loop's ticks)."""
        if self.since_s is None:
            self.since_s = now_s
        self.now_s = max(self.now_s, now_s)
        return now_s - self.since_s

    def _live_sources(self, now_s: float) -> list[str]:
        return [s for s, seen in self.seen_s.items() if now_s - seen <= self.stale_s]

    def due(self, now_s: float) -> list[Due]:
        """Requests whose row can be computed now, in end order."""
        live = self._live_sources(now_s)
        out = []
        for rid, req in self.requests.items():
            if req.end is None:
                continue
            end_t = req.end["t"] + self.settle_ns
            if not live:
                # silence means "no telemetry" only after stale_s of it: a daemon's first samples may
                # still be on their way (its socket is not the events' one)
                if self._listening(now_s) >= self.stale_s:
                    out.append(Due(rid, NO_TELEMETRY))
            elif all(self.newest_t.get(s, 0) - self.offset_ns.get(s, 0) >= end_t for s in live):
                out.append(Due(rid, None))
            elif now_s - (req.end_seen_s or now_s) >= self.timeout_s:
                out.append(Due(rid, TIMED_OUT))
        out.sort(key=lambda d: (self.requests[d.rid].end["t"], d.rid))
        return out

    # -- analysis ------------------------------------------------------------------------------
    def rows(self, due: list[Due]) -> list[M.AnaRow]:
        """Analyse the due requests (one pipeline run over their slice) and forget them."""
        if not due:
            return []
        rids = [d.rid for d in due]
        mine = [self.requests[r] for r in rids]
        lo = min(r.start["t"] for r in mine)
        hi = max(r.end["t"] for r in mine)
        items: list[Message] = []
        synthetic_end = hi + 1
        for rid, req in self.requests.items():
            a = req.start["t"]
            b = req.end["t"] if req.end is not None else None
            if a > hi or (b is not None and b < lo) or rid in rids:
                continue
            # a neighbour: only its window matters (the concurrency split inside ours)
            items.append((M.REQ_START, _stub(req.start, M.REQ_START, rid, a)))
            items.append((M.REQ_END, _stub(req.start, M.REQ_END, rid, b if b is not None else synthetic_end)))
        for rid, (a, b) in self.finished.items():
            if a <= hi and b >= lo and rid not in rids:
                items.append((M.REQ_START, _stub(None, M.REQ_START, rid, a)))
                items.append((M.REQ_END, _stub(None, M.REQ_END, rid, b)))
        for req in mine:
            items.append((M.REQ_START, req.start))
            items.extend((M.REQ_FIRST_TOKEN, p) for p in req.firsts)
            items.append((M.REQ_END, req.end))
            lo = min(lo, req.start["t"])
        cut = lo - self.context_ns
        for src, q in self.telemetry.items():
            off = self.offset_ns.get(src, 0)
            items.extend(m for m in q if m[1].get("t", 0) - off >= cut)
        items.extend(self.clock_syncs)
        if self.batch_start is not None and self.batch_start.get("t", 0) <= hi:
            items.append((M.BATCH_START, self.batch_start))
        by_rid: dict[str, dict] = {}
        try:
            data = build(items, self.lookback_s)
            too_far = clock.refused(data.clock)
            if too_far:  # as the batch analysis: no figures rather than wrong ones
                raise _Refused("clock mapping too uncertain: " + "; ".join(too_far))
            analysis = pipeline.analyze(data, self.opts)
            by_rid = {row["rid"]: row for row in analysis.results}
        except Exception as exc:  # one odd slice must not stop the live analyzer: rows without figures
            if isinstance(exc, _Refused):
                log.warning("live_row_refused", rids=rids[:5], problem=str(exc))
            else:
                log.exception("live_row_failed", rids=rids[:5])
            failure = f"analysis failed: {exc}"
        else:
            failure = None
        out = []
        for d, req in zip(due, mine):
            if req.start.get("warmup"):
                continue  # not a result (results.csv leaves warm-ups out too)
            row = by_rid.get(d.rid)
            if row is None:
                row = {"rid": d.rid, "model": req.start.get("model"), "task": req.start.get("task")}
            ready = row.get("gpu_energy_j") is not None
            reason = None if ready else (failure or failed_reason(req.end) or d.reason or NO_GPU)
            out.append(M.AnaRow(rid=d.rid, batch=req.batch, row=clean_row(row), energy_ready=ready, reason=reason))
        self.forget(rids)
        self._prune()
        return out

    def _prune(self) -> None:
        """Drop telemetry nothing running can need (and anything older than ``max_keep_s``), and
        finished requests that no running request overlaps. Telemetry that arrived in the last
        ``stale_s`` stays whatever its stamp: the events come on a socket of their own and may lag
        it, so a request not yet started here may have run then (a replay at full speed sends
        minutes of stamps in that time)."""
        open_starts = [r.start["t"] for r in self.requests.values()]
        oldest = min(open_starts) if open_starts else None
        recent = self.now_s - self.stale_s
        for src, q in self.telemetry.items():
            arrived = self.arrived_s[src]
            newest = self.newest_t.get(src, 0)
            need = newest if oldest is None else min(oldest + self.offset_ns.get(src, 0), newest)
            horizon = max(newest - self.max_keep_ns, need - self.context_ns)
            while q and q[0][1].get("t", 0) < horizon and arrived[0] < recent:
                q.popleft()
                arrived.popleft()
        for rid, (_, b) in list(self.finished.items()):
            if oldest is None or b < oldest:
                del self.finished[rid]

    def tick(self, now_s: float) -> None:
        """Prune by time (called from the receive loop every poll)."""
        self._listening(now_s)
        self._prune()


def _stub(start: dict[str, Any] | None, topic: str, rid: str, t: int) -> dict[str, Any]:
    """A neighbour request's start or end: its window only, marked warm-up so it makes no row."""
    src = "live-neighbour@analyzer"
    seq = -1 if topic == M.REQ_START else -2  # never equal to a real message's (src, seq, t)
    body = {"v": M.SCHEMA_VERSION, "src": src, "seq": seq, "t": int(t), "wall": 0, "rid": rid}
    if topic == M.REQ_START:
        body["warmup"] = True
    else:
        body["ok"] = True
    return body
