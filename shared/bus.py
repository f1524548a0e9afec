"""ZeroMQ helpers: endpoints, the loopback-or-CURVE rule, publishers and size-limited receives.

Every socket gets ``linger=0`` so no process hangs at exit on unsent messages. Binding a
publisher anywhere but loopback requires CURVE keys (ZeroMQ's CurveZMQ); the matching
subscriber must then know the publisher's public key or it receives nothing.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import msgpack
import zmq

from shared.messages import MAX_PAYLOAD_BYTES, MessageError, Stamper, decode

TELEMETRY_ENDPOINT = "tcp://127.0.0.1:5556"
EVENTS_ENDPOINT = "tcp://127.0.0.1:5557"
ANALYSIS_ENDPOINT = "tcp://127.0.0.1:5560"  # analyzer --live: ana.row (5558 is the daemon clock probe, 5556 + 2)
# Env overrides so every process of a session agrees without repeating flags.
ENV_TELEMETRY = "GENAI_TELEMETRY_ENDPOINT"
ENV_EVENTS = "GENAI_EVENTS_ENDPOINT"
ENV_ANALYSIS = "GENAI_ANALYSIS_ENDPOINT"
SEND_HWM = 200_000  # messages a slow subscriber may lag before PUB drops for it (shows as seq gaps)


class BusError(RuntimeError):
    """A bus socket that cannot be set up; the message says what and how to fix it."""


class BusSecurityError(BusError):
    """Refusal to expose the bus off this machine without encryption and authentication, or bad keys."""


class BusBindError(BusError):
    """The endpoint cannot be bound (in use, or not an address of this machine)."""


def telemetry_endpoint() -> str:
    return os.environ.get(ENV_TELEMETRY, TELEMETRY_ENDPOINT)


def events_endpoint() -> str:
    return os.environ.get(ENV_EVENTS, EVENTS_ENDPOINT)


def analysis_endpoint() -> str:
    return os.environ.get(ENV_ANALYSIS, ANALYSIS_ENDPOINT)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (for loopback endpoints and servers)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(endpoint: str) -> bool:
    """True for ``tcp://127.x.x.x:port``, ``tcp://localhost:port``, ``tcp://[::1]:port``, ipc and inproc."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a DNS name: treat as exposed


@dataclass(frozen=True)
class CurveKeys:
    """Z85 keys as bytes. A server needs public+secret; a client needs its pair plus ``server_public``."""

    public: bytes
    secret: bytes
    server_public: bytes | None = None

    @classmethod
    def generate(cls) -> "CurveKeys":
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def from_secret_file(cls, path: str | os.PathLike, server_public_file: str | os.PathLike | None = None) -> "CurveKeys":
        """Load a ``.key_secret`` certificate written by ``python -m telemetry.keys`` (zmq.auth format)."""
        import zmq.auth

        path = Path(path)
        if not path.is_file():
            raise BusSecurityError(f"CURVE key file {path} not found; create one with `python -m telemetry.keys DIR`")
        try:
            public, secret = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:
            raise BusSecurityError(f"{path} is not a CURVE key file ({exc}); pass the .key_secret file written by "
                                   "`python -m telemetry.keys DIR`") from exc
        if secret is None:
            raise BusSecurityError(f"{path} holds no secret key; pass the .key_secret file, not the .key file")
        server_public = None
        if server_public_file is not None:
            server_file = Path(server_public_file)
            if not server_file.is_file():
                raise BusSecurityError(f"the publisher's public key file {server_file} was not found; copy its .key "
                                       "file here (`python -m telemetry.keys DIR` wrote it)")
            try:
                server_public, _ = zmq.auth.load_certificate(str(server_file))
            except (OSError, ValueError) as exc:
                raise BusSecurityError(f"{server_file} is not a CURVE key file ({exc}); pass the publisher's .key "
                                       "file written by `python -m telemetry.keys DIR`") from exc
        return cls(public, secret, server_public)


