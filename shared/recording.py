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
from bisect import bisect_left
from dataclasses import dataclass
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
_SCAN_READ = 8 << 20            # bytes a read in ``scan`` (its finder works on whole reads)

log = get_logger("recording")


class RecordingError(ValueError):
    """A file that is not a recording at all (no header); the message names the file and the fix."""


@dataclass
class Scanned:
    """A read of the file (``RecordingReader.scan``): the objects msgpack decoded (``topics``,
    ``payloads``, each one's first byte in the read: ``at``), what the finder returned, and the indices
    of its messages that are messages of the recording (``sel``), all in file order."""

    topics: list[str]
    payloads: list[dict[str, Any]]
    at: list[int]
    found: Any
    sel: Any


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
        self._note_cut()

    def scan(self, find: Callable[[bytes], Any], read_bytes: int = _SCAN_READ) -> Iterator["Scanned"]:
        """The messages a read of the file at a time, like ``batches``, but those ``find`` reads from
        the bytes are not decoded: ``find(buf)`` gives the messages it read (``.starts``/``.ends``,
        sorted byte offsets in ``buf``) and each Scanned says which of them are messages of the
        recording (``sel``), the others decoded by msgpack. ``find`` may read look-alikes (the bytes of
        a message inside a longer string): one is taken only where the message before it ends, so they
        never are. A corrupt object ends the scan as it ends ``batches``, named to the byte."""
        import numpy as np

        self.messages = 0
        self.good_bytes = 0
        self.problem = None
        carry = b""
        with open(self.path, "rb") as fh:
            while True:
                data = fh.read(read_bytes)
                if not data:
                    break
                buf = carry + data if carry else data
                part, used, bad = self._scan_read(buf, find(buf))
                self.good_bytes += used
                self.messages += len(part.topics) + part.sel.size
                if len(part.topics) or part.sel.size:
                    yield part
                if bad:
                    for topics, payloads in self._one_by_one(self.good_bytes):
                        yield Scanned(topics, payloads, list(range(len(topics))), None, np.zeros(0, dtype=np.int64))
                    break
                carry = buf[used:]
        if self.header is None:
            raise RecordingError(f"{self.path}: empty or unreadable recording (no complete header object)")
        self._note_cut()

    def _scan_read(self, buf: bytes, found: Any) -> tuple["Scanned", int, bool]:
        """(the read's messages, the bytes they take, whether what follows is not a message)."""
        import numpy as np

        part = Scanned([], [], [], found, None)
        view = memoryview(buf)
        # the usual read at once; from where that stops, run by run (the file's header: from the start)
        p, done = (0, False) if self.good_bytes == 0 else self._gaps_at_once(view, found, part)
        runs = np.zeros(found.starts.size + 1, dtype=np.int64)   # +1 at a run's first message, -1 after its last
        runs[0] += 1
        runs[np.searchsorted(found.starts, p)] -= 1
        complete, bad = not done, False
        if complete:
            starts, ends = found.starts.tolist(), found.ends.tolist()
            # the last message of the run of back-to-back found messages from each one
            breaks = np.flatnonzero(found.ends[:-1] != found.starts[1:]).tolist() + [len(starts) - 1]
        while p < len(buf) and complete:
            i = bisect_left(starts, p)
            at_header = p == 0 and self.good_bytes == 0  # (the file's first object: its header)
            if i < len(starts) and starts[i] == p and not at_header:
                j = breaks[bisect_left(breaks, i)]
                runs[i] += 1
                runs[j + 1] -= 1
                p = ends[j]
            else:
                p, complete, bad = self._decode_gap(view, p, starts, i, part)
        view.release()
        part.sel = np.flatnonzero(np.cumsum(runs[:-1]) > 0)
        return part, p, bad

    def _gaps_at_once(self, view: memoryview, found: Any, part: "Scanned") -> tuple[int, bool]:
        """The objects between the runs of back-to-back found messages, all decoded by one msgpack
        Unpacker, when each such gap holds whole objects (the usual read: no look-alike found). Returns
        (the byte up to which the read is done, and the found messages before it are messages; whether
        that is all of it, the rest a cut object). Not all: from the first gap whose objects run past
        its end (a look-alike began there), or from 0 when anything is odd (finds that overlap, an
        object not ``[topic, map]``, corrupt bytes)."""
        import numpy as np

        s, e, size = found.starts, found.ends, len(view)
        if s.size and (e[:-1] > s[1:]).any():
            return 0, False
        brk = np.flatnonzero(e[:-1] != s[1:])
        a = np.concatenate([[0], e[brk], e[-1:]]).astype(np.int64)
        b = np.concatenate([s[:1], s[brk + 1], [size]]).astype(np.int64)
        a, b = a[b > a], b[b > a]
        if not a.size:
            return size, True
        cut = np.cumsum(b - a)  # each gap's end in the joined bytes, and its start:
        begin = cut - (b - a)
        if int(cut[-1]) > _MAX_OBJECT:
            return 0, False
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=_MAX_OBJECT)
        objs, obj_end = [], []
        append, tell = obj_end.append, unpacker.tell
        try:
            unpacker.feed(b"".join([view[x:y] for x, y in zip(a.tolist(), b.tolist())]))
            for obj in unpacker:
                objs.append(obj)
                append(tell())
        except Exception:  # (msgpack raises several unrelated types): read run by run to name it
            return 0, False
        split = _split(objs)
        if split is None:
            return 0, False
        obj_end = np.array(obj_end, dtype=np.int64)
        inner = cut[:-1] if b[-1] == size else cut  # a gap before a found message must end with an object
        short = np.flatnonzero(~np.isin(inner, obj_end))
        if short.size:  # from that gap on, run by run
            k = int(short[0])
            keep = int(np.searchsorted(obj_end, begin[k], side="right"))
            stop, done = int(a[k]), False
        else:
            keep, done = len(objs), True
            if b[-1] != size:  # the read ends with a found message
                stop = size
            else:  # up to the last whole object of the gap that ends the read
                last = int(obj_end[-1]) if keep and obj_end[-1] > begin[-1] else int(begin[-1])
                stop = int(a[-1]) + last - int(begin[-1])
        first = np.concatenate([[0], obj_end[:keep - 1]]) if keep else obj_end[:0]
        gap = np.searchsorted(cut, first, side="right")
        part.topics.extend(split[0][:keep])
        part.payloads.extend(split[1][:keep])
        part.at.extend((a[gap] + first - begin[gap]).tolist())
        return stop, done

    def _decode_gap(self, view: memoryview, p: int, starts: list[int], i: int, part: "Scanned"
                    ) -> tuple[int, bool, bool]:
        """Objects by msgpack from byte ``p`` to the next found message (``starts[i]``), or on past it
        when an object spans it (a look-alike). (end of the last whole object, whether that is a found
        message's start rather than the read's end, whether what follows is not ``[topic, map]``)."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=_MAX_OBJECT)
        origin = p
        stop = p
        while True:
            nxt = starts[i] if i < len(starts) else len(view)
            try:
                unpacker.feed(view[stop:nxt])
                stop = nxt
                for obj in unpacker:
                    if p == 0 and self.good_bytes == 0:
                        self._take_header(obj)
                    else:
                        split = _split([obj])
                        if split is None:
                            return p, False, True
                        part.topics += split[0]
                        part.payloads += split[1]
                        part.at.append(p)
                    p = origin + unpacker.tell()
            except RecordingError:
                raise
            except Exception:  # msgpack's FormatError, StackError, BufferFull...: named by _one_by_one
                return p, False, True
            if p == stop:
                return p, True, False
            if stop == len(view):
                return p, False, False
            i += 1  # an object spans starts[i]: a look-alike

    def _note_cut(self) -> None:
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
                # (FormatError, bytes that are no msgpack, has no message: its name says it)
                self.problem = f"corrupt data at byte {self.good_bytes}: {str(exc) or type(exc).__name__}"


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
