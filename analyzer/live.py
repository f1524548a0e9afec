"""``--live``: subscribe to the telemetry and collector endpoints and analyse each batch when its
batch.end arrives. The buffering rule is pure (LiveBuffer); the socket loop is thin (run_live)."""
from __future__ import annotations

import signal
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable

import zmq

from analyzer.live_spool import Spool, SpoolBatch
from analyzer.stream import DEFAULT_LOOKBACK_S, TELEMETRY
from shared import timebase
from shared import messages as M
from shared.bus import CurveKeys, Subscriptions
from shared.logs import get_logger

log = get_logger("analyzer.live")

Message = tuple[str, dict[str, Any]]


class LiveBuffer:
    """Keeps telemetry for ``lookback_s`` before a batch and spools everything during it.

    Telemetry is held per source for the look-back only (each host's monotonic clock is its own, so
    each source is pruned against its own newest stamp), whether a batch is open or not: memory does
    not grow with the time a batch stays open. From batch.start on, every message goes, as it arrives,
    to the batch's spool file (``analyzer.live_spool``: why a file, where, and how leftovers go), the
    look-back first. ``feed`` returns nothing; after a batch.end, ``ready(now_s)`` becomes true once
    ``grace_s`` has passed (telemetry from the other socket may still be in flight), and ``take()``
    hands over the batch's spool (a ``SpoolBatch``: iterate its messages, or ``data()`` for the
    BatchData, which stream.scope's rule then cuts exactly as a replay would). ``close()`` at exit.
    """

    def __init__(self, lookback_s: float = DEFAULT_LOOKBACK_S, grace_s: float = 1.0, spool: Spool | None = None):
        self.lookback_ns = int(lookback_s * 1e9)
        self.grace_s = grace_s
        self.spool = spool or Spool()
        self.telemetry: dict[str, deque[Message]] = {}  # per publisher: its last lookback_s, arrival order
        self.batch: SpoolBatch | None = None            # the open batch
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
            self._hold(topic, payload)
            if self.batch is not None:
                self.batch.write(topic, payload)
            return
        if topic == M.BATCH_START:
            if self.open and self.batch is not None and self.batch.events \
                    and (self.batch.batch_start or {}).get("batch") != payload.get("batch"):
                log.warning("batch_start_without_end", previous=(self.batch.batch_start or {}).get("batch"),
                            note="previous batch's events discarded")
                self.batch = self._telemetry_of(self.batch)
            if not self.open:
                self.batch = self.spool.open_batch()
                for q in self.telemetry.values():
                    for m in q:
                        self.batch.write(*m)
            self.open = True
        if not self.open:
            self.dropped_events += 1
            return
        self.batch.write(topic, payload, event=True)
        if topic == M.BATCH_END:
            self.ended_at_s = now_s

    def _hold(self, topic: str, payload: dict[str, Any]) -> None:
        """Keep the message for the next batch's look-back; drop what is older than it (this source)."""
        src = str(payload.get("src"))
        q = self.telemetry.get(src)
        if q is None:
            q = self.telemetry[src] = deque()
        q.append((topic, payload))
        newest = max(self._newest.get(src, 0), _t(payload))
        self._newest[src] = newest
        horizon = newest - self.lookback_ns
        while q and _t(q[0][1]) < horizon:
            q.popleft()

    def _telemetry_of(self, old: SpoolBatch) -> SpoolBatch:
        """A new spool with only the telemetry of ``old`` (whose events are discarded), read back in order."""
        new = self.spool.open_batch()
        old.close()
        if old.problem:  # its file is incomplete: the new batch cannot be analysed either
            new.problem = new.problem or old.problem
        else:
            for topic, payload in old:
                if topic in TELEMETRY or topic in (M.TEL_HB, M.CLOCK_SYNC):
                    new.write(topic, payload)
        old.remove()
        return new

    def ready(self, now_s: float) -> bool:
        return self.ended_at_s is not None and now_s - self.ended_at_s >= self.grace_s

    def take(self) -> SpoolBatch:
        """The finished batch's spool (closed; the caller removes it once analysed); the buffer keeps
        the look-back telemetry for the next batch."""
        batch = self.batch if self.batch is not None else self.spool.open_batch()
        batch.close()
        self.batch = None
        self.open = False
        self.ended_at_s = None
        pending, self._next = self._next, []
        for topic, payload, now_s in pending:
            self.feed(topic, payload, now_s)
        return batch

    def held(self) -> int:
        """Messages held in memory (the look-back per source and events waiting out a grace period)."""
        return sum(len(q) for q in self.telemetry.values()) + len(self._next)

    def close(self) -> None:
        """At exit: the open batch's spool and this process's spool directory go."""
        if self.batch is not None:
            self.batch.remove()
            self.batch = None
        self.spool.close()