def _base_socket(ctx: zmq.Context, kind: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def bind_server(ctx: zmq.Context, kind: int, endpoint: str, curve: CurveKeys | None, what: str,
                options: dict[int, int] | None = None) -> zmq.Socket:
    """A socket of ``kind`` bound to ``endpoint`` (``what`` names it in errors), with the bus's one
    rule: a non-loopback bind needs CURVE keys. ``options`` are set before bind (they apply to peers)."""
    if not is_loopback(endpoint) and curve is None:
        raise BusSecurityError(
            f"refusing to bind {endpoint} ({what}): it is not loopback, and the bus carries unencrypted data. "
            "Bind to tcp://127.0.0.1:PORT, or give CURVE keys (--curve-secret FILE; make them with "
            "`python -m telemetry.keys DIR`)."
        )
    sock = _base_socket(ctx, kind)
    for opt, value in (options or {}).items():
        sock.setsockopt(opt, value)
    if curve is not None:
        sock.curve_server = True
        sock.curve_publickey = curve.public
        sock.curve_secretkey = curve.secret
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        raise BusBindError(f"cannot bind {endpoint} ({what}): {exc} (is another process already using it? "
                           "pick a free port)") from exc
    return sock


def bind_pub(ctx: zmq.Context, endpoint: str, curve: CurveKeys | None = None,
             send_hwm: int = SEND_HWM, send_buffer_b: int | None = None) -> zmq.Socket:
    """A PUB socket bound to ``endpoint``; refuses a non-loopback bind without CURVE keys.

    ``send_hwm``: messages queued per subscriber before PUB drops for it; ``send_buffer_b``: the
    kernel send buffer per connection (None: the OS default, which TCP autotunes up to MiBs).
    Both must be set before bind to apply to subscribers."""
    options = {zmq.SNDHWM: send_hwm}
    if send_buffer_b is not None:
        options[zmq.SNDBUF] = send_buffer_b
    return bind_server(ctx, zmq.PUB, endpoint, curve, "the publisher", options)


def connect_sub(ctx: zmq.Context, endpoints: str | Iterable[str], topics: Iterable[str] = ("",),
                curve: CurveKeys | None = None, server_keys: list[bytes] | None = None) -> zmq.Socket:
    """A SUB socket connected to each endpoint, subscribed to topic prefixes (``""`` = all).

    ``server_keys``: one publisher public key per endpoint (daemons with keys of their own); ZeroMQ
    takes the CURVE server key in force at each connect, so one socket serves them all."""
    sock = _base_socket(ctx, zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, SEND_HWM)
    if curve is not None:
        if curve.server_public is None:
            raise BusSecurityError("a CURVE subscriber needs the publisher's public key (--curve-server-key FILE)")
        sock.curve_publickey = curve.public
        sock.curve_secretkey = curve.secret
        sock.curve_serverkey = curve.server_public
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
    eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    if server_keys is not None and (curve is None or len(server_keys) != len(eps)):
        sock.close()
        raise BusSecurityError(f"{len(server_keys)} publisher keys for {len(eps)} endpoints: give one public .key "
                               "per endpoint, in order, with this subscriber's --curve-secret")
    for i, endpoint in enumerate(eps):
        if server_keys is not None:
            sock.curve_serverkey = server_keys[i]
        sock.connect(endpoint)
    return sock


class Publisher:
    """Stamps bodies with the envelope and publishes them as ``[topic, msgpack]``; never blocks."""

    def __init__(self, sock: zmq.Socket, src: str):
        self.sock = sock
        self.stamper = Stamper(src)
        # One reused Packer (same options as messages.encode) is about twice as fast as packb;
        # a Publisher, like its socket, belongs to one thread.
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def publish(self, topic: str, body: dict[str, Any], t: int | None = None, wall: int | None = None) -> dict[str, Any]:
        payload = self.stamper.stamp(body, t=t, wall=wall)
        self.send(topic, payload)
        return payload

    def send(self, topic: str, payload: dict[str, Any]) -> None:
        """Send an already-stamped payload. PUB drops (per subscriber, at its HWM) rather than blocks;
        two plain sends are several times faster than send_multipart in pyzmq."""
        self.sock.send(topic.encode("ascii"), zmq.SNDMORE)
        self.sock.send(self._pack(payload))


class Inbox:
    """Receives ``[topic, payload]`` messages with a size limit; counts what it had to drop and why.

    Frames are received without copying; an oversize payload is counted and released without
    ever being unpacked into Python objects.
    """

    def __init__(self, max_bytes: int = MAX_PAYLOAD_BYTES):
        self.max_bytes = max_bytes
        self.dropped_oversize = 0
        self.dropped_invalid = 0

    def unpack(self, frames: list) -> tuple[str, dict[str, Any]] | None:
        """``[topic, payload]`` frames (bytes or zmq.Frame) to ``(topic, payload)``, or None (counted)."""
        if len(frames) != 2:
            self.dropped_invalid += 1
            return None
        topic, data = frames
        return self._decode(topic.bytes if isinstance(topic, zmq.Frame) else topic,
                            data.buffer if isinstance(data, zmq.Frame) else data)

    def _decode(self, topic: bytes, data) -> tuple[str, dict[str, Any]] | None:
        if len(data) > self.max_bytes:
            self.dropped_oversize += 1
            return None
        try:
            return topic.decode("ascii"), decode(data, self.max_bytes)
        except (MessageError, UnicodeDecodeError):
            self.dropped_invalid += 1
            return None

    def _recv_one(self, sock: zmq.Socket, flags: int) -> tuple[str, dict[str, Any]] | None:
        # Hot path (every subscriber, every message): two frame receives, no list, no copy of the payload.
        topic = sock.recv(flags, copy=False)
        if not topic.more:
            self.dropped_invalid += 1
            return None
        data = sock.recv(copy=False)  # the rest of a multipart message is already here
        if data.more:
            while sock.rcvmore:
                sock.recv()
            self.dropped_invalid += 1
            return None
        return self._decode(topic.bytes, data.buffer)

    def recv(self, sock: zmq.Socket, timeout_ms: int | None = None) -> tuple[str, dict[str, Any]] | None:
        """Blocking receive of one usable message; None on timeout."""
        while True:
            if timeout_ms is not None and not sock.poll(timeout_ms, zmq.POLLIN):
                return None
            msg = self._recv_one(sock, 0)
            if msg is not None:
                return msg

    def drain(self, sock: zmq.Socket, timeout_ms: int, max_batch: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Every usable message already queued (up to ``max_batch``), after waiting at most
        ``timeout_ms`` for the first. One poll per batch rather than per message keeps a
        subscriber ahead of bursts; ``max_batch`` lets the caller check its stop flag under a flood."""
        out: list[tuple[str, dict[str, Any]]] = []
        if not sock.poll(timeout_ms, zmq.POLLIN):
            return out
        for _ in range(max_batch):
            try:
                msg = self._recv_one(sock, zmq.NOBLOCK)
            except zmq.Again:
                break
            if msg is not None:
                out.append(msg)
        return out


class Subscriptions:
    """Several endpoints, one SUB socket each (each may have CURVE keys of its own), polled together:
    the one receive loop of every multi-endpoint subscriber (the collector's recorder, ``analyzer
    --live``). ``poll`` returns ``[(endpoint index, [(topic, payload), ...]), ...]``, everything
    queued on the sockets that were ready; the index tells which endpoint (which daemon) sent it."""

    def __init__(self, ctx: zmq.Context, endpoints: Iterable[str], curve: CurveKeys | list[CurveKeys | None] | None = None,
                 topics: Iterable[str] = ("",), inbox: Inbox | None = None):
        self.endpoints = list(endpoints)
        curves = list(curve) if isinstance(curve, (list, tuple)) else [curve] * len(self.endpoints)
        self.inbox = inbox or Inbox()
        self.socks: list[zmq.Socket] = []
        try:
            for ep, c in zip(self.endpoints, curves):
                self.socks.append(connect_sub(ctx, ep, topics, curve=c))
        except Exception:
            self.close()
            raise
        self._poller = zmq.Poller()
        for sock in self.socks:
            self._poller.register(sock, zmq.POLLIN)

    def poll(self, timeout_ms: int) -> list[tuple[int, list[tuple[str, dict[str, Any]]]]]:
        ready = dict(self._poller.poll(timeout_ms))
        out = []
        for i, sock in enumerate(self.socks):
            if sock in ready:
                batch = self.inbox.drain(sock, timeout_ms=0)
                if batch:
                    out.append((i, batch))
        return out

    def close(self) -> None:
        for sock in self.socks:
            sock.close(linger=0)

    def __enter__(self) -> "Subscriptions":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
