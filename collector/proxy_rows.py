"""The measuring proxy's request rows: what it knows of each request itself, the live analyzer's
``ana.row`` rows gathered from the bus, and the lookup's answer (pure) from both."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import zmq

from analyzer.throughput import throughput, timing, token_latency
from shared import messages as M
from shared.bus import ANALYSIS_ENDPOINT, CurveKeys, Inbox, connect_sub
from shared.bus import analysis_endpoint as bus_analysis_endpoint
from shared.logs import get_logger

log = get_logger("collector.proxy")

ANA_ROW = M.ANA_ROW  # the live analyzer's per-request rows (shared/messages.py)
# shared.bus's: 5560 (5558 is the telemetry daemon's clock probe, its port + 2)
DEFAULT_ANALYSIS_ENDPOINT = ANALYSIS_ENDPOINT
NO_TELEMETRY_REASON = "no telemetry connected (the proxy runs with --no-telemetry)"


def analysis_endpoint() -> str:
    return bus_analysis_endpoint()


MAX_KEPT = 100_000  # finished requests (and published rows) the lookup remembers; the oldest go first


def bound(d: dict) -> None:
    while len(d) > MAX_KEPT:
        d.pop(next(iter(d)))


class RowBook:
    """The live analyzer's ``ana.row`` messages by rid, gathered by a thread on a SUB socket."""

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: CurveKeys | None = None):
        self.endpoint = endpoint
        self.rows: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._sock = connect_sub(ctx, endpoint, topics=(ANA_ROW,), curve=curve)
        self._thread = threading.Thread(target=self._loop, name="ana-rows", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        inbox = Inbox()
        try:
            while not self._stop.is_set():
                for topic, payload in inbox.drain(self._sock, timeout_ms=50):
                    if topic == ANA_ROW and isinstance(payload.get("rid"), str):
                        self.rows[payload["rid"]] = payload
                        bound(self.rows)
        except zmq.ZMQError as exc:
            if not self._stop.is_set():
                log.error("rows_loop_failed", error=str(exc))
        finally:
            self._sock.close(linger=0)

    def get(self, rid: str) -> dict[str, Any] | None:
        return self.rows.get(rid)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Entry:
    """One proxied generation as the lookup sees it."""
    rid: str
    start: dict[str, Any]
    firsts: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    ended_s: float | None = None       # shared.timebase seconds at its end (the row wait counts from it)
    row: dict[str, Any] | None = None  # what the proxy itself knows of its row (no energy)


def local_row(e: Entry) -> dict[str, Any]:
    """The row's timing and token columns from the request's own events, by the analyzer's formulas."""
    start = M.parse(M.REQ_START, e.start)
    end = M.parse(M.REQ_END, e.end) if e.end is not None else None
    firsts = [M.parse(M.REQ_FIRST_TOKEN, f) for f in e.firsts]
    tm = timing(start, end, firsts)
    tp = throughput(end, tm["latency_s"], tm["first_token_s"], tm["first_chunk_s"])
    lat, _ = token_latency(start, end, tm, tp["output_tokens"])
    row = {"rid": e.rid, "model": start.model, "task": start.task, "load": start.load,
           "ok": end.ok if end else None, "error": end.error if end else None,
           "error_kind": end.error_kind if end else None, "served_model": end.served_model if end else None}
    row.update(tm)
    row.update(tp)
    row.update(lat)
    return row


def lookup_answer(rid: str, e: Entry | None, batch_id: str, telemetry: bool, published: dict[str, Any] | None,
                  child_exit: int | None, now_s: float, row_wait_s: float) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of ``GET /_genai_power/requests/{rid}``: 404 for an unknown id; 202 while the
    request runs, or while its analysed row has not come and ``row_wait_s`` has not passed since its end;
    else 200 with the row (the live analyzer's merged over the proxy's own), ``energy_ready`` and, without
    energy, the reason."""
    if e is None:
        return 404, {"error": f"no request {rid!r} passed this proxy run", "rid": rid}
    if e.row is None:
        return 202, {"rid": rid, "status": "in progress", "retry_after_s": 0.5}
    base = {"rid": rid, "batch": batch_id}
    if not telemetry:
        return 200, {**base, "row": e.row, "energy_ready": False, "reason": NO_TELEMETRY_REASON}
    if published is not None:
        out = {**base, "row": {**e.row, **(published.get("row") or {})},
               "energy_ready": bool(published.get("energy_ready"))}
        if published.get("reason"):
            out["reason"] = published["reason"]
        return 200, out
    waited = now_s - (e.ended_s if e.ended_s is not None else now_s)
    if child_exit is None and waited < row_wait_s:
        return 202, {"rid": rid, "status": "waiting for the telemetry after the request's end", "retry_after_s": 0.5}
    reason = (f"the live analyzer exited (code {child_exit}); no energy for this request" if child_exit is not None
              else f"no analysed row from the live analyzer within {row_wait_s:g} s after the end")
    return 200, {**base, "row": e.row, "energy_ready": False, "reason": reason}
