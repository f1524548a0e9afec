"""The one reader and writer of ``stream.msgpack`` recordings.

A recording is an append-only sequence of msgpack objects: first a header map
(``{"v", "kind": "header", "created", "host", ...}``), then ``[topic, payload]`` arrays.
The writer flushes often, so a killed process leaves at most a truncated last object;
the reader yields every complete message and reports the cut instead of raising.
Opening an existing recording for append first cuts such a tail, so the file stays readable.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import msgpack

from shared import timebase
from shared.logs import get_logger
from shared.messages import SCHEMA_VERSION

HEADER_KIND = "header"
_READ_CHUNK = 1 << 20
_MAX_OBJECT = 64 * 1024 * 1024  # one object larger than this means a corrupt file, not a message

log = get_logger("recording")


class RecordingError(ValueError):
    """A file that is not a recording at all (no header); the message names the file and the fix."""


class RecordingReader:
    """Iterate ``(topic, payload)`` over a recording; after iteration, ``problem`` says what was cut.

    >>> reader = RecordingReader(path)
    >>> for topic, payload in reader: ...
    >>> reader.problem   # None, or a sentence naming the offset of the cut
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.header: dict[str, Any] | None = None
        self.problem: str | None = None
        self.messages = 0
        self.good_bytes = 0
        self.size_bytes = self.path.stat().st_size

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for topics, payloads in self.batches():
            yield from zip(topics, payloads)

    def batches(self) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
        """The messages as (topics, payloads), two lists per read of the file: msgpack decodes a whole
        read at once, and its shape is checked per list, not per message (the fast path of a long
        recording; the analyzer takes the lists as they are). Anything unusual is re-read object by
        object to name the exact byte."""
        self.messages = 0
        self.good_bytes = 0
        self.problem = None
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=_MAX_OBJECT)
        with open(self.path, "rb") as fh:
            while True:
                chunk = fh.read(_READ_CHUNK)
                if not chunk:
                    break
                unpacker.feed(chunk)
                start = end = self.good_bytes
                objs: list | None = []
                append, tell = objs.append, unpacker.tell
                try:
                    for obj in unpacker:
                        append(obj)
                        end = tell()  # (after a cut object, tell() counts its bytes too: read it here)
                except Exception:  # msgpack's FormatError, StackError, BufferFull...
                    objs = None
                if objs and start == 0:
                    self._take_header(objs.pop(0))
                split = None if objs is None else _split(objs)
                if split is None:
                    yield from self._one_by_one(start)
                    break
                self.good_bytes = end
                self.messages += len(objs)
                if objs:
                    yield split
        if self.header is None:
            raise RecordingError(f"{self.path}: empty or unreadable recording (no complete header object)")
        if self.problem is None and self.good_bytes < self.size_bytes:
            self.problem = (f"truncated tail: {self.size_bytes - self.good_bytes} bytes after byte "
                            f"{self.good_bytes} are not a complete message (the writer was killed?)")
        if self.problem:
            log.warning("recording_cut", path=str(self.path), problem=self.problem, messages=self.messages)

    def _take_header(self, obj: Any) -> None:
        if self.header is None:
            if not (isinstance(obj, dict) and obj.get("kind") == HEADER_KIND):
                raise RecordingError(
                    f"{self.path}: first object is not a recording header; "
                    "was this file written by shared.recording (telemetry.record or the collector)?"
                )
            self.header = obj
        # else: the header is already known from an earlier pass

    def _one_by_one(self, start: int) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
        """From byte ``start`` (the end of the last whole message), object by object: yields the good
        messages and stops at the first bad one, naming its byte in ``problem``."""
        with open(self.path, "rb") as fh:
            fh.seek(start)
            unpacker = msgpack.Unpacker(fh, raw=False, strict_map_key=False, max_buffer_size=_MAX_OBJECT,
                                        read_size=_READ_CHUNK)
            try:
                for obj in unpacker:
                    end = start + unpacker.tell()
                    if self.good_bytes == 0:
                        self._take_header(obj)
                        self.good_bytes = end
                        continue
                    split = _split([obj])
                    if split is None:
                        self.problem = f"corrupt object at byte {self.good_bytes}: expected [topic, payload]"
                        return
                    self.good_bytes = end
                    self.messages += 1
                    yield split
            except RecordingError:
                raise
            except Exception as exc:  # msgpack's FormatError, StackError, BufferFull...
                self.problem = f"corrupt data at byte {self.good_bytes}: {exc}"


