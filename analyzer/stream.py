"""Turn a list of bus messages into sorted per-source arrays and request records (pure).

Both inputs (``--live`` and ``--batch``) end here with the same message list, so the same
results come out. The order messages arrived in does not matter: everything is de-duplicated
on (src, seq, t) and sorted on (t, src, seq) first.
"""
from __future__ import annotations

from array import array
import functools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable

import msgpack
import numpy as np

from analyzer import clock, hosts, mapped
from shared import messages as M
from shared.logs import get_logger
from shared.numbers import finite

log = get_logger("analyzer.stream")

TELEMETRY = (M.TEL_GPU, M.TEL_HOST)
DEFAULT_LOOKBACK_S = 120.0
# tel.gpu keys read by name for a GPU's meta, checked against the declarations at import (a key renamed
# in shared/messages.py fails here, not mid-analysis); the readings are M.GPU_SERIES / M.HOST_SERIES
GPU_META = M.TelGpu.declared("gpu", "uuid", "name")
_DRIVER, _POWER_KIND, _POWER_LIMIT = M.TelGpu.declared("driver", "power_kind", "power_limit_w")
_PROCS, _RAPL = M.TelHost.declared("procs", "rapl_uj")


@dataclass
class Series:
    """One sampled source (a GPU, or the host), sorted by t. Absent readings are NaN."""

    key: str
    src: str
    t_ns: np.ndarray
    seq: np.ndarray
    values: dict[str, np.ndarray]
    simulated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


class Request:
    """A request's events: its req.start, req.first_token(s) and req.end, typed. Either held, or left in a
    file of msgpack events (the columnar copy's events.msgpack: ``EventFile``) and read back when used, the
    last few thousand read kept: a day of requests' events are not all held (they were ~4 KiB a request).
    What every pass over the requests reads is held either way: ``start_t`` and ``end_t`` (ns; None
    without a req.end), ``warmup`` and ``ok`` (None without a req.end)."""

    __slots__ = ("rid", "start_t", "end_t", "warmup", "ok", "_start", "_end", "_firsts", "_answer_at", "_file", "_at")

    def __init__(self, rid: str, start: M.ReqStart, end: M.ReqEnd | None = None,
                 first_tokens: list[M.ReqFirstToken] | None = None, answer_at: StoredAnswer | None = None):
        self.rid, self._file, self._at = rid, None, None
        self._start, self.start_t, self.warmup = start, start.t, bool(start.warmup)
        self._firsts = [] if first_tokens is None else first_tokens
        self._answer_at = answer_at
        self.end = end

    @classmethod
    def stored(cls, rid: str, file: EventFile, at: int, size: int, t: int, warmup: Any) -> Request:
        """A request whose req.start is the event at byte ``at`` (``size`` bytes) of ``file``."""
        r = cls.__new__(cls)
        r.rid, r._file, r._at = rid, file, array("q", (at, size, -1, 0))
        r.start_t, r.warmup, r.end_t, r.ok = t, bool(warmup), None, None
        r._start = r._end = r._answer_at = r._firsts = None
        return r

    def store_first_token(self, at: int, size: int) -> None:
        self._at.extend((at, size))

    def store_end(self, at: int, size: int, t: int, ok: Any) -> None:
        self._at[2:4] = array("q", (at, size))
        self.end_t, self.ok = t, bool(ok)

    def events(self, keep: bool = True) -> tuple[M.ReqStart, M.ReqEnd | None, list[M.ReqFirstToken]]:
        """(start, end, first tokens). ``keep=False``: a stored request's read for one use, not kept among
        the last read (a pass that reads each request once: kept, they would outlive what it builds between)."""
        if self._file is None:
            return self._start, self._end, self._firsts
        return self._file.request(self, keep)

    @property
    def start(self) -> M.ReqStart:
        return self._start if self._file is None else self._file.request(self)[0]

    @property
    def end(self) -> M.ReqEnd | None:
        return self._end if self._file is None else self._file.request(self)[1]

    @end.setter
    def end(self, end: M.ReqEnd | None) -> None:
        if self._file is not None:
            raise AttributeError(f"{self.rid}: a stored request's events are its file's")
        self._end = end
        self.end_t, self.ok = (None, None) if end is None else (end.t, end.ok)

    @property
    def first_tokens(self) -> list[M.ReqFirstToken]:
        return self._firsts if self._file is None else self._file.request(self)[2]

    @property
    def answer_at(self) -> StoredAnswer | None:
        """Where the req.end's text and thinking are on disk (None: on the req.end itself)."""
        if self._file is not None and self.end_t is not None:
            return StoredAnswer(self._file.path, self._at[2], self._at[3], self.rid)
        return self._answer_at

    @answer_at.setter
    def answer_at(self, at: StoredAnswer | None) -> None:
        self._answer_at = at

    def __repr__(self) -> str:
        return f"Request({self.rid!r}, {'stored' if self._file is not None else 'held'}, end_t={self.end_t})"


