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
import time
from pathlib import Path
from typing import Any, Iterator

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


def _iter_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(end_offset, obj)`` for each complete msgpack object; stop quietly at a cut."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=_MAX_OBJECT)
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_READ_CHUNK)
            if not chunk:
                return
            unpacker.feed(chunk)
            for obj in unpacker:
                yield unpacker.tell(), obj


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
        self.messages = 0
        self.good_bytes = 0
        self.problem = None
        objects = _iter_objects(self.path)
        try:
            for end, obj in objects:
                if self.header is None and self.good_bytes == 0:
                    if not (isinstance(obj, dict) and obj.get("kind") == HEADER_KIND):
                        raise RecordingError(
                            f"{self.path}: first object is not a recording header; "
                            "was this file written by shared.recording (telemetry.record or the collector)?"
                        )
                    self.header = obj
                    self.good_bytes = end
                    continue
                if self.good_bytes == 0:  # header already known from an earlier pass
                    self.good_bytes = end
                    continue
                if not (isinstance(obj, (list, tuple)) and len(obj) == 2 and isinstance(obj[0], str)
                        and isinstance(obj[1], dict)):
                    self.problem = f"corrupt object at byte {self.good_bytes}: expected [topic, payload]"
                    break
                self.good_bytes = end
                self.messages += 1
                yield obj[0], obj[1]
        except RecordingError:
            raise
        except Exception as exc:  # msgpack's FormatError, StackError, BufferFull...
            self.problem = f"corrupt data at byte {self.good_bytes}: {exc}"
        if self.header is None:
            raise RecordingError(f"{self.path}: empty or unreadable recording (no complete header object)")
        if self.problem is None and self.good_bytes < self.size_bytes:
            self.problem = (f"truncated tail: {self.size_bytes - self.good_bytes} bytes after byte "
                            f"{self.good_bytes} are not a complete message (the writer was killed?)")
        if self.problem:
            log.warning("recording_cut", path=str(self.path), problem=self.problem, messages=self.messages)


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
