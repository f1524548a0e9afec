"""The versioned message contract (see docs/architecture.md). Pure: no sockets, no files.

A bus message is ``[topic, payload]``; the payload is one msgpack map that always carries
``v`` (schema version), ``src`` (publisher id), ``seq`` (+1 per message per publisher),
``t`` (``time.monotonic_ns()`` when the reading was taken) and ``wall`` (``time.time_ns()``).
"""
from __future__ import annotations

import itertools
import socket
import time
from typing import Any

import msgpack

SCHEMA_VERSION = 1

TEL_GPU = "tel.gpu"
TEL_HOST = "tel.host"
TEL_HB = "tel.hb"
REQ_START = "req.start"
REQ_FIRST_TOKEN = "req.first_token"
REQ_END = "req.end"
BATCH_START = "batch.start"
BATCH_END = "batch.end"

TOPICS = (TEL_GPU, TEL_HOST, TEL_HB, REQ_START, REQ_FIRST_TOKEN, REQ_END, BATCH_START, BATCH_END)
ENVELOPE_KEYS = ("v", "src", "seq", "t", "wall")
# Keys each topic must carry besides the envelope; everything else is optional ("absent = not available").
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    TEL_GPU: ("gpu",),
    TEL_HOST: ("cpu_pct",),
    TEL_HB: (),
    REQ_START: ("rid",),
    REQ_FIRST_TOKEN: ("rid", "kind"),
    REQ_END: ("rid", "ok"),
    BATCH_START: ("batch",),
    BATCH_END: ("batch",),
}

# A payload bigger than this is dropped unread (counted by the receiver), never unpacked.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


class MessageError(ValueError):
    """A payload that does not follow the contract; the message says which key and why."""


def now_ns() -> tuple[int, int]:
    """Return ``(t, wall)``: monotonic ns (joins windows) and wall-clock ns (for humans)."""
    return time.monotonic_ns(), time.time_ns()


def source_id(role: str) -> str:
    """Publisher id such as ``telemetry@myhost``."""
    return f"{role}@{socket.gethostname()}"


class Stamper:
    """Adds the envelope to message bodies of one publisher, numbering them 0, 1, 2, ..."""

    def __init__(self, src: str, first_seq: int = 0):
        self.src = src
        self._seq = itertools.count(first_seq)

    def stamp(self, body: dict[str, Any], t: int | None = None, wall: int | None = None) -> dict[str, Any]:
        """Return a new payload: the envelope first, then ``body``. ``t``/``wall`` default to now."""
        if t is None:
            t, wall_now = now_ns()
            wall = wall_now if wall is None else wall
        elif wall is None:
            # Keep wall consistent with a caller-supplied monotonic stamp.
            wall = time.time_ns() - (time.monotonic_ns() - t)
        payload = {"v": SCHEMA_VERSION, "src": self.src, "seq": next(self._seq), "t": t, "wall": wall}
        payload.update(body)
        return payload


def encode(payload: dict[str, Any]) -> bytes:
    """msgpack bytes of one payload."""
    return msgpack.packb(payload, use_bin_type=True)


def decode(data: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Unpack one payload, refusing oversize input before allocating anything for it."""
    if len(data) > max_bytes:
        raise MessageError(f"payload of {len(data)} bytes is over the {max_bytes}-byte limit; dropped")
    try:
        payload = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MessageError(f"payload is not valid msgpack: {exc}") from exc
    if not isinstance(payload, dict):
        raise MessageError(f"payload must be a msgpack map, got {type(payload).__name__}")
    return payload


def validate(topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Check the envelope and the topic's required keys; return the payload unchanged."""
    for key in ENVELOPE_KEYS:
        if key not in payload:
            raise MessageError(f"{topic}: missing envelope key {key!r} (every payload needs {ENVELOPE_KEYS})")
    if payload["v"] != SCHEMA_VERSION:
        raise MessageError(f"{topic}: schema version {payload['v']!r}, this build reads {SCHEMA_VERSION}")
    for key in ("seq", "t", "wall"):
        if not isinstance(payload[key], int):
            raise MessageError(f"{topic}: {key!r} must be an integer, got {payload[key]!r}")
    for key in REQUIRED_KEYS.get(topic, ()):
        if key not in payload:
            raise MessageError(f"{topic}: missing key {key!r}")
    return payload