def _t(payload: dict[str, Any]) -> int:
    t = payload.get("t", 0)  # (one the contract refuses would set the look-back's horizon: as none)
    return t if M.is_int64(t) else 0


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


def run_live(ctx: zmq.Context, endpoints: list[str], on_batch: Callable[[SpoolBatch], None],
             lookback_s: float, grace_s: float, max_batches: int | None = None, exit_after_s: float | None = None,
             curve: CurveKeys | list[CurveKeys | None] | None = None,
             on_message: Callable[[str, dict[str, Any], float], None] | None = None,
             on_tick: Callable[[float], None] | None = None, on_ready: Callable[[], None] | None = None,
             spool_dir: Path | None = None) -> int:
    """Receive until ``max_batches`` batches were analysed, ``exit_after_s`` passed, or Ctrl-C.
    Returns the number of batches analysed. ``curve`` may be a list, one per endpoint (daemons with
    keys of their own): then each endpoint gets its own SUB socket. ``on_message`` sees every
    message as it arrives, ``on_tick`` runs after every poll (at least every 100 ms): the per-request
    rows and the live page hang there; ``on_ready`` once the sockets are connected. ``on_batch`` gets
    each finished batch's spool (in ``spool_dir``, default the system temp directory), removed after."""
    spool = Spool(spool_dir)
    spool.remove_stale()  # what killed live analyzers left there
    subs = Subscriptions(ctx, endpoints, curve)
    inbox = subs.inbox
    buf = LiveBuffer(lookback_s, grace_s, spool)
    done = 0
    stopped_early = terminated = False
    restore: Callable[[], None] = lambda: None  # noqa: E731
    started = timebase.now_s()
    try:
        restore = _on_sigterm()
        log.info("live_listening", endpoints=endpoints, lookback_s=lookback_s)
        if on_ready is not None:
            on_ready()
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
                _analyse(on_batch, buf.take())
                done += 1
    except KeyboardInterrupt:
        log.info("live_stopped", batches=done)
        stopped_early = True
    except _Terminated:
        terminated = True
    finally:
        if stopped_early and buf.open and buf.batch is not None and buf.batch.events:
            # The collector died or we are stopping mid-batch: analyse what arrived; requests
            # without req.end are reported as incomplete.
            log.warning("live_batch_unfinished", batch=(buf.batch.batch_start or {}).get("batch"),
                        events=buf.batch.events)
            try:
                if _analyse(on_batch, buf.take()):
                    done += 1
            except _Terminated:
                terminated = True
        buf.close()
        subs.close()
        if inbox.dropped_oversize or inbox.dropped_invalid:
            log.warning("live_dropped", oversize=inbox.dropped_oversize, invalid=inbox.dropped_invalid)
        restore()
    if terminated:  # the spool is gone: now end as SIGTERM always ended this process
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
    return done


class _Terminated(BaseException):
    """SIGTERM (how the proxy and ``collector --serve`` stop their live analyzer) while run_live runs."""


def _on_sigterm() -> Callable[[], None]:
    """Make SIGTERM unwind run_live (its spool removed on the way) instead of ending the process where it
    stands; returns what puts the previous handler back. Only the main thread can set one (elsewhere
    nothing changes). A second SIGTERM during the clean-up ends the process at once (the next live
    analyzer removes what is left). Windows' TerminateProcess cannot be caught: the same leftover rule."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _analyse(on_batch: Callable[[SpoolBatch], None], batch: SpoolBatch) -> bool:
    """``on_batch(batch)``, then the spool goes; False when it failed (one bad batch must not stop the listener)."""
    try:
        on_batch(batch)
        return True
    except Exception:
        log.exception("live_batch_failed")
        return False
    finally:
        batch.remove()
