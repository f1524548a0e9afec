"""Clock probes between hosts: the daemon answers, the collector asks (NTP-style), the analyzer fits.

Every process stamps with ``shared.timebase.now_ns()`` (re-exported here), which is per machine. When the collector
and a telemetry daemon run on different hosts, the collector probes the daemon's clock: it notes its
own clock when the probe leaves (``sent_ns``) and when the answer arrives (``received_ns``); the
daemon answers with its clock (``remote_ns``). The source's offset is ``remote_ns − midpoint``,
known to ± rtt/2. Same-host sources (equal boot ids) share one clock and need no mapping.

The probe socket follows the bus rule: loopback, or CURVE keys (the daemon's own key pair).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import msgpack
import zmq

from shared.bus import CurveKeys, bind_server
from shared.logs import get_logger
from shared.timebase import now_ns  # noqa: F401  (the one clock; importable from here too)

log = get_logger("shared.clock")

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
PROBE_TIMEOUT_MS = 1000
MAX_REQUEST_BYTES = 256  # a probe is a tiny map; anything bigger is not ours


def boot_id() -> str | None:
    """This machine's boot id (Linux); None where the OS has none to read (then same-host is unknown)."""
    try:
        return BOOT_ID_FILE.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def derived_endpoint(telemetry_endpoint: str, port: int) -> str:
    """The clock endpoint on the telemetry endpoint's host: ``tcp://gpu-box:5556`` + 5558 → ``tcp://gpu-box:5558``."""
    parts = urlsplit(telemetry_endpoint)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme or 'tcp'}://{host}:{port}"


def default_clock_endpoint(telemetry_endpoint: str) -> str | None:
    """The daemon's default probe endpoint: its telemetry port + 2 (5556 → 5558; 5557 is the collector's)."""
    parts = urlsplit(telemetry_endpoint)
    if parts.scheme != "tcp" or parts.port is None:
        return None
    return derived_endpoint(telemetry_endpoint, parts.port + 2)


def bind_rep(ctx: zmq.Context, endpoint: str, curve: CurveKeys | None = None) -> zmq.Socket:
    """A REP socket for clock probes; the bus's loopback-or-CURVE rule applies."""
    return bind_server(ctx, zmq.REP, endpoint, curve, "the clock probe endpoint",
                       {zmq.MAXMSGSIZE: MAX_REQUEST_BYTES})


class ClockServer(threading.Thread):
    """Answers probes with ``{t_ns, wall_ns, boot_id, src}``, ``t_ns`` on the clock the daemon stamps with."""

    def __init__(self, ctx: zmq.Context, endpoint: str, src: str, now_ns: Callable[[], int],
                 boot: str | None, curve: CurveKeys | None = None):
        super().__init__(name="clock-probe", daemon=True)
        self.sock = bind_rep(ctx, endpoint, curve)  # bound here: a bad endpoint fails the daemon's start
        self.endpoint, self.src, self.now_ns, self.boot = endpoint, src, now_ns, boot
        self.stop_event = threading.Event()
        self.answered = 0

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                if not self.sock.poll(100, zmq.POLLIN):
                    continue
                self.sock.recv()  # content is irrelevant: any probe gets the time
                t = self.now_ns()  # as late as possible before the answer leaves
                self.sock.send(msgpack.packb({"t_ns": t, "wall_ns": time.time_ns(), "boot_id": self.boot,
                                              "src": self.src}, use_bin_type=True))
                self.answered += 1
        except zmq.ZMQError as exc:
            if not self.stop_event.is_set():
                log.error("clock_probe_failed", error=str(exc))
        finally:
            self.sock.close(linger=0)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=2)


@dataclass
class Probe:
    sent_ns: int
    received_ns: int
    remote_ns: int
    remote_wall_ns: int | None
    boot_id: str | None
    src: str | None

    @property
    def rtt_ns(self) -> int:
        return self.received_ns - self.sent_ns

    @property
    def offset_ns(self) -> int:
        return self.remote_ns - (self.sent_ns + self.received_ns) // 2


class ClockClient:
    """Probes one source's clock over REQ; a lost answer resets the socket (REQ would stay stuck)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: CurveKeys | None = None):
        self.ctx, self.endpoint, self.curve = ctx, endpoint, curve
        self.sock: zmq.Socket | None = None

    def _socket(self) -> zmq.Socket:
        if self.sock is None:
            s = self.ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            if self.curve is not None:
                s.curve_publickey, s.curve_secretkey = self.curve.public, self.curve.secret
                s.curve_serverkey = self.curve.server_public
            s.connect(self.endpoint)
            self.sock = s
        return self.sock

    def probe(self, timeout_ms: int = PROBE_TIMEOUT_MS) -> Probe | None:
        s = self._socket()
        sent = now_ns()
        s.send(b"t")
        if not s.poll(timeout_ms, zmq.POLLIN):
            self.close()
            return None
        data = s.recv()
        received = now_ns()
        try:
            ans: dict[str, Any] = msgpack.unpackb(data, raw=False)
            return Probe(sent, received, int(ans["t_ns"]), ans.get("wall_ns"), ans.get("boot_id"), ans.get("src"))
        except (ValueError, KeyError, TypeError, msgpack.exceptions.ExtraData):
            return None

    def best_of(self, n: int = 5, timeout_ms: int = PROBE_TIMEOUT_MS) -> Probe | None:
        """The probe with the shortest round trip of ``n`` (queueing delay only ever adds to it)."""
        got = []
        for _ in range(n):
            p = self.probe(timeout_ms)
            if p is None:
                break  # an unanswered source is not asked again this round
            got.append(p)
        return min(got, key=lambda p: p.rtt_ns) if got else None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