class EventFile:
    """A file of msgpack events, ``[i, topic, payload]`` each (the columnar copy's events.msgpack), whose
    requests' events are read back by place (``Request.stored``) when used: typed again, the answer left
    out (``answer`` reads it), the last ``CACHE`` requests read kept (the passes go in time order)."""

    CACHE = 2048
    NEAR = 1 << 20  # a request's events this close together are read in one read

    def __init__(self, path: Path):
        self.path = Path(path)
        self._cache: OrderedDict[int, tuple] = OrderedDict()  # start's byte → (start, end, first tokens)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_cache": OrderedDict()}

    def request(self, r: Request, keep: bool = True) -> tuple[M.ReqStart, M.ReqEnd | None, list[M.ReqFirstToken]]:
        """Request r's events, typed; ``keep``: kept among the last read."""
        at = r._at
        got = self._cache.get(at[0])
        if got is not None:
            self._cache.move_to_end(at[0])
            return got
        has_end = at[2] >= 0
        places = [(at[0], at[1])] + ([(at[2], at[3])] if has_end else []) + \
            [(at[k], at[k + 1]) for k in range(4, len(at), 2)]
        topics = [M.REQ_START] + ([M.REQ_END] if has_end else []) + [M.REQ_FIRST_TOKEN] * ((len(at) - 4) // 2)
        payloads = [self._check(e, t, r.rid, a) for (a, _), t, e in zip(places, topics, self._read(places))]
        # (checked as the recording was read, before the copy was written)
        start, end = M.ReqStart.from_msg(payloads[0], check=False), None
        if has_end:
            for k in ANSWER_KEYS:  # read by ``answer`` where used, not kept with the rest
                payloads[1].pop(k, None)
            end = _rid_of(r, _req_end(payloads[1], check=False))
        firsts = [_rid_of(r, M.ReqFirstToken.from_msg(p, check=False)) for p in payloads[1 + has_end:]]
        got = (start, end, firsts)
        if keep:
            self._cache[at[0]] = got
            if len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
        return got

    def _read(self, places: list[tuple[int, int]]) -> list[Any]:
        lo, hi = min(a for a, _ in places), max(a + n for a, n in places)
        with open(self.path, "rb") as fh:
            if hi - lo <= self.NEAR:  # one read (a request's events are usually near each other)
                fh.seek(lo)
                data = memoryview(fh.read(hi - lo))
                raw = [data[a - lo:a - lo + n] for a, n in places]
            else:
                raw = []
                for a, n in places:
                    fh.seek(a)
                    raw.append(fh.read(n))
        out = []
        for (a, _), b in zip(places, raw):
            try:
                out.append(msgpack.unpackb(b, raw=False, strict_map_key=False))
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                out.append(exc)
        return out

    def _check(self, event: Any, topic: str, rid: str, at: int) -> dict[str, Any]:
        ok = isinstance(event, list) and len(event) == 3 and event[1] == topic and isinstance(event[2], dict) \
            and event[2].get("rid") == rid
        if not ok:
            raise RuntimeError(f"{self.path}: byte {at} no longer holds the {topic} of {rid!r} ({event!r:.80}): "
                               "the columnar copy changed during the analysis; run the analyzer again")
        return event[2]


ANSWER_KEYS = M.ReqEnd.declared("text", "thinking")  # a req.end's answer: the bulk of a request's events


class StoredAnswer:
    """A req.end's text and thinking left in a file of msgpack events (the columnar copy's events.msgpack):
    a day of requests' answers are not all held, and a re-analysis whose request JSON are current never
    reads them. ``at``, ``size``: the event's bytes, a ``[i, topic, payload]`` list."""

    __slots__ = ("path", "at", "size", "rid")

    def __init__(self, path: Path, at: int, size: int, rid: str):
        self.path, self.at, self.size, self.rid = path, at, size, rid

    def read(self) -> tuple[str | None, str | None]:
        with open(self.path, "rb") as fh:
            fh.seek(self.at)
            data = fh.read(self.size)
        try:
            _, topic, p = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if topic != M.REQ_END or p.get("rid") != self.rid:
                raise ValueError(f"{topic} of {p.get('rid')!r}")
            text, thinking = (p.get(k) for k in ANSWER_KEYS)
            if not all(v is None or isinstance(v, str) for v in (text, thinking)):
                raise ValueError("text or thinking not a string")
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise RuntimeError(f"{self.path}: byte {self.at} no longer holds the req.end of {self.rid!r} ({exc}): "
                               "the columnar copy changed during the analysis; run the analyzer again") from exc
        return text, thinking


def answer(r: Request) -> tuple[str | None, str | None]:
    """(text, thinking) of the request's req.end: on the end itself, or read back from where it was left."""
    if r.answer_at is not None:
        return r.answer_at.read()
    return (r.end.text, r.end.thinking) if r.end is not None else (None, None)


@dataclass
class BatchData:
    """Everything the pipeline needs, as plain values."""

    origin_ns: int                       # t of the first message in scope: times become seconds from here
    gpus: list[Series]
    host: Series | None
    procs: dict[str, Series]             # watched process name -> cpu_pct / rss_mib
    rapl: dict[str, Series]              # zone -> cumulative energy_uj
    src_seqs: dict[str, np.ndarray]      # every seq seen per publisher (for gap detection)
    requests: Sequence[Request]          # sorted by (start t, rid): a list, or StoredRequests
    batch_start: M.BatchStart | None
    batch_end: M.BatchEnd | None
    invalid: int = 0
    duplicates: int = 0
    clock: dict[str, Any] = field(default_factory=dict)   # telemetry src → analyzer.clock.Mapping
    clock_notes: list[str] = field(default_factory=list)  # sources that could not be mapped
    source: Any = None   # where the telemetry is read by stretch of time (analyzer.slabs.Source); None: the arrays above


def normalise(items: Iterable[tuple[str, dict[str, Any]]]) -> tuple[list[tuple[str, dict[str, Any]]], int, int]:
    """Validate, de-duplicate on (src, seq, t) and sort on (t, src, seq). Returns (messages, invalid, duplicates)."""
    seen: set[tuple[str, int, int]] = set()
    out = []
    invalid = duplicates = 0
    for topic, payload in items:
        try:
            M.validate(topic, payload)
        except M.MessageError as exc:
            invalid += 1
            if invalid <= 3:
                log.warning("message_invalid", topic=topic, problem=str(exc))
            continue
        # t in the key too: a restarted publisher counts seq from 0 again, and those are new messages.
        key = (str(payload["src"]), payload["seq"], payload["t"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        out.append((topic, payload))
    out.sort(key=lambda m: (m[1]["t"], str(m[1]["src"]), m[1]["seq"]))
    return out, invalid, duplicates


def scope(messages: list[tuple[str, dict[str, Any]]], lookback_s: float = DEFAULT_LOOKBACK_S) -> list[tuple[str, dict[str, Any]]]:
    """The messages that belong to the batch: telemetry from ``lookback_s`` before the first
    batch.start (idle baseline) to the last batch.end; every event. Without batch markers: all.

    The live analyzer applies the same rule to its buffer, so both inputs analyse the same set.
    """
    starts = [p["t"] for t, p in messages if t == M.BATCH_START]
    ends = [p["t"] for t, p in messages if t == M.BATCH_END]
    lo = min(starts) - int(lookback_s * 1e9) if starts else None
    hi = max(ends) if ends else None
    if lo is None and hi is None:
        return messages
    out = []
    for topic, p in messages:
        if topic in TELEMETRY or topic == M.TEL_HB:
            if (lo is not None and p["t"] < lo) or (hi is not None and p["t"] > hi):
                continue
        out.append((topic, p))
    return out


def _num(v: Any) -> float:
    x = finite(v)
    return np.nan if x is None else x


def _series(key: str, src: str, rows: list[dict[str, Any]], fields: tuple[str, ...]) -> Series:
    t = np.fromiter((r["t"] for r in rows), dtype=np.int64, count=len(rows))
    seq = np.fromiter((r["seq"] for r in rows), dtype=np.int64, count=len(rows))
    values = {f: np.fromiter((_num(r.get(f)) for r in rows), dtype=np.float64, count=len(rows)) for f in fields}
    simulated = any(bool(r.get("simulated")) for r in rows)
    return Series(key, src, t, seq, values, simulated)


REQUEST_TOPICS = (M.REQ_START, M.REQ_FIRST_TOKEN, M.REQ_END)


class PackedStrings(Sequence):
    """Strings held as one UTF-8 buffer and where each begins and ends (16 bytes a string beside its
    text; buffer and bounds in mapped files when large, analyzer.mapped), a str made when one is read: a
    week's rids as str objects were ~60 bytes each over their text, and, made one by one among the
    events' short-lived maps, they kept the allocator's pools they were put in. ``take(idx)``: those
    strings, sharing the buffer."""

    __slots__ = ("_buf", "_lo", "_hi")

    def __init__(self, buf: bytes, lo: np.ndarray, hi: np.ndarray):
        self._buf, self._lo, self._hi = buf, lo, hi

    @classmethod
    def of(cls, buf: Any, ends: Any) -> PackedStrings:
        """The strings of ``buf`` (UTF-8: bytes, or an array of them) that end at each of ``ends``, one
        after the other; buffer and bounds mapped when large (analyzer.mapped), else held."""
        hi = mapped.kept(np.frombuffer(ends, dtype=np.int64).copy() if len(ends) else np.zeros(0, dtype=np.int64))
        lo = mapped.kept(np.concatenate([np.zeros(min(hi.size, 1), dtype=np.int64), hi[:-1]]))
        big = mapped.kept(np.frombuffer(buf, dtype=np.uint8))
        return cls(big if mapped.is_mapped(big) else bytes(big), lo, hi)

    def __len__(self) -> int:
        return int(self._lo.size)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        return str(self._buf[int(self._lo[i]):int(self._hi[i])], "utf-8", "surrogatepass")

    def __iter__(self):
        buf = self._buf
        for k in range(0, len(self), 4096):  # (the places as ints a block at a time, their pages let go)
            for a, b in zip(self._lo[k:k + 4096].tolist(), self._hi[k:k + 4096].tolist()):
                yield str(buf[a:b], "utf-8", "surrogatepass")
            for m in (self._lo, self._hi, buf):  # (held bytes, or a heap array: as they are)
                mapped.written(m)

    def take(self, idx: np.ndarray) -> PackedStrings:
        idx = np.asarray(idx, dtype=np.int64)
        return PackedStrings(self._buf, mapped.take(self._lo, idx), mapped.take(self._hi, idx))


def take_strings(strings: Sequence[str], idx: np.ndarray) -> Sequence[str]:
    """The strings at ``idx``: a PackedStrings' view, else a list."""
    if isinstance(strings, PackedStrings):
        return strings.take(idx)
    return [strings[i] for i in np.asarray(idx).tolist()]


class StoredEvents:
    """A file's request events (``EventFile``) as columns, in file order, none held as a map: per event
    its ``kind`` (an index of REQUEST_TOPICS), its place in the recording (``idx``), publisher code
    (``src``), ``seq``, ``t``, where it is in the file (``at``, ``size``), ``flag`` (a req.start's
    warmup, a req.end's ok) and its rid (``rid``, an index of ``rids``: one string a request, packed).
    The columns are appended to as events come and spilled to temporary files as they grow
    (analyzer.mapped.Spooled), each event's rid as its text: no Python object is kept per event or per
    request while the file is read (a month's would be hundreds of MiB, and kept the allocator's pools
    the events' maps were read into); ``done()`` makes them arrays (mapped) and numbers the rids.
    ``stored_requests`` makes the requests of them."""

    NAMES = ("kind", "flag", "idx", "src", "seq", "t", "at", "size")
    RECENT = 1 << 14  # rids the numbering looks up by their bytes: those last met (a request's events are near)

    def __init__(self, file: EventFile):
        self.file = file
        self._cols = {k: mapped.Spooled("b" if k in ("kind", "flag") else "q") for k in self.NAMES}
        self._text, self._ends = mapped.Spooled("B"), mapped.Spooled("q")  # each event's rid: UTF-8, where it ends
        self._n = 0
        self.rids = PackedStrings.of(b"", array("q"))
        self.rid = np.zeros(0, dtype=np.int64)
        for k in self.NAMES:
            setattr(self, k, np.zeros(0, dtype=np.int8 if k in ("kind", "flag") else np.int64))

    def add(self, kind: int, idx: int, src: int, p: dict[str, Any], at: int, size: int) -> None:
        c = self._cols
        self._text.buf.frombytes(p["rid"].encode("utf-8", "surrogatepass"))
        self._ends.buf.append(len(self._text))
        c["kind"].buf.append(kind)
        c["flag"].buf.append(bool(p.get(_WARMUP) if kind == 0 else p.get(_OK)))
        for k, v in (("idx", idx), ("src", src), ("seq", p["seq"]), ("t", p["t"]), ("at", at), ("size", size)):
            c[k].buf.append(v)
        self._n += 1
        if not self._n % mapped.Spooled.CHUNK:
            for col in (*c.values(), self._text, self._ends):
                col.spill()

    def done(self) -> StoredEvents:
        """Read whole: the columns as arrays; the rids numbered in the order first met, each packed once."""
        for k, col in self._cols.items():
            setattr(self, k, col.array())
        text, ends = self._text.array(), self._ends.array()
        self._cols, self._text, self._ends = {}, mapped.Spooled("B"), mapped.Spooled("q")
        # the rids last met looked up, not every one: held, a day's were ~100 bytes a request. A rid that
        # comes back once let go (a restart long after) is then numbered twice: found by the rids'
        # hashes, and the whole numbered again with every rid held
        code, uniq, uniq_ends = _number_rids(text, ends, self.RECENT) or _number_rids(text, ends, None)
        self.rid = code.array()
        self.rids = PackedStrings.of(uniq.array(), uniq_ends.array())
        return self

    def __len__(self) -> int:
        return self._n

    def columns(self) -> dict[str, np.ndarray]:
        """src, seq, t, idx as int64 arrays (to_batch's de-duplication and order)."""
        return {k: getattr(self, k) for k in ("src", "seq", "t", "idx")}


def _number_rids(text: np.ndarray, ends: np.ndarray, recent: int | None):
    """Each event's rid (``text`` up to each of ``ends``) numbered in the order first met, and each rid's
    text once: (code an event, the rids' texts, where each ends), spooled (analyzer.mapped). ``recent``:
    only the rids last met are held (from ``recent`` up to twice that); None when a rid let go came back
    (then numbered twice: its hash is another rid's). ``recent`` None: every rid held."""
    code, uniq, uniq_ends = mapped.Spooled("q"), mapped.Spooled("B"), mapped.Spooled("q")
    hashes = mapped.Spooled("q") if recent else None  # each rid's hash, as first met
    seen: dict[bytes, int] = {}
    n, lo = 0, 0
    for k in range(0, ends.size, mapped.Spooled.CHUNK):  # a block of events' texts as one bytes at a time
        block = ends[k:k + mapped.Spooled.CHUNK].tolist()
        chunk, base = text[lo:block[-1]].tobytes(), lo
        for hi in block:
            rid = chunk[lo - base:hi - base]
            got = seen.pop(rid, None) if recent else seen.get(rid)
            if got is None:
                got, n = n, n + 1
                uniq.buf.frombytes(rid)
                uniq_ends.buf.append(len(uniq))
                if hashes is not None:
                    hashes.buf.append(hash(rid))
                if recent and len(seen) >= 2 * recent:  # (the oldest half let go: dicts keep insertion order)
                    seen = dict(islice(seen.items(), recent, None))
            seen[rid] = got  # (held: last met, at the dict's end)
            code.buf.append(got)
            lo = hi
        for col in (code, uniq, uniq_ends, hashes or uniq):
            col.spill()
        mapped.drop()
    del seen
    if hashes is not None and _repeated(hashes.array(), uniq.array(), uniq_ends.array()):
        return None
    return code, uniq, uniq_ends


def _repeated(hashes: np.ndarray, text: np.ndarray, ends: np.ndarray) -> bool:
    """Whether two of the strings (``text`` up to each of ``ends``; ``hashes``, theirs) are the same: their
    hashes sorted (a copy, in a mapped file), the strings of a hash met twice compared."""
    if hashes.size < 2:
        return False
    h = mapped.empty(hashes.size, np.int64)
    h[:] = hashes
    h.sort()
    twice = np.unique(np.concatenate([b[1:][b[1:] == b[:-1]] for b in mapped.in_blocks(h, overlap=1)]))
    del h
    for v in twice.tolist():  # (rare: a restarted request, or two rids of one hash)
        texts = [bytes(text[(ends[i - 1] if i else 0):ends[i]]) for i in np.flatnonzero(hashes == v).tolist()]
        if len(set(texts)) < len(texts):
            return True
    return False


_WARMUP, _OK = M.ReqStart.declared("warmup")[0], M.ReqEnd.declared("ok")[0]


def stored_requests(ev: StoredEvents, order: np.ndarray) -> StoredRequests:
    """The requests of ``ev``'s events taken in ``order`` (sorted and de-duplicated), as
    ``events_to_requests`` makes them of held events (a later req.start replaces, the first req.end counts;
    sorted by (start t, rid)), each left in ev's file: columns (``StoredRequests``), not objects. The
    events are read a block at a time and the columns spooled (analyzer.mapped): no Python object a request."""
    rids = ev.rids
    slot = array("q", [-1]) * len(rids)  # rid code → its request's number (a restarted request takes a new one)
    ended = bytearray()  # each request's: a req.end counted
    rid_at, start = mapped.Spooled("q"), mapped.Spooled("q")  # start: (at, size, t, warmup) a request
    ends, firsts = mapped.Spooled("q"), mapped.Spooled("q")  # (request, at, size, t, ok) a req.end; (request, at, size)
    order = np.asarray(order, dtype=np.int64)
    step = mapped.Spooled.CHUNK
    for lo in range(0, order.size, step):
        js = order[lo:lo + step]
        for code, k, f, t, at, size in zip(ev.rid[js].tolist(), ev.kind[js].tolist(), ev.flag[js].tolist(),
                                           ev.t[js].tolist(), ev.at[js].tolist(), ev.size[js].tolist()):
            if k == 0:
                if slot[code] >= 0:
                    log.warning("request_restarted", rid=rids[code], note="a later req.start replaces the earlier one")
                slot[code] = len(ended)
                ended.append(0)
                rid_at.buf.append(code)
                start.buf.extend((at, size, t, f))
            elif k == 1:
                n = slot[code]
                if n >= 0:
                    firsts.buf.extend((n, at, size))
            else:
                n = slot[code]
                if n < 0:
                    log.warning("request_end_without_start", rid=rids[code])
                elif not ended[n]:
                    ended[n] = 1
                    ends.buf.extend((n, at, size, t, f))
        for col in (rid_at, start, ends, firsts):
            col.spill()
        mapped.drop()
    got = np.frombuffer(slot, dtype=np.int64)
    n_started = len(ended)
    # the requests not replaced by a later req.start: every one started (no restart, the usual), else sorted
    every = int(np.count_nonzero(got >= 0)) == n_started
    live = mapped.arange(n_started) if every else mapped.kept(np.sort(got[got >= 0]))
    del slot, ended, got
    # each request's end (none: at -1), filled and then set a block at a time, the pages handed back after
    # each (whole, the ends and their copies were ~80 bytes a request at once)
    end = mapped.empty((len(rid_at), 4), np.int64)
    for lo in range(0, end.shape[0], _BLOCK):
        end[lo:lo + _BLOCK] = (-1, 0, 0, 0)
        mapped.written(end)
    for e in mapped.in_blocks(ends.array().reshape(-1, 5), _BLOCK):
        end[e[:, 0]] = e[:, 1:]
        mapped.written(end)
    cols = _RequestColumns(ev.file, rids, rid_at.array(), start.array().reshape(-1, 4), end,
                           firsts.array().reshape(-1, 3))
    # by (start t, rid), as events_to_requests sorts: the rids read only where two start at one instant
    if live.size == n_started and mapped.rising(cols.start[:, 2]):  # (every request, started one after another)
        return StoredRequests(cols, live)
    t0 = cols.start[live, 2]
    by_t = np.argsort(t0, kind="stable")
    same = np.flatnonzero(t0[by_t][1:] == t0[by_t][:-1])
    tied = np.unique(np.concatenate([by_t[same], by_t[same + 1]]))
    by_rid = np.zeros(live.size, dtype=np.int64)
    if tied.size:
        names = [rids[c] for c in cols.rid[live[tied]].tolist()]
        by_rid[tied[sorted(range(tied.size), key=names.__getitem__)]] = np.arange(tied.size)
    return StoredRequests(cols, live[np.lexsort((by_rid, t0))])


_BLOCK = 1 << 16


class _RequestColumns:
    """The columns of StoredRequests, by request number: ``rid`` (an index of ``rids``), ``start`` and
    ``end`` (at, size, t, flag: warmup / ok; an end's at -1 for none) and ``firsts`` (request, at, size:
    by request, each's in file order), ``first_lo``: where each request's first tokens begin there."""

    def __init__(self, file: EventFile, rids: Sequence[str], rid: np.ndarray, start: np.ndarray, end: np.ndarray,
                 firsts: np.ndarray):
        self.file, self.rids, self.rid, self.start, self.end = file, rids, rid, start, end
        # by request, each's in file order (as they come, the usual: not sorted again)
        self.firsts = firsts if mapped.rising(firsts[:, 0], strictly=False) else \
            mapped.kept(firsts[np.argsort(firsts[:, 0], kind="stable")])
        self.first_lo = lo = mapped.empty(len(rid) + 1, np.int64)
        for k in range(0, lo.size, _BLOCK):
            lo[k:k + _BLOCK] = np.searchsorted(self.firsts[:, 0], np.arange(k, min(k + _BLOCK, lo.size)))
        mapped.written(lo)


class StoredRequests(Sequence):
    """Requests whose events are left in a file (``EventFile``), held as columns: an rid and ~60 bytes of
    stamps, flags and event places a request, not a ``Request`` object each (with its arrays and numbers
    ~450 bytes: a day of requests' were ~20 MiB). ``self[i]`` makes request i's Request when read; the
    passes that need only stamps and flags read ``columns()``; ``take(idx)``: those requests, a view."""

    def __init__(self, cols: _RequestColumns, rows: np.ndarray):
        self._cols, self._rows = cols, mapped.kept(rows)

    def __len__(self) -> int:
        return int(self._rows.size)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        c, k = self._cols, int(self._rows[i])
        at, size, t, warmup = c.start[k].tolist()
        r = Request.stored(c.rids[c.rid[k]], c.file, at, size, t, warmup)
        for _, a, n in c.firsts[c.first_lo[k]:c.first_lo[k + 1]].tolist():
            r.store_first_token(a, n)
        at, size, t, ok = c.end[k].tolist()
        if at >= 0:
            r.store_end(at, size, t, ok)
        return r

    def take(self, idx: np.ndarray) -> StoredRequests:
        return StoredRequests(self._cols, mapped.take(self._rows, idx))

    def rids(self) -> Sequence[str]:
        c = self._cols
        return take_strings(c.rids, mapped.take(c.rid, self._rows))

    def columns(self) -> dict[str, np.ndarray]:
        """Made a block of requests at a time into mapped arrays, the pages read handed back after each:
        the whole run's rows of stamps were ~50 bytes a request at once, beside the columns made."""
        c, rows = self._cols, self._rows
        out = {k: mapped.empty(rows.size, np.int64 if k.endswith("_t") else bool)
               for k in ("start_t", "end_t", "has_end", "warmup", "ok")}
        for lo in range(0, rows.size, mapped.Spooled.CHUNK):
            block = rows[lo:lo + mapped.Spooled.CHUNK]
            start, end = c.start[block, 2:], c.end[block]
            at = slice(lo, lo + block.size)
            out["start_t"][at], out["end_t"][at], out["warmup"][at] = start[:, 0], end[:, 2], start[:, 1] != 0
            out["has_end"][at] = has_end = end[:, 0] >= 0
            out["ok"][at] = has_end & (end[:, 3] != 0)
            mapped.drop()
        return out


def request_columns(reqs: Sequence[Request]) -> dict[str, np.ndarray]:
    """start_t, end_t (0 without a req.end), has_end, warmup and ok (False without a req.end) of every
    request, as arrays: StoredRequests' own columns, else read off the objects."""
    if isinstance(reqs, StoredRequests):
        return reqs.columns()
    n = len(reqs)
    end_t = [r.end_t for r in reqs]
    return {"start_t": np.fromiter((r.start_t for r in reqs), dtype=np.int64, count=n),
            "end_t": np.fromiter((0 if t is None else t for t in end_t), dtype=np.int64, count=n),
            "has_end": np.fromiter((t is not None for t in end_t), dtype=bool, count=n),
            "warmup": np.fromiter((bool(r.warmup) for r in reqs), dtype=bool, count=n),
            "ok": np.fromiter((bool(r.ok) for r in reqs), dtype=bool, count=n)}


def request_rids(reqs: Sequence[Request]) -> Sequence[str]:
    """Every request's rid, in order (StoredRequests' without making a Request each: packed, a str made
    when one is read)."""
    return reqs.rids() if isinstance(reqs, StoredRequests) else [r.rid for r in reqs]


def take_requests(reqs: Sequence[Request], idx: np.ndarray) -> Sequence[Request]:
    """The requests at ``idx``: a view of StoredRequests, else a list."""
    return reqs.take(idx) if isinstance(reqs, StoredRequests) else [reqs[i] for i in np.asarray(idx).tolist()]


def events_to_requests(msgs: Iterable[tuple[str, dict[str, Any]]]) -> tuple[M.BatchStart | None, M.BatchEnd | None,
                                                                           list[Request]]:
    """(first batch.start, last batch.end, requests sorted by (start t, rid)) from sorted messages."""
    requests: dict[str, Request] = {}
    batch_start = batch_end = None
    once, prompts = _Once(), _Once()
    for topic, p in msgs:
        if topic == M.REQ_START:
            rid = str(p["rid"])
            if rid in requests:
                log.warning("request_restarted", rid=rid, note="a later req.start replaces the earlier one")
            # a case's prompt repeats in each of its runs: held once too
            requests[rid] = Request(rid, prompts(once(M.ReqStart.from_msg(p), "src", "model", "task", "load"),
                                                 "prompt"))
        elif topic == M.REQ_FIRST_TOKEN:
            req = requests.get(str(p["rid"]))
            if req is not None:
                req.first_tokens.append(_rid_of(req, once(M.ReqFirstToken.from_msg(p), "src", "kind")))
        elif topic == M.REQ_END:
            req = requests.get(str(p["rid"]))
            if req is None:
                log.warning("request_end_without_start", rid=p["rid"])
            elif req.end is None:
                req.end = _rid_of(req, once(_req_end(p), "src"))
        elif topic == M.BATCH_START:
            # the first one carries the config; resumes repeat it
            batch_start = batch_start or M.BatchStart.from_msg(p)
        elif topic == M.BATCH_END:
            batch_end = M.BatchEnd.from_msg(p)  # the last one counts
    return batch_start, batch_end, sorted(requests.values(), key=lambda r: (r.start_t, r.rid))


class _Once:
    """Strings that every request repeats (its publisher, model, task, load) held once, not once per
    event: a day of requests holds tens of thousands of each."""

    MAX = 1024  # distinct values held; beyond that, each as it came

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, msg, *fields: str):
        seen = self._seen
        for name in fields:
            v = getattr(msg, name)
            if type(v) is str:
                got = seen.get(v)
                if got is not None:
                    setattr(msg, name, got)
                elif len(seen) < self.MAX:
                    seen[v] = v
        return msg


def _rid_of(req: Request, msg):
    """``msg`` (a req.end or req.first_token of ``req``) holding the request's own rid string."""
    if msg.rid == req.rid:
        msg.rid = req.rid
    return msg


def chunk_array(ts: list) -> array:
    """A req.end's client.chunk_t_ns as an int64 array (8 bytes a chunk, not an int object and a
    pointer, 40): a long answer streams thousands of chunks, and every request's are held until its
    JSON is written. ValueError naming the first stamp that is not an integer within 64 bits."""
    if set(map(type, ts)) == {int}:  # (not bools: their type is bool)
        try:
            return array("q", ts)
        except OverflowError:
            raise ValueError("an integer beyond 64 bits") from None
    bad = next(x for x in ts if type(x) is not int)
    raise ValueError(f"{type(bad).__name__} {bad!r:.40}")


def _req_end(p: dict[str, Any], check: bool = True) -> M.ReqEnd:
    """The M.ReqEnd of a payload, its client.chunk_t_ns as ``chunk_array`` holds it. Stamps that are not
    all integers within 64 bits (the contract checks the list, not its items) are let go, and logged:
    the request keeps its end (status, tokens, energy) and has no inter-token latency, where text or a
    stamp beyond int64 had stopped the analysis or made a gap of millennia; stream.msgpack keeps them."""
    end = M.ReqEnd.from_msg(p, check)
    if end.client is not None and end.client.chunk_t_ns:  # (none, or an empty list: left as they came)
        try:
            end.client.chunk_t_ns = chunk_array(end.client.chunk_t_ns)
        except ValueError as why:
            _unreadable_chunks(str(end.rid), str(why))
            end.client.chunk_t_ns = None
    return end


@functools.lru_cache(maxsize=256)
def _unreadable_chunks(rid: str, what: str) -> None:
    """Logged once a request (a stored request's req.end is read again each time the request is)."""
    log.warning("chunk_stamps_unreadable", rid=rid, got=what,
                note="client.chunk_t_ns must be integers (ns) within 64 bits: this request's inter-token "
                     "latency is not computed; its other figures are")


def build(items: Iterable[tuple[str, dict[str, Any]]], lookback_s: float = DEFAULT_LOOKBACK_S) -> BatchData:
    """Messages in any order → BatchData."""
    msgs, invalid, duplicates = normalise(items)
    # telemetry from other hosts onto the collector's clock first: scope and windows are on that clock
    mappings = clock.fit(msgs)
    msgs = clock.apply(msgs, mappings)
    msgs = scope(msgs, lookback_s)
    origin = msgs[0][1]["t"] if msgs else 0
    gpu_rows: dict[tuple[str, int], list[dict]] = {}
    host_rows: dict[str, list[dict]] = {}
    src_seqs: dict[str, list[int]] = {}
    for topic, p in msgs:
        src = str(p["src"])
        src_seqs.setdefault(src, []).append(p["seq"])
        if topic == M.TEL_GPU:
            gpu_rows.setdefault((src, int(p["gpu"])), []).append(p)
        elif topic == M.TEL_HOST:
            host_rows.setdefault(src, []).append(p)
    batch_start, batch_end, reqs = events_to_requests(msgs)
    gpu_srcs = sorted({src for src, _ in gpu_rows})
    gpus = []
    for (src, idx), rows in sorted(gpu_rows.items()):
        key = f"gpu{idx}" if len(gpu_srcs) == 1 else f"{src}/gpu{idx}"
        s = _series(key, src, rows, M.GPU_SERIES)
        last = rows[-1]
        s.meta = {k: last.get(k) for k in GPU_META if last.get(k) is not None}
        driver = next((r[_DRIVER] for r in reversed(rows) if r.get(_DRIVER) is not None), None)
        if driver is not None:  # a header field, but only the slow ticks of some publishers carry it
            s.meta["driver"] = driver
        s.meta["power_kind"] = sorted({str(r.get(_POWER_KIND)) for r in rows if r.get(_POWER_KIND) is not None})
        # the enforced power limit and when it changed (a cap set between sweep levels shows per level)
        changes: list[tuple[int, float]] = []
        for r in rows:
            v = r.get(_POWER_LIMIT)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and (not changes or changes[-1][1] != v):
                changes.append((int(r["t"]), float(v)))
        s.meta["power_limit_changes"] = changes
        gpus.append(s)
    host = procs = rapl = None
    procs, rapl = {}, {}
    if host_rows:
        src = hosts.pick_host_src(sorted(host_rows), batch_start)  # several daemons: the LLM server's host
        if len(host_rows) > 1:
            log.info("several_host_sources", srcs=sorted(host_rows), used=src)
        rows = host_rows[src]
        host = _series("host", src, rows, M.HOST_SERIES)
        names = sorted({n for r in rows for n in (r.get(_PROCS) or {})})
        for name in names:
            prow = [{"t": r["t"], "seq": r["seq"], **((r.get(_PROCS) or {}).get(name) or {})} for r in rows]
            procs[name] = _series(f"proc:{name}", src, prow, ("cpu_pct", "rss_mib"))
        zones = sorted({z for r in rows for z in (r.get(_RAPL) or {})})
        for zone in zones:
            zrow = [{"t": r["t"], "seq": r["seq"], "energy_uj": (r.get(_RAPL) or {}).get(zone)} for r in rows]
            rapl[zone] = _series(f"rapl:{zone}", src, zrow, ("energy_uj",))
    return BatchData(origin, gpus, host, procs, rapl,
                     {s: np.array(sorted(v), dtype=np.int64) for s, v in src_seqs.items()},
                     reqs, batch_start, batch_end, invalid, duplicates, clock=mappings,
                     clock_notes=clock.unprobed(msgs, mappings))
