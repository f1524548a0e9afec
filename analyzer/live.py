"""``--live``: subscribe to the telemetry and collector endpoints and analyse each batch when its
batch.end arrives. The buffering rule is pure (LiveBuffer); the socket loop is thin (run_live)."""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Callable

import zmq

from analyzer.stream import DEFAULT_LOOKBACK_S, TELEMETRY
from shared import timebase
from shared import messages as M
from shared.bus import CurveKeys, Subscriptions
from shared.logs import get_logger

log = get_logger("analyzer.live")

Message = tuple[str, dict[str, Any]]


class LiveBuffer:
    """Keeps telemetry for ``lookback_s`` before a batch and everything during it.

    ``feed`` returns nothing; after a batch.end, ``ready(now_s)`` becomes true once ``grace_s``
    has passed (telemetry from the other socket may still be in flight), and ``take()`` hands
    over the batch's messages. stream.scope() then cuts them exactly as a replay would.
    """

    def __init__(self, lookback_s: float = DEFAULT_LOOKBACK_S, grace_s: float = 1.0):
        self.lookback_ns = int(lookback_s * 1e9)
        self.grace_s = grace_s
        self.telemetry: deque[Message] = deque()
        self.events: list[Message] = []
        self.open = False
        self.ended_at_s: float | None = None
        self.dropped_events = 0
        self._newest: dict[str, int] = {}  # newest t per publisher
        self._next: list[tuple[str, dict[str, Any], float]] = []  # events that came during the grace period

    def feed(self, topic: str, payload: dict[str, Any], now_s: float) -> None:
        # clock.sync travels with telemetry: the collector probes before batch.start and after batch.end
        kept = topic in TELEMETRY or topic in (M.TEL_HB, M.CLOCK_SYNC)
        if self.ended_at_s is not None and not kept:
            self._next.append((topic, payload, now_s))  # belongs to the next batch
            return
        if kept:
            self.telemetry.append((topic, payload))
            src = str(payload.get("src"))
            self._newest[src] = max(self._newest.get(src, 0), payload.get("t", 0))
            if not self.open:
                # per source: each host's monotonic clock is its own (mapped only at analysis)
                while self.telemetry:
                    head = self.telemetry[0][1]
                    if head.get("t", 0) >= self._newest.get(str(head.get("src")), 0) - self.lookback_ns:
                        break
                    self.telemetry.popleft()
            return
        if topic == M.BATCH_START:
            if self.open and self.events and self.events[0][1].get("batch") != payload.get("batch"):
                log.warning("batch_start_without_end", previous=self.events[0][1].get("batch"),
                            note="previous batch's events discarded")
                self.events = []
            self.open = True
        if not self.open:
            self.dropped_events += 1
            return
        self.events.append((topic, payload))
        if topic == M.BATCH_END:
            self.ended_at_s = now_s

    def ready(self, now_s: float) -> bool:
        return self.ended_at_s is not None and now_s - self.ended_at_s >= self.grace_s

    def take(self) -> list[Message]:
        """The finished batch's messages; the buffer keeps telemetry for the next batch's look-back."""
        out = list(self.telemetry) + self.events
        self.events = []
        self.open = False
        self.ended_at_s = None
        pending, self._next = self._next, []
        for topic, payload, now_s in pending:
            self.feed(topic, payload, now_s)
        return out


def config_value(config: dict | None, key: str) -> Any:
    """A config snapshot value, whether stored plain or as {"value": ..., "source": ...}."""
    v = (config or {}).get(key)
    return v.get("value") if isinstance(v, dict) and "value" in v else v


def resolve_batch_dir(batch_start: dict[str, Any] | None, override: Path | None, out_root: Path | None) -> Path | None:
    """Where a live batch's outputs go: --batch DIR; else batch.start config ``exp_dir``; else
    config ``out_dir`` (or ``out``) / batch id; else --out-root / batch id."""
    if override is not None:
        return override
    bs = batch_start or {}
    cfg = bs.get("config") if isinstance(bs.get("config"), dict) else {}
    exp_dir = config_value(cfg, "exp_dir")
    if exp_dir:
        return Path(str(exp_dir))
    batch_id = bs.get("batch")
    out = config_value(cfg, "out_dir") or config_value(cfg, "out")
    if out and batch_id:
        return Path(str(out)) / str(batch_id)
    if out_root is not None and batch_id:
        return out_root / str(batch_id)
    return None


def run_live(ctx: zmq.Context, endpoints: list[str], on_batch: Callable[[list[Message]], None],
             lookback_s: float, grace_s: float, max_batches: int | None = None, exit_after_s: float | None = None,
             curve: CurveKeys | list[CurveKeys | None] | None = None,
             on_message: Callable[[str, dict[str, Any], float], None] | None = None,
             on_tick: Callable[[float], None] | None = None, on_ready: Callable[[], None] | None = None) -> int:
    """Receive until ``max_batches`` batches were analysed, ``exit_after_s`` passed, or Ctrl-C.
    Returns the number of batches analysed. ``curve`` may be a list, one per endpoint (daemons with
    keys of their own): then each endpoint gets its own SUB socket. ``on_message`` sees every
    message as it arrives, ``on_tick`` runs after every poll (at least every 100 ms): the per-request
    rows and the live page hang there; ``on_ready`` once the sockets are connected."""
    subs = Subscriptions(ctx, endpoints, curve)
    inbox = subs.inbox
    buf = LiveBuffer(lookback_s, grace_s)
    done = 0
    stopped_early = False
    started = timebase.now_s()
    log.info("live_listening", endpoints=endpoints, lookback_s=lookback_s)
    if on_ready is not None:
        on_ready()
    try:
        while max_batches is None or done < max_batches:
            now = timebase.now_s()
            if exit_after_s is not None and now - started > exit_after_s:
                log.warning("live_exit_after", seconds=exit_after_s, batches=done)
                stopped_early = True
                break
            for _, batch in subs.poll(100):
                for topic, payload in batch:
                    buf.feed(topic, payload, timebase.now_s())
                    if on_message is not None:
                        on_message(topic, payload, timebase.now_s())
            if on_tick is not None:
                try:
                    on_tick(timebase.now_s())
                except Exception:  # a failing observer must not stop the batch analysis
                    log.exception("live_tick_failed")
            if buf.ready(timebase.now_s()):
                try:
                    on_batch(buf.take())
                except Exception:  # one bad batch must not stop the listener
                    log.exception("live_batch_failed")
                done += 1
    except KeyboardInterrupt:
        log.info("live_stopped", batches=done)
        stopped_early = True
    finally:
        if stopped_early and buf.open and buf.events:
            # The collector died or we are stopping mid-batch: analyse what arrived; requests
            # without req.end are reported as incomplete.
            log.warning("live_batch_unfinished", batch=buf.events[0][1].get("batch"), events=len(buf.events))
            try:
                on_batch(buf.take())
                done += 1
            except Exception:
                log.exception("live_batch_failed")
        subs.close()
        if inbox.dropped_oversize or inbox.dropped_invalid:
            log.warning("live_dropped", oversize=inbox.dropped_oversize, invalid=inbox.dropped_invalid)
    return done
