"""What ``analyzer --live`` does besides the batch analysis: each request's row as soon as its energy
is known (analyzer.live_rows), published on the bus as ``ana.row`` and handed to the live page; the
batch's own rows again at batch.end, marked final. Thin glue between run_live's callbacks."""
from __future__ import annotations

from typing import Any, Callable, Protocol

from analyzer.live_rows import RowTracker, clean_row, failed_reason
from shared import messages as M
from shared.bus import Publisher
from shared.logs import get_logger

log = get_logger("analyzer.live_service")


class Viewer(Protocol):
    """The live page's side (analyzer.live_page.PageHub): fed from the receive loop's thread."""

    def ready(self) -> None:
        """The bus sockets are connected: bind the publisher and say where the page is (a parent
        process waits for the endpoint or for this line)."""
        if self._publish is not None and self.publisher is None:
            self.publisher = self._publish()
        if self.server is not None and self.server.url:
            print(f"live page: {self.server.url}", flush=True)

    def on_message(self, topic: str, payload: dict[str, Any], now_s: float) -> None: ...
    def on_row(self, row: M.AnaRow) -> None: ...
    def on_batch(self, analysis) -> None: ...
    def on_tick(self, now_s: float, in_flight: list[dict[str, Any]]) -> None: ...


class LiveService:
    def __init__(self, tracker: RowTracker, publisher: Publisher | None = None, viewer: Viewer | None = None,
                 server=None, publish: Callable[[], Publisher] | None = None):
        self.tracker = tracker
        self._publish = publish  # makes the publisher once the bus sockets are connected (ready)
        self.server = server  # the live page's PageServer, stopped at close
        self.publisher = publisher
        self.viewer = viewer
        self.published = 0

    def ready(self) -> None:
        """The bus sockets are connected: bind the publisher and say where the page is (a parent
        process waits for the endpoint or for this line)."""
        if self._publish is not None and self.publisher is None:
            self.publisher = self._publish()
        if self.server is not None and self.server.url:
            print(f"live page: {self.server.url}", flush=True)

    def on_message(self, topic: str, payload: dict[str, Any], now_s: float) -> None:
        if not self.tracker.feed(topic, payload, now_s):  # (the page reads only what the contract allows)
            return
        if self.viewer is not None:
            self.viewer.on_message(topic, payload, now_s)

    def on_tick(self, now_s: float) -> None:
        self.tracker.tick(now_s)
        for row in self.tracker.rows(self.tracker.due(now_s)):
            self._emit(row)
        if self.viewer is not None:
            self.viewer.on_tick(now_s, self.tracker.in_flight())

    def on_analysis(self, analysis) -> None:
        """The batch's analysis at batch.end: its rows replace the early ones (final = a replay's)."""
        self.tracker.forget([r["rid"] for r in analysis.results + analysis.warmups])
        for row in analysis.results:  # warm-ups are not results: no row for them, early or final
            ready = row.get("gpu_energy_j") is not None
            reason = None if ready else (row.get("error") if row.get("status") == "incomplete"
                                         else failed_reason({"ok": row.get("status") != "failed", **row})
                                         or "no GPU energy for this request in the batch's analysis")
            self._emit(M.AnaRow(rid=str(row["rid"]), batch=analysis.batch_id, row=clean_row(row), energy_ready=ready,
                                reason=reason, final=True))
        if self.viewer is not None:
            self.viewer.on_batch(analysis)

    def close(self) -> None:
        """Let the last rows leave (up to 2 s) before the context goes."""
        if self.publisher is not None:
            self.publisher.sock.close(linger=2000)
        if self.server is not None:
            self.server.stop()

    def _emit(self, row: M.AnaRow) -> None:
        if self.publisher is not None:
            self.publisher.publish(M.ANA_ROW, row.to_msg())
        self.published += 1
        log.info("live_row", rid=row.rid, energy_ready=row.energy_ready, reason=row.reason, final=bool(row.final),
                 gpu_energy_j=row.row.get("gpu_energy_j"))
        if self.viewer is not None:
            self.viewer.on_row(row)
