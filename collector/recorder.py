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

from shared import timebase
from shared.bus import CurveKeys, Inbox, Publisher, Subscriptions, bind_pub
from shared.clock import ClockClient, boot_id, derived_endpoint
from shared.logs import get_logger
from shared.messages import TEL_HB, TEL_HOST, Body, ClockSync, Stamper, source_id
from shared.recording import BusRecording

log = get_logger("collector.recorder")


CLOCK_PROBE_S = 5.0  # seconds between clock probes of each telemetry source during a batch


class TelemetryTimeout(RuntimeError):
    """No heartbeat from the telemetry daemon; the message says how to start it or skip it."""


class Recorder:
    """Owns the recording file, the events PUB socket and the telemetry SUB thread."""

    def __init__(self, path: Path, events_endpoint: str | None, telemetry_endpoint: str | list[str] | None,
                 meta: dict[str, Any] | None = None, pub_curve: CurveKeys | None = None,
                 sub_curve: CurveKeys | list[CurveKeys | None] | None = None, ctx: zmq.Context | None = None,
                 clock_probe_s: float | None = CLOCK_PROBE_S):
        self.path = Path(path)
        self.ctx = ctx or zmq.Context.instance()
        self.recording = BusRecording(self.path, meta=meta)  # the core telemetry.record uses too
        self.writer = self.recording.writer
        self._lock = self.recording.lock
        self._stop = threading.Event()
        self.heartbeat = threading.Event()
        self._samples: dict[int, int] = {}     # telemetry samples (not heartbeats) per endpoint
        self._host_ticks: dict[int, int] = {}  # of them, tel.host
        self._server: dict[int, tuple[int | None, bool]] = {}  # endpoint -> (watched server port, process found)
        self.inbox = Inbox()
        self.pub: Publisher | None = None
        self._pub_sock = None
        self._thread: threading.Thread | None = None
        # several daemons (several GPU hosts): one SUB socket each, so every source's endpoint is known
        self.telemetry_endpoints = ([telemetry_endpoint] if isinstance(telemetry_endpoint, str)
                                    else list(telemetry_endpoint or []))
        self.telemetry_endpoint = ", ".join(self.telemetry_endpoints) or None
        self._curves = (list(sub_curve) if isinstance(sub_curve, (list, tuple))
                        else [sub_curve] * len(self.telemetry_endpoints))
        self._hb_from: set[int] = set()
        self.sources: dict[str, dict[str, Any]] = {}   # telemetry src → {endpoint index, clock_port, boot_id}
        self.clock_probe_s = clock_probe_s
        self.clock_syncs = 0
        self._clients: dict[str, ClockClient] = {}
        self._probed: set[str] = set()
        self._clock_thread: threading.Thread | None = None
        if events_endpoint:
            self._pub_sock = bind_pub(self.ctx, events_endpoint, pub_curve)
            self.pub = Publisher(self._pub_sock, source_id("collector"))
        # one numbering for what is published and what is recorded
        self._stamper = self.pub.stamper if self.pub is not None else Stamper(source_id("collector"))
        if self.telemetry_endpoints:
            self._thread = threading.Thread(target=self._telemetry_loop, name="telemetry-recorder", daemon=True)
            self._thread.start()
            if clock_probe_s:
                self._clock_thread = threading.Thread(target=self._clock_loop, name="clock-prober", daemon=True)
                self._clock_thread.start()

    def _telemetry_loop(self) -> None:
        subs = Subscriptions(self.ctx, self.telemetry_endpoints, self._curves, inbox=self.inbox)
        try:
            self.recording.run(subs, self._stop, on_batch=self._count)
        except zmq.ZMQError as exc:  # context terminated under us at shutdown
            if not self._stop.is_set():
                log.error("telemetry_loop_failed", error=str(exc))
        finally:
            subs.close()

    @property
    def telemetry_received(self) -> int:
        return self.recording.received

    def _count(self, i: int, batch: list) -> None:
        for topic, payload in batch:
            if topic == TEL_HB:
                self._heard(i, payload)
            else:
                self._samples[i] = self._samples.get(i, 0) + 1
                if topic == TEL_HOST:
                    self._host_ticks[i] = self._host_ticks.get(i, 0) + 1
                    found = self._server.get(i, (None, False))[1] or payload.get("server_cpu_s") is not None
                    self._server[i] = (payload.get("server_port"), found)

    def _heard(self, index: int, hb: dict[str, Any]) -> None:
        """A heartbeat: its source's endpoint and clock port; the heartbeat event once every endpoint spoke."""
        self.sources[str(hb.get("src"))] = {"index": index, "clock_port": hb.get("clock_port"),
                                            "boot_id": hb.get("boot_id")}
        self._hb_from.add(index)
        if not self.heartbeat.is_set() and len(self._hb_from) == len(self.telemetry_endpoints):
            self.heartbeat.set()

    def _clock_loop(self) -> None:
        """Probe every source at once when it first speaks, then every clock_probe_s (same-host sources only
        at the start and the end: one clock, the record just says so)."""
        next_round = 0.0
        while not self._stop.is_set():
            fresh = [s for s in list(self.sources) if s not in self._probed]
            if fresh or timebase.now_s() >= next_round:
                self.probe_clocks("start" if fresh else "during", only=fresh or None)
                if not fresh:
                    next_round = timebase.now_s() + self.clock_probe_s
            self._stop.wait(0.1)

    def probe_clocks(self, phase: str, only: list[str] | None = None, timeout_ms: int = 1000) -> int:
        """Probe sources (best of 3 round trips each) and record one clock.sync per source answered."""
        local_boot = boot_id()
        done = 0
        for src in only or list(self.sources):
            info = self.sources.get(src) or {}
            port = info.get("clock_port")
            same = bool(local_boot) and info.get("boot_id") == local_boot
            first = src not in self._probed
            self._probed.add(src)
            if not port or (same and phase == "during" and not first):
                continue
            client = self._clients.get(src)
            if client is None:
                i = info["index"]
                client = self._clients[src] = ClockClient(self.ctx, derived_endpoint(self.telemetry_endpoints[i], port),
                                                          self._curves[i])
            try:
                p = client.best_of(3, timeout_ms)
            except zmq.ZMQError as exc:
                log.warning("clock_probe_failed", source=src, error=str(exc))
                continue
            if p is not None and p.src not in (None, src):  # another daemon on that port: its clock is not this one
                log.warning("clock_probe_wrong_source", source=src, answered_by=p.src, endpoint=client.endpoint)
                continue
            if p is None:
                log.warning("clock_probe_unanswered", source=src, endpoint=client.endpoint,
                            fix="is the daemon's clock endpoint reachable (its telemetry port + 2, or --clock-endpoint)?")
                continue
            self.emit(ClockSync(source=src, sent_ns=p.sent_ns, received_ns=p.received_ns, remote_ns=p.remote_ns,
                                rtt_ns=p.rtt_ns, offset_ns=p.offset_ns, remote_wall_ns=p.remote_wall_ns,
                                boot_id=p.boot_id, local_boot_id=local_boot,
                                same_host=bool(local_boot) and p.boot_id == local_boot, phase=phase,
                                endpoint=client.endpoint), t=p.received_ns)
            self.clock_syncs += 1
            done += 1
        return done

    def _silent(self) -> list[str]:
        return [ep for i, ep in enumerate(self.telemetry_endpoints) if i not in self._hb_from]

    def wait_heartbeat(self, timeout_s: float) -> None:
        """Block until one ``tel.hb`` arrived, or raise :class:`TelemetryTimeout`."""
        if self._thread is None:
            return
        if not self.heartbeat.wait(timeout_s):
            raise TelemetryTimeout(
                f"no telemetry heartbeat (tel.hb) on {', '.join(self._silent()) or self.telemetry_endpoint} within "
                f"{timeout_s:g} s. "
                "Start the daemon first (`python -m telemetry`, or `make telemetry`), point "
                "--telemetry-endpoint at it, or run without energy data using --no-telemetry.")

    def wait_server_found(self, port: int | None, timeout_s: float, first_host_s: float = 1.0) -> list[str]:
        """Wait until every daemon that watches the LLM server's ``port`` has found the process listening
        there (its tel.host carries server_cpu_s), so no request window opens before the server's CPU time
        is known. Returns the endpoints still searching at ``timeout_s`` (their early rows stay empty);
        a daemon that sends no tel.host within ``first_host_s`` or watches another port is not waited for."""
        if self._thread is None or port is None:
            return []
        start = timebase.now_s()
        while True:
            now = timebase.now_s()
            servers = dict(self._server)
            searching = [i for i, (p, found) in servers.items() if p == port and not found]
            unheard = [i for i in range(len(self.telemetry_endpoints)) if i not in servers]
            if not searching and (not unheard or now - start >= first_host_s):
                return []
            if now - start >= timeout_s:
                return [self.telemetry_endpoints[i] for i in searching]
            time.sleep(0.02)

    def emit(self, body: Body, t: int | None = None, flush: bool = False) -> dict[str, Any]:
        """Publish one own event (stamped) and record it; returns the stamped payload."""
        with self._lock:  # the clock prober emits from its own thread: one user of the PUB socket at a time
            payload = self._stamper.stamp(body.to_msg(), t=t)
            if self.pub is not None:
                self.pub.send(body.TOPIC, payload)
            self.writer.write(body.TOPIC, payload)
            if flush:
                self.writer.flush()
        return payload

    def settle(self, timeout_s: float = 1.0) -> bool:
        """Wait until every telemetry endpoint has delivered samples taken after now (two of them,
        and two host ticks where it sends those), so the last request's window is covered on both
        sides before the recording ends. Bounded: False when a daemon stayed silent for ``timeout_s``."""
        if self._thread is None:
            return True
        samples, hosts = dict(self._samples), dict(self._host_ticks)

        def after(i: int) -> bool:
            # two: the first may have been sampled before now and still be on its way
            return self._samples.get(i, 0) >= samples.get(i, 0) + 2 and \
                (i not in hosts or self._host_ticks.get(i, 0) >= hosts[i] + 2)

        deadline = timebase.now_s() + timeout_s
        while timebase.now_s() < deadline:
            if all(after(i) for i in range(len(self.telemetry_endpoints))):
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._stop.set()
        if self._clock_thread is not None:
            self._clock_thread.join(timeout=5)
            if not self._clock_thread.is_alive():  # its sockets are ours now
                self.probe_clocks("end", timeout_ms=300)  # the last probe closes the fit over the whole batch
        for client in self._clients.values():
            client.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.recording.close()
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