def _split(objs: list) -> tuple[list[str], list[dict[str, Any]]] | None:
    """(topics, payloads) when every object is ``[topic: str, payload: map]`` (checked per list, by the
    set of shapes), else None."""
    if not objs:
        return [], []
    if set(map(type, objs)) != {list} or set(map(len, objs)) != {2}:
        return None
    topics, payloads = list(map(itemgetter(0), objs)), list(map(itemgetter(1), objs))
    if set(map(type, topics)) != {str} or set(map(type, payloads)) != {dict}:
        return None
    return topics, payloads


def read_recording(path: str | os.PathLike) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]], str | None]:
    """Read a whole recording: ``(header, [(topic, payload), ...], problem_or_None)``."""
    reader = RecordingReader(path)
    items = list(reader)
    return reader.header or {}, items, reader.problem


class RecordingWriter:
    """Append ``[topic, payload]`` objects to a recording, flushing at least every ``flush_s``.

    A new file gets a header; an existing one is checked, its truncated tail (if any) cut,
    and writing goes on after the last whole message, so resume never corrupts a recording.
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any] | None = None, flush_s: float = 0.2):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_s = flush_s
        self.written = 0
        self.resumed_from: int | None = None
        if self.path.exists() and self.path.stat().st_size > 0:
            reader = RecordingReader(self.path)
            for _ in reader:
                pass
            self.header = reader.header
            self.resumed_from = reader.messages
            if reader.good_bytes < reader.size_bytes:
                log.warning("recording_tail_cut", path=str(self.path), kept_bytes=reader.good_bytes,
                            dropped_bytes=reader.size_bytes - reader.good_bytes)
                with open(self.path, "r+b") as fh:
                    fh.truncate(reader.good_bytes)
            self._fh = open(self.path, "ab")
        else:
            self.header = {"v": SCHEMA_VERSION, "kind": HEADER_KIND, "created": time.time_ns(),
                           "host": socket.gethostname(), **(meta or {})}
            self._fh = open(self.path, "wb")
            self._fh.write(msgpack.packb(self.header, use_bin_type=True))
            self._fh.flush()
        self._packer = msgpack.Packer(use_bin_type=True)
        self._last_flush = timebase.now_s()

    def write(self, topic: str, payload: dict[str, Any]) -> None:
        """Append one message; flushes to the OS when ``flush_s`` has passed since the last flush."""
        self._fh.write(self._packer.pack([topic, payload]))
        self.written += 1
        now = timebase.now_s()
        if now - self._last_flush >= self.flush_s:
            self._fh.flush()
            self._last_flush = now

    def flush(self) -> None:
        self._fh.flush()
        self._last_flush = timebase.now_s()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Source(Protocol):
    def poll(self, timeout_ms: int) -> list[tuple[int, list[tuple[str, dict[str, Any]]]]]: ...


class BusRecording:
    """The one recording core of both recorders (``python -m telemetry.record`` and the collector's
    Recorder): messages from a bus source (``shared.bus.Subscriptions``) and the process's own events
    go to one RecordingWriter, each received batch under one lock acquisition so the two writers never
    interleave bytes. ``on_batch(endpoint index, batch)`` runs after each batch is written (the
    collector counts heartbeats and samples there)."""

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any] | None = None, flush_s: float = 0.2):
        self.writer = RecordingWriter(path, meta=meta, flush_s=flush_s)
        self.lock = threading.Lock()
        self.received = 0

    def write(self, topic: str, payload: dict[str, Any], flush: bool = False) -> None:
        """One own message (an event), between received batches."""
        with self.lock:
            self.writer.write(topic, payload)
            if flush:
                self.writer.flush()

    def run(self, source: _Source, stop: threading.Event, duration_s: float | None = None, count: int | None = None,
            on_batch: Callable[[int, list[tuple[str, dict[str, Any]]]], None] | None = None,
            poll_ms: int = 50) -> int:
        """Record until ``stop`` is set, ``duration_s`` passed or ``count`` messages were written;
        returns how many were received."""
        end = timebase.now_s() + duration_s if duration_s else None
        while not stop.is_set() and (count is None or self.received < count):
            if end is not None and timebase.now_s() >= end:
                break
            for index, batch in source.poll(poll_ms):
                if count is not None:
                    batch = batch[:count - self.received]
                with self.lock:
                    for topic, payload in batch:
                        self.writer.write(topic, payload)
                self.received += len(batch)
                if on_batch is not None:
                    on_batch(index, batch)
                if count is not None and self.received >= count:
                    break
        return self.received

    def close(self) -> None:
        with self.lock:
            self.writer.close()
