"""The merged recording: telemetry received on the bus + the collector's own events, in arrival order.

A dedicated thread owns the SUB socket and drains it in a fast loop, so request handling on the
asyncio loop never starves it (100 Hz × several GPUs is a few hundred messages a second). Own
events are published on the events PUB socket and written to the same recording; a lock keeps
the two writers from interleaving bytes.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import zmq

from shared.bus import CurveKeys, Inbox, Publisher, bind_pub, connect_sub
from shared.logs import get_logger
from shared.messages import TEL_HB, Body, Stamper, source_id
from shared.recording import RecordingWriter

log = get_logger("collector.recorder")


class TelemetryTimeout(RuntimeError):
    """No heartbeat from the telemetry daemon; the message says how to start it or skip it."""


class Recorder:
    """Owns the recording file, the events PUB socket and the telemetry SUB thread."""

    def __init__(self, path: Path, events_endpoint: str | None, telemetry_endpoint: str | None,
                 meta: dict[str, Any] | None = None, pub_curve: CurveKeys | None = None,
                 sub_curve: CurveKeys | None = None, ctx: zmq.Context | None = None):
        self.path = Path(path)
        self.ctx = ctx or zmq.Context.instance()
        self.writer = RecordingWriter(self.path, meta=meta)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.heartbeat = threading.Event()
        self.telemetry_received = 0
        self.inbox = Inbox()
        self.pub: Publisher | None = None
        self._pub_sock = None
        self._thread: threading.Thread | None = None
        self.telemetry_endpoint = telemetry_endpoint
        if events_endpoint:
            self._pub_sock = bind_pub(self.ctx, events_endpoint, pub_curve)
            self.pub = Publisher(self._pub_sock, source_id("collector"))
        # one numbering for what is published and what is recorded
        self._stamper = self.pub.stamper if self.pub is not None else Stamper(source_id("collector"))
        self._sub_curve = sub_curve
        if telemetry_endpoint:
            self._thread = threading.Thread(target=self._telemetry_loop, name="telemetry-recorder", daemon=True)
            self._thread.start()

    def _telemetry_loop(self) -> None:
        sub = connect_sub(self.ctx, self.telemetry_endpoint, curve=self._sub_curve)
        try:
            while not self._stop.is_set():
                # drain everything queued, then write under one lock acquisition
                batch = self.inbox.drain(sub, timeout_ms=50)
                if not batch:
                    continue
                with self._lock:
                    for topic, payload in batch:
                        self.writer.write(topic, payload)
                self.telemetry_received += len(batch)
                if not self.heartbeat.is_set() and any(t == TEL_HB for t, _ in batch):
                    self.heartbeat.set()
        except zmq.ZMQError as exc:  # context terminated under us at shutdown
            if not self._stop.is_set():
                log.error("telemetry_loop_failed", error=str(exc))
        finally:
            sub.close(linger=0)

    def wait_heartbeat(self, timeout_s: float) -> None:
        """Block until one ``tel.hb`` arrived, or raise :class:`TelemetryTimeout`."""
        if self._thread is None:
            return
        if not self.heartbeat.wait(timeout_s):
            raise TelemetryTimeout(
                f"no telemetry heartbeat (tel.hb) on {self.telemetry_endpoint} within {timeout_s:g} s. "
                "Start the daemon first (`python -m telemetry`, or `make telemetry`), point "
                "--telemetry-endpoint at it, or run without energy data using --no-telemetry.")

    def emit(self, body: Body, t: int | None = None, flush: bool = False) -> dict[str, Any]:
        """Publish one own event (stamped) and record it; returns the stamped payload."""
        payload = self._stamper.stamp(body.to_msg(), t=t)
        if self.pub is not None:
            self.pub.send(body.TOPIC, payload)
        with self._lock:
            self.writer.write(body.TOPIC, payload)
            if flush:
                self.writer.flush()
        return payload

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self.writer.close()
        if self.inbox.dropped_oversize or self.inbox.dropped_invalid:
            log.warning("telemetry_messages_dropped", oversize=self.inbox.dropped_oversize,
                        invalid=self.inbox.dropped_invalid, limit_bytes=self.inbox.max_bytes)
        if self._pub_sock is not None:
            # give subscribers a moment to get batch.end before the socket goes away
            time.sleep(0.05)
            self._pub_sock.close(linger=0)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
