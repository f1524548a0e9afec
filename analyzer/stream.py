"""Turn a list of bus messages into sorted per-source arrays and request records (pure).

Both inputs (``--live`` and ``--batch``) end here with the same message list, so the same
results come out. The order messages arrived in does not matter: everything is de-duplicated
on (src, seq, t) and sorted on (t, src, seq) first.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import msgpack
import numpy as np

from analyzer import clock, hosts
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


@dataclass
class Request:
    rid: str
    start: M.ReqStart
    end: M.ReqEnd | None = None
    first_tokens: list[M.ReqFirstToken] = field(default_factory=list)
    answer_at: StoredAnswer | None = None  # where end's text and thinking were left on disk (read by ``answer``)


ANSWER_KEYS = M.ReqEnd.declared("text", "thinking")  # a req.end's answer: the bulk of a request's events
STORED_AT = "\0stored_at"  # a payload's key (no producer's: declared keys are names) holding its StoredAnswer


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


def leave_answer(p: dict[str, Any], path: Path, at: int, size: int) -> None:
    """Take a req.end payload's text and thinking out, noting where they are (``path``: bytes ``at``,
    ``size``); one whose values would fail the contract's check keeps them (the check names the key)."""
    if not all(isinstance(p.get(k), (str, type(None))) for k in ANSWER_KEYS) or not isinstance(p.get("rid"), str):
        return
    if any(p.get(k) is not None for k in ANSWER_KEYS):
        for k in ANSWER_KEYS:
            p.pop(k, None)
        p[STORED_AT] = StoredAnswer(path, at, size, p["rid"])


@dataclass
class BatchData:
    """Everything the pipeline needs, as plain values."""

    origin_ns: int                       # t of the first message in scope: times become seconds from here
    gpus: list[Series]
    host: Series | None
    procs: dict[str, Series]             # watched process name -> cpu_pct / rss_mib
    rapl: dict[str, Series]              # zone -> cumulative energy_uj
    src_seqs: dict[str, np.ndarray]      # every seq seen per publisher (for gap detection)
    requests: list[Request]              # sorted by (start t, rid)
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
                req.answer_at = p.get(STORED_AT)
        elif topic == M.BATCH_START:
            # the first one carries the config; resumes repeat it
            batch_start = batch_start or M.BatchStart.from_msg(p)
        elif topic == M.BATCH_END:
            batch_end = M.BatchEnd.from_msg(p)  # the last one counts
    return batch_start, batch_end, sorted(requests.values(), key=lambda r: (r.start.t, r.rid))


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


def chunk_array(ts: Any) -> Any:
    """A req.end's client.chunk_t_ns as an int64 array (8 bytes a chunk, not an int object and a
    pointer, 40): a long answer streams thousands of chunks, and every request's are held until its
    JSON is written. Anything but plain integers is left as it came."""
    if isinstance(ts, list) and ts and all(type(x) is int for x in ts):
        try:
            return array("q", ts)
        except OverflowError:  # beyond int64: kept as the list
            pass
    return ts


def _compact_chunks(end: M.ReqEnd) -> M.ReqEnd:
    """``end`` with its client.chunk_t_ns as ``chunk_array`` holds it."""
    if end.client is not None:
        end.client.chunk_t_ns = chunk_array(end.client.chunk_t_ns)
    return end


def _req_end(p: dict[str, Any]) -> M.ReqEnd:
    """The M.ReqEnd of a payload, compacted; one whose chunk_t_ns is an array already (as
    analyzer.columnar.read_copy decodes them) checked as the list it stands for."""
    c = p.get("client")
    ts = c.get("chunk_t_ns") if isinstance(c, dict) else None
    if not isinstance(ts, array):
        return _compact_chunks(M.ReqEnd.from_msg(p))
    end = M.ReqEnd.from_msg({**p, "client": {**c, "chunk_t_ns": []}})
    end.client.chunk_t_ns = ts
    return end


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
