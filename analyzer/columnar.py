"""The recording as typed columns: one streaming pass over stream.msgpack, and a columnar copy beside it.

``decode_file`` reads the recording once, a whole read of the file at a time. Telemetry (tel.gpu,
tel.host, tel.hb) goes into per-topic column chunks (numpy: t, seq, source, every key declared
``series=True`` as float64, every ``label=True`` key as codes) a few thousand messages at a time, so no
map per sample outlives its chunk; the column lists and their checks come from the declarations in
shared/messages.py, never from a hand copy (per message shape, each column checked by its set of value
types; a chunk with anything unusual is checked message by message with ``M.validate``, so both paths
drop exactly the same messages). Events (requests, batch markers, clock probes) stay maps: they are few.

``to_batch`` then applies the rules of ``analyzer.stream.build`` to the columns: de-duplicate on
(src, seq, t) keeping the first in file order, map clocks, scope to the batch, sort per source. The
result is the same BatchData, array for array, as ``stream.build`` on the message list.

``load`` keeps a columnar copy (``raw/columns/``: one Parquet file per topic, zstd (the GPU's LZ4), the events, and
``meta.json`` last) and reads it instead of stream.msgpack when it is still the copy of this recording:
same length and the same hash of its first and last 64 KiB (never mtime: copying a batch changes
that). A missing, partial or stale copy is rebuilt from stream.msgpack, the source of truth.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from itertools import chain, compress, repeat
from operator import is_, is_not, itemgetter
from typing import Any, Iterable, Sequence

import msgpack
import numpy as np

from analyzer import arrow_np, clock, gpu_store, hosts, mapped, memory, packed, parquet_parts, table_spill
from analyzer.seqset import SEQ_BITS, SeqSet, out_of_range, seq_set
from analyzer.stream import (DEFAULT_LOOKBACK_S, REQUEST_TOPICS, BatchData, EventFile, Series, StoredEvents,
                             events_to_requests, stored_requests)
from shared import messages as M
from shared.logs import get_logger
from shared.numbers import finite
from shared.recording import RecordingReader, Scanned

log = get_logger("analyzer.columnar")

CHUNK = 8192                   # messages per topic decoded at once (bounds the maps alive at a time)
# 2: tel.gpu driver and power_limit_w; 3: tel.gpu in one file per GPU (analyzer.gpu_store); 4: those LZ4;
# 5: the Parquet files in parts (analyzer.parquet_parts)
COPY_VERSION = 5
HASH_SPAN = 64 * 1024          # bytes hashed at each end of stream.msgpack to recognise it
TABLE_TOPICS = (M.TEL_GPU, M.TEL_HOST, M.TEL_HB)
# The columns of each topic, from its declaration: readings (float64) and labels (codes).
FLOAT_KEYS = {t: M.BODIES[t].series_keys() for t in TABLE_TOPICS}
STRING_KEYS = {t: M.BODIES[t].label_keys() for t in TABLE_TOPICS}
# Keys with a conversion of their own in Decoder._convert: the GPU index (it splits the series), the
# simulated flag, the power limit as sent (its changes are kept); names checked against the declarations
# at import. tel.host's ``simulated`` is not declared: read as stream.build reads it, for the same result.
EXTRA_KEYS = {M.TEL_GPU: M.TelGpu.declared("gpu", "simulated", "power_limit_w"), M.TEL_HOST: ("simulated",),
              M.TEL_HB: ()}
# Labels read by name in _gpu_series (a GPU's meta): a rename in shared/messages.py fails here, at import.
_GPU_META = M.TelGpu.declared("uuid", "name")
_GPU_DRIVER, _GPU_POWER_KIND = M.TelGpu.declared("driver", "power_kind")
_HOST_PROCS, _HOST_RAPL = M.TelHost.declared("procs", "rapl_uj")   # nested maps: column groups
_NONE = type(None)
# The topic read from its msgpack bytes (analyzer.packed): a GPU's per-tick map of scalars, most of a
# recording. (tel.host and tel.hb carry nested maps: msgpack decodes them, as a slow tick's procs.)
PACKED_TOPIC = M.TEL_GPU


def _num(v: Any) -> float:
    x = finite(v)
    return np.nan if x is None else x


def _floats(values: list, types: set[type]) -> np.ndarray:
    """Readings as float64, NaN where absent or not finite (the rule of shared.numbers.finite).
    ``types``: the values' types."""
    if types <= {_NONE}:  # a series this publisher does not send
        return np.full(len(values), np.nan)
    try:
        out = np.fromiter(values, dtype=np.float64, count=len(values))
    except (TypeError, ValueError, OverflowError):
        return np.array([_num(v) for v in values], dtype=np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def _src_column(values: Sequence, types: set[type], distinct: set, codes: dict[str, int], code_of) -> np.ndarray:
    """The source codes of a column of publisher ids (``code_of``: the decoder's, for any odd one)."""
    if types != {str}:
        return np.array([code_of(v) for v in values], dtype=np.int32)
    if len(distinct) == 1:  # the usual chunk: one daemon
        return np.full(len(values), codes[values[0]], dtype=np.int32)
    return np.fromiter(map(codes.get, values), dtype=np.int32, count=len(values))


def _column(rows: list[dict], key: str) -> list:
    """``[p.get(key) for p in rows]`` without a Python-level loop."""
    return list(map(dict.get, rows, repeat(key)))


def _shape_valid(body: type[M.Body], types: dict[str, set[type]]) -> bool:
    """True when every payload with these value types per key passes M.validate's checks (the
    declarations of shared/messages.py); False means: check those messages one by one."""
    if any(types.get(k) != {int} for k in ("v", "seq", "t", "wall")) or types.get("src") != {str}:
        return False
    for c in body.checks():
        seen = types.get(c.name)
        if seen is None:
            if c.required:
                return False
            continue
        if _NONE in seen:
            if c.required:
                return False
            seen = seen - {_NONE}
        if not seen or object in c.types:
            continue
        if c.nested is not None or (c.no_bool and bool in seen) or not all(issubclass(t, c.types) for t in seen):
            return False
    return True


def _fast_columns(body: type[M.Body], rows: list[dict], keys: list[str]
                  ) -> tuple[dict[str, list], dict[str, set[type]]] | None:
    """(``keys`` as columns, None where absent, those declared int as int64 arrays where the chunk is one
    group; each column's set of value types) when every row surely passes M.validate, else None (then
    each row is checked on its own). Rows are grouped by their keys
    (a daemon sends one or two shapes: slow fields every few ticks); a group's values are read in one
    row-major list, typed per key, then sliced into columns, all without a Python-level step per
    message."""
    n = len(rows)
    out: dict[str, list] = {}
    types: dict[str, set[type]] = {}
    merged: dict[str, np.ndarray] = {}
    for pos, shape, flat in _shape_groups(rows):
        if flat is None:
            return None
        width = len(shape)
        seen = _types_by_key(shape, flat)
        ints = _shape_valid(body, seen) and _int64_columns(body, shape, flat, seen)
        if ints is False:
            return None
        at = {k: j for j, k in enumerate(shape)}
        for k in keys:
            j = at.get(k)
            if pos is None:  # one group: the chunk
                out[k] = [None] * n if j is None else ints[k] if k in ints else flat[j::width]
                types[k] = seen[k] if j is not None else {_NONE}
                continue
            types[k] = types.get(k, set()) | (seen[k] if j is not None else {_NONE})
            if j is not None:
                col = merged.setdefault(k, np.full(n, None, dtype=object))
                col[pos] = np.fromiter(flat[j::width], dtype=object, count=pos.size)
    if merged or not out:
        out = {k: (merged[k].tolist() if k in merged else [None] * n) for k in keys}
    if not set(out["v"]) <= set(M.READABLE_VERSIONS):
        return None
    return out, types


def _int64_columns(body: type[M.Body], shape: tuple, flat: list, seen: dict[Any, set[type]]
                   ) -> dict[str, np.ndarray] | bool:
    """A group's columns of keys declared int (the envelope's seq/t/wall included) as int64 arrays (those
    with no nil), or False when an integer does not fit in 64 bits (M.validate refuses it): each column
    converted once (t, seq, gpu are kept so), no Python-level step per message."""
    width, declared, out = len(shape), body.int64_keys(), {}
    for j, k in enumerate(shape):
        if int not in seen[k] or k not in declared:
            continue
        col = flat[j::width]
        if _NONE in seen[k]:  # (an optional key sent as nil: rare)
            col = [v for v in col if v is not None]
        try:
            arr = np.fromiter(col, dtype=np.int64, count=len(col))
        except OverflowError:
            return False
        if seen[k] == {int}:
            out[k] = arr
    return out


def _types_by_key(shape: tuple, flat: list) -> dict[Any, set[type]]:
    """Each key's set of value types, from a group's row-major values: one comparison when every row
    is typed alike (the usual chunk), else by the distinct rows' type signatures (few)."""
    types, width = list(map(type, flat)), len(shape)
    first = types[:width]
    if types == first * (len(types) // width):
        return {k: {t} for k, t in zip(shape, first)}
    return dict(zip(shape, map(set, zip(*set(zip(*[iter(types)] * width))))))


def _shape_groups(rows: list[dict]) -> Iterable[tuple[np.ndarray | None, tuple, list]]:
    """(positions, or None for all; their keys; their values row-major in that key order) per group of
    rows with the same keys: by number of keys first (cheap), then by keys in order where those differ."""
    lens = list(map(len, rows))
    widths = set(lens)
    parts = [(None, rows)] if len(widths) == 1 else [_pick(rows, list(map(w.__eq__, lens))) for w in widths]
    for pos, sel in parts:
        shape = tuple(sel[0])
        if len(shape) < len(M.ENVELOPE_KEYS):  # surely not valid (and itemgetter of one key gives no tuple)
            yield pos, shape, None
            continue
        try:  # every row has these keys (and no other: as many) → one group
            flat = list(chain.from_iterable(map(itemgetter(*shape), sel)))
        except KeyError:
            shapes = list(map(tuple, sel))
            for shape in set(shapes):
                sub_pos, sub = _pick(sel, list(map(shape.__eq__, shapes)), pos)
                yield sub_pos, shape, list(chain.from_iterable(map(itemgetter(*shape), sub)))
            continue
        yield pos, shape, flat


def _pick(rows: list, mask: list[bool], pos: np.ndarray | None = None) -> tuple[np.ndarray, list]:
    """The rows where ``mask`` is true, and their positions (in ``pos``, else in ``rows``)."""
    at = np.flatnonzero(np.array(mask, dtype=bool))
    return (at if pos is None else pos[at]), list(compress(rows, mask))


@dataclass
class Table:
    """One telemetry topic, every source, in file order. ``cols``: name → array; codes index ``strings``."""

    cols: dict[str, np.ndarray]
    strings: dict[str, list[str]] = field(default_factory=dict)   # string key → its values by code
    extra: list[str] = field(default_factory=list)                # host: proc:/rapl: column groups
    series: tuple[str, ...] = ()                                  # the readings' columns (declared series)

    @property
    def n(self) -> int:
        return int(self.cols["t"].size)


@dataclass
class Decoded:
    """A recording as columns: telemetry tables, events (idx, topic, payload) and the source names."""

    tables: dict[str, Table]
    events: list[tuple[int, str, dict[str, Any]]]
    srcs: list[str]
    invalid: int = 0
    source: dict[str, Any] = field(default_factory=dict)  # fingerprint() of the recording read whole, else {}
    requests: StoredEvents | None = None  # the request events left in a copy's file (read_copy), not in events


class Decoder:
    """Feed messages in file order (``feed_batch``, or ``feed_scanned`` with the reads of
    ``RecordingReader.scan(decoder.find)``); ``finish()`` gives the Decoded columns. ``bodies``: a
    declaration per telemetry topic to read by instead of shared.messages.BODIES' (its series and label
    keys become the columns; used to show that a newly declared reading needs no other edit)."""

    def __init__(self, bodies: dict[str, type[M.Body]] | None = None, sink=None, event_sink=None) -> None:
        # sink(topic, column chunk) → True when it took the chunk (analyzer.gpu_store.Spill: to disk);
        # event_sink(idx, topic, payload): each valid event, then not held (EventSpill: to the copy's file)
        self.sink, self.event_sink = sink, event_sink
        self._bodies = {t: (bodies or {}).get(t) or M.BODIES[t] for t in TABLE_TOPICS}
        self._float_keys = {t: b.series_keys() for t, b in self._bodies.items()}
        self._string_keys = {t: b.label_keys() for t, b in self._bodies.items()}
        self.idx = 0
        self.invalid = 0
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self._pending: dict[str, list[dict]] = {t: [] for t in TABLE_TOPICS}
        self._pending_idx: dict[str, list[np.ndarray]] = {t: [] for t in TABLE_TOPICS}
        self._table_code = {t: i for i, t in enumerate(TABLE_TOPICS)}
        self._chunks: dict[str, list[dict[str, np.ndarray]]] = {t: [] for t in TABLE_TOPICS}
        self._src: dict[str, int] = {}
        self._strings: dict[tuple[str, str], dict[str, int]] = {}
        self._extra: dict[str, list[str]] = {t: [] for t in TABLE_TOPICS}
        # the messages of PACKED_TOPIC in a read that surely pass this decoder's declaration
        self.find = packed.Finder(PACKED_TOPIC, self._valid, self._bodies[PACKED_TOPIC].int64_keys(),
                                  M.READABLE_VERSIONS)

    def _event(self, idx: int, topic: str, payload: dict[str, Any]) -> None:
        try:
            M.validate(topic, payload)
        except M.MessageError as exc:
            self._invalid(topic, exc)
        else:
            self._src_code(payload["src"])
            if self.event_sink is not None:
                self.event_sink(idx, topic, payload)
            else:
                self.events.append((idx, topic, payload))

    def feed_batch(self, topics: list[str], payloads: list[dict[str, Any]], idx: np.ndarray | None = None,
                   convert: bool = True) -> None:
        """Messages in file order: telemetry shared out per topic without a Python-level step per
        message; events one by one (they are few). ``idx``: their places in the file (a scanned read's
        objects, between the messages read from the bytes), else the next ones."""
        n = len(topics)
        if idx is None:
            idx = np.arange(self.idx, self.idx + n, dtype=np.int64)
            self.idx += n
        other = len(TABLE_TOPICS)
        kind = np.fromiter(map(self._table_code.get, topics, repeat(other)), dtype=np.int8, count=n)
        counts = np.bincount(kind, minlength=other + 1).tolist()
        for code, topic in enumerate(TABLE_TOPICS):
            if counts[code] == n:
                self._pending[topic].extend(payloads)
                self._pending_idx[topic].append(idx)
            elif counts[code]:
                mask = kind == code
                self._pending[topic].extend(compress(payloads, mask.tolist()))
                self._pending_idx[topic].append(idx[mask])
        if counts[other]:
            for i in np.flatnonzero(kind == other).tolist():
                self._event(int(idx[i]), topics[i], payloads[i])
        if convert:
            self._convert_full()

    def _convert_full(self) -> None:
        for topic, rows in self._pending.items():
            if len(rows) >= CHUNK:
                self._convert(topic)

    def feed_scanned(self, part: Scanned) -> None:
        """A read of ``RecordingReader.scan(self.find)``: its objects, and the messages ``find`` read
        from the bytes as columns, each topic's rows kept in file order."""
        sel = part.sel
        at = np.asarray(part.at, dtype=np.int64)
        if sel.size:
            at = np.concatenate([at, part.found.starts[sel]])
        rank = np.empty(at.size, dtype=np.int64)
        rank[np.argsort(at)] = np.arange(self.idx, self.idx + at.size)
        self.idx += at.size
        n = len(part.topics)
        self.feed_batch(part.topics, part.payloads, rank[:n], convert=False)
        if sel.size:
            self._emit(PACKED_TOPIC, self._packed_columns(PACKED_TOPIC, part.found, sel, rank[n:]))
        self._convert_full()

    def _valid(self, payload: dict[str, Any]) -> bool:
        try:
            M.validate(PACKED_TOPIC, payload, body=self._bodies[PACKED_TOPIC])
        except M.MessageError:
            return False
        return True

    def _invalid(self, topic: str, exc: Exception) -> None:
        self.invalid += 1
        if self.invalid <= 3:
            log.warning("message_invalid", topic=topic, problem=str(exc))

    def _src_code(self, src: Any) -> int:
        return self._src.setdefault(str(src), len(self._src))

    def _codes(self, topic: str, key: str, values: list) -> np.ndarray:
        lookup = self._strings.setdefault((topic, key), {})
        distinct = set(values)
        for v in distinct - set(lookup) - {None}:
            lookup[v] = len(lookup)
        if len(distinct) == 1:  # (one GPU's name, a field absent throughout)
            return np.full(len(values), lookup.get(next(iter(distinct)), -1), dtype=np.int32)
        return np.fromiter(map(lookup.get, values, repeat(-1)), dtype=np.int32, count=len(values))

    def _convert(self, topic: str) -> None:
        cols = self._columns(topic)
        if cols is not None:
            self._emit(topic, cols)

    def _emit(self, topic: str, cols: dict[str, np.ndarray]) -> None:
        """A chunk of a topic's columns to the sink or the table; the rows still pending before it, those
        of a scanned read's objects, joined in file order first."""
        if self._pending[topic]:
            before = self._columns(topic)
            if before is not None:
                order = np.argsort(np.concatenate([before["idx"], cols["idx"]]), kind="stable")
                cols = {k: np.concatenate([before[k], v])[order] for k, v in cols.items()}
        if self.sink is not None and self.sink(topic, cols):
            return
        self._chunks[topic].append(cols)

    def _columns(self, topic: str) -> dict[str, np.ndarray] | None:
        """The pending rows of a topic as columns (None when none is valid)."""
        rows, idx = self._pending[topic], self._pending_idx[topic]
        self._pending[topic], self._pending_idx[topic] = [], []
        if not rows:
            return None
        idx = np.concatenate(idx) if len(idx) > 1 else idx[0]
        body, floats, strings = self._bodies[topic], self._float_keys[topic], self._string_keys[topic]
        keys = ["v", "src", "t", "seq", *EXTRA_KEYS[topic], *floats, *strings]
        fast = _fast_columns(body, rows, keys)
        if fast is None:
            keep = []
            for p in rows:
                try:
                    M.validate(topic, p, body=body)
                except M.MessageError as exc:
                    self._invalid(topic, exc)
                    keep.append(False)
                    continue
                keep.append(True)
            rows, idx = list(compress(rows, keep)), idx[np.array(keep, dtype=bool)]
            if not rows:
                return None
            got = {k: _column(rows, k) for k in keys}
            types = {k: set(map(type, v)) for k, v in got.items()}
        else:
            got, types = fast
        src_codes, srcs = self._src, set(got["src"])
        for v in srcs - set(src_codes):
            self._src_code(v)
        cols: dict[str, np.ndarray] = {
            "idx": idx,
            "src": _src_column(got["src"], types["src"], srcs, src_codes, self._src_code),
            "t": np.asarray(got["t"], dtype=np.int64),
            "seq": np.asarray(got["seq"], dtype=np.int64),
        }
        if topic == M.TEL_GPU:
            cols["gpu"] = np.asarray(got["gpu"], dtype=np.int64)
            n, limits = len(got["simulated"]), got["power_limit_w"]
            cols["simulated"] = (np.zeros(n, dtype=bool) if types["simulated"] == {_NONE}
                                 else np.fromiter(map(is_, got["simulated"], repeat(True)), dtype=bool, count=n))
            # the enforced power limit as sent (NaN included: stream.build compares the raw values)
            if types["power_limit_w"] == {_NONE}:
                cols["power_limit_w:present"], cols["power_limit_w"] = np.zeros(n, dtype=bool), np.full(n, np.nan)
            else:
                cols["power_limit_w:present"] = np.fromiter(map(is_not, limits, repeat(None)), dtype=bool, count=n)
                cols["power_limit_w"] = np.array(limits, dtype=np.float64)
        elif topic == M.TEL_HOST:
            sims = got["simulated"]
            cols["simulated"] = (np.zeros(len(sims), dtype=bool) if types["simulated"] == {_NONE}
                                 else np.fromiter(map(bool, sims), dtype=bool, count=len(sims)))
        for key in floats:
            cols[key] = _floats(got[key], types[key])
        for key in strings:
            cols[key] = self._codes(topic, key, got[key])
        if topic == M.TEL_HOST:
            cols.update(self._host_nested(rows))
        return cols

    def _packed_columns(self, topic: str, found: packed.Found, rows: np.ndarray, idx: np.ndarray
                        ) -> dict[str, np.ndarray]:
        """``_columns`` of messages ``rows`` of ``found`` (at ``idx`` in the file): a number gathered from
        the bytes a layout at a time, a string, boolean or nil its group's own (its decoded payload's)."""
        groups = found.group[rows]
        layouts = np.array([g.layout for g in found.groups], dtype=np.int32)[groups]
        starts = found.starts[rows]
        by_layout = [(lay, at, starts[at]) for lay in distinct(layouts).tolist()
                     for at in [np.flatnonzero(layouts == lay)]]
        ids = distinct(groups).tolist()
        n = rows.size

        def column(key: str, out: np.ndarray, constant=None, number=None) -> np.ndarray:
            by_group = None  # constant's value for each group of these rows, made once
            for lay, at, first in by_layout:
                if found.layouts[lay].slots.get(key, (0, packed.REJECT))[1] in packed.NUMBERS:
                    out[at] = found.numbers(first, key, lay) if number is None else number
                elif constant is not None:
                    if by_group is None:
                        by_group = np.zeros(len(found.groups), dtype=out.dtype)
                        for g in ids:
                            by_group[g] = constant(key, found.groups[g].payload.get(key))
                    out[at] = by_group[groups[at]]
            return out

        cols: dict[str, np.ndarray] = {
            "idx": idx,
            "src": column("src", np.empty(n, dtype=np.int32), lambda _, v: self._src_code(v)),
            "t": column("t", np.empty(n, dtype=np.int64)),
            "seq": column("seq", np.empty(n, dtype=np.int64)),
        }
        if topic == M.TEL_GPU:
            cols["gpu"] = column("gpu", np.empty(n, dtype=np.int64))
            cols["simulated"] = column("simulated", np.zeros(n, dtype=bool), lambda _, v: v is True)
            cols["power_limit_w:present"] = column("power_limit_w", np.zeros(n, dtype=bool),
                                                   lambda _, v: v is not None, number=True)
            # the enforced power limit as sent (non-finite included: stream.build compares the raw values)
            cols["power_limit_w"] = column("power_limit_w", np.full(n, np.nan))
        for key in self._float_keys[topic]:
            out = column(key, np.full(n, np.nan))
            out[~np.isfinite(out)] = np.nan
            cols[key] = out
        lookups = {key: self._strings.setdefault((topic, key), {}) for key in self._string_keys[topic]}
        for key in self._string_keys[topic]:
            cols[key] = column(key, np.full(n, -1, dtype=np.int32),
                               lambda k, v: -1 if v is None else lookups[k].setdefault(v, len(lookups[k])))
        return cols

    def _host_nested(self, rows: list[dict]) -> dict[str, np.ndarray]:
        """Watched processes and RAPL zones as column groups: present, readings (NaN where absent)."""
        out = _same_nested(rows)
        if out is None:
            out = _nested_by_row(rows)
        extra = self._extra[M.TEL_HOST]
        for name in out:
            group = name.rsplit(":", 1)[0]
            if group not in extra:
                extra.append(group)
        return out

    def finish(self) -> Decoded:
        tables = {}
        for topic in TABLE_TOPICS:
            self._convert(topic)
            chunks = self._chunks[topic]
            self._chunks[topic] = []
            strings = {key: list(self._strings.get((topic, key), {})) for key in self._string_keys[topic]}
            tables[topic] = Table(_concat(chunks), strings, list(self._extra[topic]), self._float_keys[topic])
        return Decoded(tables, self.events, list(self._src), self.invalid)


def _nested_by_row(rows: list[dict]) -> dict[str, np.ndarray]:
    """_host_nested's columns, row by row (any mix of processes and zones)."""
    n = len(rows)
    out: dict[str, np.ndarray] = {}
    for i, p in enumerate(rows):
        for name, proc in (p.get(_HOST_PROCS) or {}).items():
            base = f"proc:{name}"
            if base + ":present" not in out:
                out[base + ":present"] = np.zeros(n, dtype=bool)
                out[base + ":sim"] = np.zeros(n, dtype=bool)
                out[base + ":cpu_pct"] = np.full(n, np.nan)
                out[base + ":rss_mib"] = np.full(n, np.nan)
            proc = proc or {}
            out[base + ":present"][i] = True
            out[base + ":sim"][i] = bool(proc.get("simulated"))
            out[base + ":cpu_pct"][i] = _num(proc.get("cpu_pct"))
            out[base + ":rss_mib"][i] = _num(proc.get("rss_mib"))
        for zone, uj in (p.get(_HOST_RAPL) or {}).items():
            base = f"rapl:{zone}"
            if base + ":present" not in out:
                out[base + ":present"] = np.zeros(n, dtype=bool)
                out[base + ":energy_uj"] = np.full(n, np.nan)
            out[base + ":present"][i] = True
            out[base + ":energy_uj"][i] = _num(uj)
    return out


def _same_nested(rows: list[dict]) -> dict[str, np.ndarray] | None:
    """_nested_by_row's columns when every row watches the same processes and RAPL zones in the same
    order (the usual chunk), a column at a time; None otherwise."""
    n = len(rows)
    procs = list(map(dict.get, rows, repeat(_HOST_PROCS)))
    zones = list(map(dict.get, rows, repeat(_HOST_RAPL)))
    proc_shapes, zone_shapes = set(map(_keys, procs)), set(map(_keys, zones))
    if len(proc_shapes) != 1 or len(zone_shapes) != 1 or None in proc_shapes or None in zone_shapes:
        return None
    out: dict[str, np.ndarray] = {}
    for name in next(iter(proc_shapes)):
        each = list(map(itemgetter(name), procs))
        if set(map(type, each)) != {dict}:
            return None
        base = f"proc:{name}"
        out[base + ":present"] = np.ones(n, dtype=bool)
        out[base + ":sim"] = np.fromiter(map(bool, map(dict.get, each, repeat("simulated"))), dtype=bool, count=n)
        out[base + ":cpu_pct"] = _nums(list(map(dict.get, each, repeat("cpu_pct"))))
        out[base + ":rss_mib"] = _nums(list(map(dict.get, each, repeat("rss_mib"))))
    for zone in next(iter(zone_shapes)):
        base = f"rapl:{zone}"
        out[base + ":present"] = np.ones(n, dtype=bool)
        out[base + ":energy_uj"] = _nums(list(map(itemgetter(zone), zones)))
    return out


def _keys(d: Any) -> tuple | None:
    """A nested map's keys in order (() for an empty or absent one; None: not a map)."""
    if not d:
        return ()
    return tuple(d) if type(d) is dict else None


def _nums(values: list) -> np.ndarray:
    """``[_num(v) for v in values]`` as float64: a column of plain numbers at once."""
    if set(map(type, values)) <= {float, int}:
        out = np.array(values, dtype=np.float64)
        out[~np.isfinite(out)] = np.nan
        return out
    return np.array([_num(v) for v in values], dtype=np.float64)


def _concat(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Chunks → one column each; a column missing from a chunk (a proc seen later) is filled as absent."""
    if not chunks:
        return {"idx": np.zeros(0, np.int64), "src": np.zeros(0, np.int32), "t": np.zeros(0, np.int64),
                "seq": np.zeros(0, np.int64)}
    names = list(dict.fromkeys(k for c in chunks for k in c))
    sizes = [c["t"].size for c in chunks]
    out = {}
    for name in names:
        # column by column, each chunk's part dropped once joined: never two whole copies
        parts = [c.pop(name) if name in c else table_spill.absent(name, n) for c, n in zip(chunks, sizes)]
        out[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        del parts
    return out


def decode_items(items: Iterable[tuple[str, dict[str, Any]]], bodies: dict[str, type[M.Body]] | None = None) -> Decoded:
    """Messages as columns, fed one at a time (each chunk exactly CHUNK messages of its topic)."""
    dec = Decoder(bodies)
    for topic, payload in items:
        dec.feed_batch([topic], [payload])
    return dec.finish()


# ---------------------------------------------------------------------------------------------
# Columns → BatchData, by the rules of analyzer.stream.build.

def _sort_key(event: tuple[int, str, dict]) -> tuple:
    p = event[2]
    return p["t"], str(p["src"]), p["seq"]


def to_batch(dec: Decoded, lookback_s: float = DEFAULT_LOOKBACK_S, consume: bool = False,
             mappings: dict[str, clock.Mapping] | None = None, gpu_meta: bool = True,
             host_scan: gpu_store.HostScan | None = None, seqs: bool = True) -> BatchData:
    """The BatchData of the decoded recording. ``consume``: empty ``dec``'s tables on the way (the
    caller is done with them), so the columns and the series are not both held at the peak.
    ``mappings``: the clock mappings already fitted (a stretch of a recording: its own events hold
    only some of the probes), else fitted from dec's clock probes. ``gpu_meta=False``: the GPU series'
    meta is only their index (a stretch of a recording whose meta was read once: its table holds only
    the stamps, seqs and readings). ``host_scan``: the host's rows left in the copy's file (dec's host
    table empty), none repeated: the host series' meta folded from the file a row group at a time
    (arrays empty, as gpu_store.lazy_batch leaves them). ``seqs=False``: no ``src_seqs`` (a lazy batch's
    store keeps its own: every message's seq of a day, sorted, was ~8 bytes a message more at the peak)."""
    tabs = dec.tables
    parts = [tabs[t].cols for t in TABLE_TOPICS]
    codes = {s: i for i, s in enumerate(dec.srcs)}
    ev_src = np.array([codes[str(p["src"])] for _, _, p in dec.events], dtype=np.int32)
    ev_cols = {"src": ev_src, "t": np.array([p["t"] for _, _, p in dec.events], dtype=np.int64),
               "seq": np.array([p["seq"] for _, _, p in dec.events], dtype=np.int64),
               "idx": np.array([i for i, _, _ in dec.events], dtype=np.int64)}
    # the request events a copy left in its file (read_copy): columns, not maps
    stored = dec.requests if dec.requests is not None and len(dec.requests) else None
    req_cols = stored.columns() if stored is not None else None
    # de-duplicate on (src, seq, t) over every topic, the first in file order kept
    keeps = _first_of_duplicates(parts + [ev_cols] + ([req_cols] if stored is not None else []))
    duplicates = int(sum((~k).sum() for k in keeps))
    events = sorted((e for e, k in zip(dec.events, keeps[len(parts)]) if k), key=_sort_key)
    evs = [(topic, p) for _, topic, p in events]
    if mappings is None:
        mappings = clock.fit(evs)
    starts = [p["t"] for t, p in evs if t == M.BATCH_START]
    ends = [p["t"] for t, p in evs if t == M.BATCH_END]
    lo = min(starts) - int(lookback_s * 1e9) if starts else None
    hi = max(ends) if ends else None
    facts = None if host_scan is None else host_scan.fold(dec.srcs, mappings, lo, hi, tabs[M.TEL_HOST].extra)
    scoped: dict[str, dict[str, np.ndarray]] = {}
    for topic, keep in zip(TABLE_TOPICS, keeps):
        cols = tabs[topic].cols
        t = _mapped_t(cols["t"], cols["src"], dec.srcs, mappings)
        if lo is not None:
            keep = keep & (t >= lo)
        if hi is not None:
            keep = keep & (t <= hi)
        if keep.all():  # the usual case: views, no copy
            scoped[topic] = {**cols, "t": t}
        else:
            sel = np.flatnonzero(keep)
            scoped[topic] = {k: v[sel] for k, v in cols.items()}
            scoped[topic]["t"] = t[sel]
        if consume:
            tabs[topic].cols = {}
    ev_t_sel = np.array([p["t"] for _, p in evs], dtype=np.int64)
    ev_src_sel = np.array([codes[str(p["src"])] for _, p in evs], dtype=np.int64)  # (codes: 8 bytes an event)
    ev_seq_sel = np.array([p["seq"] for _, p in evs], dtype=np.int64)
    order = None
    if stored is not None:  # the stored request events, in the order the others are sorted in: (t, src, seq)
        rank = np.empty(len(dec.srcs), dtype=np.int64)
        rank[sorted(range(len(dec.srcs)), key=dec.srcs.__getitem__)] = np.arange(len(dec.srcs))
        all_kept = bool(keeps[-1].all())
        if all_kept and _in_order(req_cols, rank):  # the usual: every one kept, in order as they are
            order = mapped.arange(len(stored))
        elif all_kept:  # every one kept, sorted as they are (no copy of each column first)
            order = mapped.kept(np.lexsort((req_cols["seq"], rank[req_cols["src"]], req_cols["t"])))
        else:
            kept = np.flatnonzero(keeps[-1])
            order = mapped.kept(kept[np.lexsort((req_cols["seq"][kept], rank[req_cols["src"][kept]],
                                                 req_cols["t"][kept]))])
            del kept
        memory.give_back()  # (the de-duplication's and the sort's arrays, a day's events' each)
    all_t = [s["t"] for s in scoped.values()] + [ev_t_sel]
    if order is not None:  # (the stored events' kept stamps, not a copy of them in sorted order)
        all_t.append(req_cols["t"] if all_kept else req_cols["t"][keeps[-1]])
    # (a block at a time: the stored events' stamps are a mapped column, its pages handed back as read)
    firsts = [min(int(b.min()) for b in mapped.in_blocks(x) if b.size) for x in all_t if x.size] \
        + [f.first_t for f in (facts or {}).values()]
    origin = min(firsts) if firsts else 0
    del all_t
    src_seqs: dict[str, np.ndarray] = {}
    firsts_by_src = []
    if seqs and order is not None:
        ev_src_sel = np.concatenate([ev_src_sel, req_cols["src"][order]])
        ev_seq_sel = np.concatenate([ev_seq_sel, req_cols["seq"][order]])
        ev_t_sel = np.concatenate([ev_t_sel, req_cols["t"][order]])
    for code, src in enumerate(dec.srcs if seqs else ()):
        sel = [s["src"] == code for s in scoped.values()] + [ev_src_sel == code]
        got = np.concatenate([s["seq"][m] for s, m in zip(scoped.values(), sel)] + [ev_seq_sel[sel[-1]]])
        if got.size:
            src_seqs[src] = np.sort(got, kind="stable")  # (runs in order: merged)
            ts = [s["t"][m] for s, m in zip(scoped.values(), sel)] + [ev_t_sel[sel[-1]]]
            firsts_by_src.append((min(int(x.min()) for x in ts if x.size), src))
    # in the order each source first appears in time (as stream.build fills it)
    src_seqs = {src: src_seqs[src] for _, src in sorted(firsts_by_src)}
    del ev_t_sel, ev_src_sel, ev_seq_sel
    batch_start, batch_end, requests = events_to_requests(evs)
    if order is not None:  # (held ones beside them only for an rid that is not a string: then all as objects)
        kept = stored_requests(stored, order)
        requests = sorted(requests + list(kept), key=lambda r: (r.start_t, r.rid)) if requests else kept
    tel_srcs = sorted({dec.srcs[c] for topic in (M.TEL_GPU, M.TEL_HOST) for c in distinct(scoped[topic]["src"])}
                      | {dec.srcs[c] for c in facts or {}})
    del scoped[M.TEL_HB]
    gpus = _gpu_series(scoped.pop(M.TEL_GPU), tabs[M.TEL_GPU], dec.srcs, gpu_meta)
    if facts is None:
        host, procs, rapl = _host_series(scoped.pop(M.TEL_HOST), tabs[M.TEL_HOST], dec.srcs, batch_start)
    else:
        host, procs, rapl = _host_meta(facts, tabs[M.TEL_HOST], dec.srcs, batch_start)
    return BatchData(origin, gpus, host, procs, rapl, src_seqs, requests, batch_start, batch_end, dec.invalid,
                     duplicates, clock=mappings, clock_notes=clock.unprobed_notes(tel_srcs, mappings))


def message_keys(dec: Decoded) -> SeqSet | None:
    """The (source, seq) pairs of the heartbeats, the events and the stored requests' events (every message
    a lazy batch holds but the GPUs' and the host's): analyzer.seqset; None where one is out of range."""
    codes = {s: i for i, s in enumerate(dec.srcs)}
    hb = dec.tables[M.TEL_HB].cols
    parts = [(hb["src"], hb["seq"]), (np.array([codes[str(p["src"])] for _, _, p in dec.events], dtype=np.int64),
                                      np.array([p["seq"] for _, _, p in dec.events], dtype=np.int64))]
    if dec.requests is not None and len(dec.requests):
        cols = dec.requests.columns()
        parts.append((cols["src"], cols["seq"]))
    return seq_set(parts)


def sorted_keys(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """Every (src, seq) pair's key, src << SEQ_BITS | seq, joined and sorted; None where a seq is out of
    its bits. Made and sorted in place in a mapped file (analyzer.mapped), a block of each part at a time:
    a day's messages' keys are not copied on the heap (analyzer.seqset's sparse case, message_keys')."""
    for _, seq in parts:
        if any(map(out_of_range, mapped.in_blocks(seq))):
            return None
    out = mapped.empty(sum(seq.size for _, seq in parts), np.int64)
    at = 0
    for src, seq in parts:
        for lo in range(0, seq.size, _KEY_BLOCK):
            key = out[at + lo:at + min(lo + _KEY_BLOCK, seq.size)]
            key[:] = src[lo:lo + _KEY_BLOCK]
            key <<= SEQ_BITS
            key |= seq[lo:lo + _KEY_BLOCK]
        at += seq.size
    out.sort()  # (in place: no buffer beside it)
    return mapped.written(out)


_KEY_BLOCK = 1 << 16


def _in_order(cols: dict[str, np.ndarray], rank: np.ndarray) -> bool:
    """Whether events (``cols``: t, src, seq) are in (t, rank[src], seq) order as they are (a recording's
    usual), so that their lexsort would leave them there: checked a block at a time, not sorted."""
    for t, src, seq in zip(*(mapped.in_blocks(cols[k], _KEY_BLOCK, overlap=1) for k in ("t", "src", "seq"))):
        r = rank[src]
        same_t, same_r = t[1:] == t[:-1], r[1:] == r[:-1]
        if not ((t[1:] > t[:-1]) | (same_t & ((r[1:] > r[:-1]) | (same_r & (seq[1:] >= seq[:-1]))))).all():
            return False
    return True


def _first_of_duplicates(parts: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Per part, a keep mask: False for a message whose (src, seq, t) came earlier in the file."""
    pairs = seq_set([(p["src"], p["seq"]) for p in parts]) if any(p["seq"].size for p in parts) else None
    if pairs is not None and not pairs.repeats:  # the usual case, checked cheaply: no (src, seq) repeats at all
        return [np.ones(p["src"].size, dtype=bool) for p in parts]
    del pairs
    seq = np.concatenate([p["seq"] for p in parts])
    src = np.concatenate([p["src"] for p in parts])
    t = np.concatenate([p["t"] for p in parts])
    idx = np.concatenate([p["idx"] for p in parts])
    keep = np.ones(src.size, dtype=bool)
    if src.size > 1:
        order = np.lexsort((idx, t, seq, src))
        same = ((src[order][1:] == src[order][:-1]) & (seq[order][1:] == seq[order][:-1])
                & (t[order][1:] == t[order][:-1]))
        keep[order[1:][same]] = False
    out, at = [], 0
    for p in parts:
        n = p["src"].size
        out.append(keep[at:at + n])
        at += n
    return out


def _mapped_t(t: np.ndarray, src: np.ndarray, srcs: list[str], mappings: dict[str, clock.Mapping]) -> np.ndarray:
    """Telemetry stamps on the collector's clock (clock.Mapping.to_collector, element-wise)."""
    out = t
    for name, m in mappings.items():
        if m.identity or name not in srcs:
            continue
        sel = src == srcs.index(name)
        if not sel.any():
            continue
        if out is t:
            out = t.copy()
        x = t[sel]
        out[sel] = x + m.offset_ns + np.round(m.drift * (x - m.r0).astype(np.float64)).astype(np.int64)
    return out


def _order(cols: dict[str, np.ndarray], sel: np.ndarray) -> np.ndarray:
    """Rows ``sel`` sorted by (t, seq): the order of stream.normalise within one source."""
    t = cols["t"][sel]
    if t.size < 2 or (t[1:] > t[:-1]).all():  # the usual case: recorded in time order already
        return sel
    return sel[np.lexsort((cols["seq"][sel], t))]


def distinct(v: np.ndarray) -> np.ndarray:
    """np.unique(v) where v comes in runs of equal values (codes, stamps in order): unique over the runs'
    first values, not over every element."""
    if v.size < 2:
        return np.unique(v)
    return np.unique(np.concatenate([b[np.flatnonzero(np.concatenate([[True], b[1:] != b[:-1]]))]
                                     for b in mapped.in_blocks(v)]))  # (a block's first value: a run's, or again)


@dataclass
class GpuFold:
    """A GPU series' meta by stream.build's rules, folded over its rows in time order a part at a time:
    _gpu_series folds a GPU's rows at once, analyzer.gpu_store a row group at a time."""

    rows: int = 0
    first_t: int | None = None
    last_t: int | None = None
    simulated: bool = False
    last: dict[str, int] = field(default_factory=dict)   # label → its code on the last row
    driver: int = -1                                      # the last driver sent (only slow ticks carry it)
    kinds: set = field(default_factory=set)               # power kind codes seen
    limits: list = field(default_factory=list)            # (t, W) where the enforced power limit changed
    limit: tuple | None = None                            # (the last limit sent,)

    # the columns add reads (besides t, which comes mapped to the collector's clock), and seq
    COLUMNS = ("t", "seq", "simulated", "power_limit_w:present", "power_limit_w", _GPU_DRIVER, _GPU_POWER_KIND,
               *_GPU_META)

    def add(self, cols: dict[str, np.ndarray], rows: np.ndarray, t: np.ndarray) -> None:
        """Rows ``rows`` of ``cols`` (indices in time order, after those folded before); ``t``: the
        stamps of cols' rows on the collector's clock."""
        if rows.size == 0:
            return
        self.rows += rows.size
        first, last = int(t[rows[0]]), int(t[rows[-1]])
        self.first_t = first if self.first_t is None else min(self.first_t, first)
        self.last_t = last if self.last_t is None else max(self.last_t, last)
        self.simulated |= bool(cols["simulated"][rows].any())
        for k in _GPU_META:
            if k in cols:
                self.last[k] = int(cols[k][rows[-1]])
        if _GPU_DRIVER in cols:
            drivers = cols[_GPU_DRIVER][rows]
            known = np.flatnonzero(drivers >= 0)
            if known.size:
                self.driver = int(drivers[known[-1]])
        if _GPU_POWER_KIND in cols:
            self.kinds |= set(distinct(cols[_GPU_POWER_KIND][rows]).tolist())
        sent = rows[cols["power_limit_w:present"][rows]]
        if sent.size:
            limits = cols["power_limit_w"][sent]
            change = np.ones(limits.size, dtype=bool)
            change[1:] = limits[1:] != limits[:-1]
            change[0] = self.limit is None or not (limits[0] == self.limit[0])
            self.limits += [(int(x), float(v)) for x, v in zip(t[sent][change].tolist(), limits[change].tolist())]
            self.limit = (limits[-1],)

    def meta(self, gpu: int, strings: dict[str, list[str]]) -> dict[str, Any]:
        out: dict[str, Any] = {"gpu": gpu}
        for k, code in self.last.items():
            if code >= 0:
                out[k] = strings[k][code]
        if self.driver >= 0:
            out["driver"] = strings[_GPU_DRIVER][self.driver]
        out["power_kind"] = sorted({str(strings[_GPU_POWER_KIND][c]) for c in self.kinds if c >= 0})
        out["power_limit_changes"] = self.limits
        return out


def _gpu_series(cols: dict[str, np.ndarray], table: Table, srcs: list[str], meta: bool = True) -> list[Series]:
    if cols["t"].size == 0:
        return []
    spans = {}
    if cols["gpu"].min() < 0 or cols["gpu"].max() >= 1 << 31:
        found = set(zip(cols["src"].tolist(), cols["gpu"].tolist()))
    else:  # one key per (source, GPU): a 1-D unique is much cheaper than a 2-D one
        key = cols["src"].astype(np.int64) << 32 | cols["gpu"]
        heads = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
        keys = np.unique(key[heads])
        found = set(zip((keys >> 32).tolist(), (keys & 0xFFFFFFFF).tolist()))
        if heads.size == keys.size:  # each GPU's rows in one run (a stretch read GPU file by GPU file)
            stops = np.append(heads[1:], key.size)
            spans = {(int(k >> 32), int(k & 0xFFFFFFFF)): (int(a), int(b))
                     for k, a, b in zip(key[heads].tolist(), heads.tolist(), stops.tolist())}
    pairs = sorted((srcs[s], int(g)) for s, g in found)
    one_src = len({s for s, _ in pairs}) == 1
    out, picks = [], []
    for src, gpu in pairs:
        span = spans.get((srcs.index(src), gpu))
        sel = (np.arange(*span) if span is not None else
               np.flatnonzero((cols["src"] == srcs.index(src)) & (cols["gpu"] == gpu)))
        rows = _order(cols, sel)
        key = f"gpu{gpu}" if one_src else f"{src}/gpu{gpu}"
        fold = GpuFold()
        if meta:
            fold.add(cols, rows, cols["t"])
        # rows in order in one run: slices (views), no copy of the readings
        pick = slice(*span) if span is not None and rows is sel else rows
        s = Series(key, src, cols["t"][pick], cols["seq"][pick], {}, fold.simulated)
        s.meta = fold.meta(gpu, table.strings) if meta else {"gpu": gpu}
        out.append(s)
        picks.append(pick)
    # reading by reading, each column dropped once every GPU has its part: the caller passed its
    # only reference (to_batch consumes), so the table and the series are never both whole
    for f in table.series:
        col = cols.pop(f)
        for s, rows in zip(out, picks):
            s.values[f] = col[rows]
        del col
    return out


def _host_series(cols: dict[str, np.ndarray], table: Table, srcs: list[str], batch_start):
    if cols["t"].size == 0:
        return None, {}, {}
    src = _pick_host(sorted({srcs[c] for c in distinct(cols["src"])}), batch_start)
    sel = np.flatnonzero(cols["src"] == srcs.index(src))
    rows = _order(cols, sel)
    if rows is sel and sel.size == cols["t"].size:  # the usual one host, in order: views, not a copy of a
        rows = slice(None)                           # day's 10 Hz readings (~70 MB) beside the table's

    def reading(name: str) -> np.ndarray:
        # a table read without its readings (read_copy's whole-recording host table: they are read by
        # stretch, gpu_store.Store) gives the series, their readings empty
        return cols[name][rows] if name in cols else np.zeros(0)
    return _host_parts(src, cols["t"][rows], cols["seq"][rows], table, reading, bool(cols["simulated"][rows].any()),
                       lambda g: bool(cols[g + ":present"][rows].any()), lambda g: bool(cols[g + ":sim"][rows].any()))


def _host_meta(facts: dict[int, gpu_store.HostFacts], table: Table, srcs: list[str], batch_start):
    """_host_series' host, processes and RAPL zones from the host's rows folded (gpu_store.HostScan),
    their arrays empty, the host's samples counted in its meta: as gpu_store.lazy_batch leaves them."""
    present = sorted(srcs[c] for c, f in facts.items() if f.rows)
    if not present:
        return None, {}, {}
    src = _pick_host(present, batch_start)
    f = facts[srcs.index(src)]
    empty = np.zeros(0, dtype=np.int64)
    host, procs, rapl = _host_parts(src, empty, empty, table, lambda name: np.zeros(0), f.simulated,
                                    f.present.__contains__, f.sim.__contains__)
    host.meta = {"samples": f.rows}
    return host, procs, rapl


def _pick_host(present: list[str], batch_start) -> str:
    """The tel.host source whose series counts (hosts.pick_host_src), said when there were several."""
    src = hosts.pick_host_src(present, batch_start)
    if len(present) > 1:
        log.info("several_host_sources", srcs=present, used=src)
    return src


def _host_parts(src: str, t: np.ndarray, seq: np.ndarray, table: Table, reading, simulated: bool, present, sim):
    """The host's series and those of its processes and RAPL zones, from the picked source's stamps, seqs
    and ``reading(column)``; ``present(group)``, ``sim(group)``: whether a column group was sent, marked
    simulated."""
    host = Series("host", src, t, seq, {f: reading(f) for f in table.series}, simulated)
    procs, rapl = {}, {}
    groups = [g for g in table.extra if present(g)]
    for name in sorted(g[len("proc:"):] for g in groups if g.startswith("proc:")):
        g = f"proc:{name}"
        procs[name] = Series(g, src, t, seq, {"cpu_pct": reading(g + ":cpu_pct"), "rss_mib": reading(g + ":rss_mib")},
                             sim(g))
    for zone in sorted(g[len("rapl:"):] for g in groups if g.startswith("rapl:")):
        g = f"rapl:{zone}"
        rapl[zone] = Series(g, src, t, seq, {"energy_uj": reading(g + ":energy_uj")}, False)
    return host, procs, rapl


# ---------------------------------------------------------------------------------------------
# Reading stream.msgpack, and the columnar copy beside it.

def copy_dir(stream: Path) -> Path:
    return Path(stream).parent / "columns"


def fingerprint(stream: Path) -> dict[str, Any]:
    """What identifies a recording's bytes: its length and a hash of its first and last HASH_SPAN bytes."""
    size = stream.stat().st_size
    h = hashlib.sha256()
    with open(stream, "rb") as fh:
        h.update(fh.read(HASH_SPAN))
        if size > HASH_SPAN:
            fh.seek(max(size - HASH_SPAN, HASH_SPAN))
            h.update(fh.read())
    return {"source_bytes": size, "head_tail_sha256": h.hexdigest()}


def samples_key(source: dict[str, Any], lookback_s: float) -> str | None:
    """What raw/samples_*.parquet of this analysis derive from: the recording's fingerprint
    (``Decoded.source``), the lookback and the code that builds them (None when the recording was not
    read whole, e.g. while still being written, or the code cannot be read). A samples file carrying
    the same key holds the same table: not rewritten."""
    if not source:
        return None
    from analyzer import outputs, pipeline, slabs  # (they import this module's neighbours, not this one)

    code = hashlib.sha256()
    try:
        for module in (clock, hosts, M, outputs, pipeline, slabs, gpu_store, sys.modules[__name__],
                       sys.modules[BatchData.__module__]):
            code.update(Path(module.__file__).read_bytes())
    except (OSError, TypeError):  # no source beside the module: no key, the files are written
        return None
    return json.dumps({"recording": source, "lookback_s": float(lookback_s), "copy_version": COPY_VERSION,
                       "code_sha256": code.hexdigest()}, sort_keys=True)


class EventSpill:
    """Decoder event sink: each event written to a copy's events.msgpack as it is read (``[idx, topic,
    payload]``, as write_copy writes them), not held: a day's request events are ~150 MB as maps."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def __call__(self, idx: int, topic: str, payload: dict[str, Any]) -> None:
        self._fh.write(self._pack([idx, topic, payload]))

    def close(self) -> None:
        self._fh.close()

    abort = close  # (as the other spills: what was written goes with the copy's .tmp folder)


def _decode(stream: Path, sink=None, event_sink=None) -> tuple[Decoded, RecordingReader]:
    reader = RecordingReader(stream)
    dec = Decoder(sink=sink, event_sink=event_sink)
    gc_was_on = gc.isenabled()
    gc.disable()  # only containers of plain values are made here: no cycles to find (~10 % of the pass)
    try:
        for part in reader.scan(dec.find):
            dec.feed_scanned(part)
    finally:
        if gc_was_on:
            gc.enable()
    return dec.finish(), reader


def decode_file(stream: Path, keep_copy: bool = True) -> tuple[Decoded, str | None]:
    """One pass over stream.msgpack → (columns, the reader's problem or None), all in memory; then
    writes the copy (not when the file changed while it was read: a recording still being written)."""
    fp = fingerprint(stream) if keep_copy else {}
    out, reader = _decode(stream)
    if keep_copy and fingerprint(stream) == fp:
        out.source = fp
        write_copy(stream, out, reader.header or {}, reader.problem, fp)
    return out, reader.problem


def decode_to_copy(stream: Path) -> bool:
    """One pass over stream.msgpack that writes the columnar copy as it reads: the GPU samples go to
    their files chunk by chunk (analyzer.gpu_store.Spill), the host's and the heartbeats' rows to part
    files joined at the end (analyzer.table_spill), the events to their file: none of them whole in
    memory. False when no copy could be written (read-only batch, full disk, the file changed while it
    was read)."""
    root = copy_dir(stream)
    tmp = root.with_name(root.name + ".tmp")
    fp = fingerprint(stream)
    spills = []
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        spills.append(gpu_store.Spill(tmp))
        spills.append(table_spill.TableSpill(tmp, _row_groups()))
        spills.append(EventSpill(tmp / "events.msgpack"))
    except OSError as exc:
        _abort(spills, tmp)
        log.warning("columnar_copy_not_written", path=str(root), problem=str(exc), note="analysed in memory")
        return False
    gpus, tables, events = spills
    try:
        out, reader = _decode(stream, sink=lambda topic, cols: gpus(topic, cols) or tables(topic, cols),
                              event_sink=events)
        events.close()
        files = gpus.close()
        rows = tables.close()
    except OSError as exc:
        _abort(spills, tmp)
        log.warning("columnar_copy_not_written", path=str(root), problem=str(exc), note="analysed in memory")
        return False
    except BaseException:
        _abort(spills, tmp)
        raise
    if fingerprint(stream) != fp:
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("columnar_copy_not_written", path=str(root), problem="stream.msgpack changed while it was read")
        return False
    return write_copy(stream, out, reader.header or {}, reader.problem, fp, gpu_files=files, events_written=True,
                      tables_written=rows)


def _row_groups() -> dict[str, int]:
    """Rows per Parquet row group of the copy's tables but the GPUs' (the host's a stretch's worth: a
    re-analysis reads them by stretch, gpu_store.Store; a writer holds one group at a time)."""
    return {M.TEL_HOST: gpu_store.HOST_ROW_GROUP, M.TEL_HB: 1 << 17}


def _abort(spills: list, tmp: Path) -> None:
    for s in spills:
        s.abort()
    shutil.rmtree(tmp, ignore_errors=True)


def load(stream: Path) -> tuple[Decoded, str | None]:
    """The recording's columns: from the columnar copy when it matches stream.msgpack, else decoded
    from stream.msgpack (and the copy rewritten). Raises RecordingError like RecordingReader."""
    stream = Path(stream)
    got = read_copy(stream)
    if got is not None:
        return got
    return decode_file(stream)


def load_batch(stream: Path, lookback_s: float = DEFAULT_LOOKBACK_S) -> tuple[BatchData, str | None]:
    """The recording's BatchData with its GPU samples left in the copy's files, read by stretch of time
    (analyzer.gpu_store): memory bounded by a slab, not the recording. The copy is written first when
    missing or stale; when it cannot be, the recording is analysed in memory."""
    stream = Path(stream)
    got = read_copy(stream, gpus=False)
    if got is None and decode_to_copy(stream):
        memory.give_back()  # the pass's chunks, freed: the analysis starts from a low water mark
        got = read_copy(stream, gpus=False)
    if got is None:
        dec, problem = decode_file(stream, keep_copy=False)
        return to_batch(dec, lookback_s, consume=True), problem
    (dec, problem), files = got
    return gpu_store.lazy_batch(copy_dir(stream), files, dec, lookback_s), problem


def read_copy(stream: Path, gpus: bool = True):
    """The copy, or None when it is missing, partial, unreadable or not this recording's (logged why).
    ``gpus=False``: ((Decoded without the GPU rows, problem), the GPU files' entries) instead: the GPU
    samples stay on disk (analyzer.gpu_store)."""
    import pyarrow.parquet as pq

    root = copy_dir(stream)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") != COPY_VERSION:
            raise ValueError(f"copy version {meta.get('version')}, this build writes {COPY_VERSION}")
        now = fingerprint(stream)
        if {k: meta.get(k) for k in now} != now:
            log.info("columnar_copy_stale", path=str(root), recorded=meta.get("source_bytes"),
                     now=now["source_bytes"], note="rebuilt from stream.msgpack")
            return None
        tables = {}
        files = meta["gpu_files"]
        for topic in TABLE_TOPICS:
            tm = meta["tables"][topic]
            lean = not gpus and topic == M.TEL_HOST
            if topic == M.TEL_GPU:
                cols = (gpu_store.read_all(root, files) if gpus else None) or _concat([])
                have = set(cols)
                if not gpus:
                    for f in files:  # each GPU file is there, whole (every part), with every declared column
                        names = set(pq.read_schema(root / f["file"]).names)
                        lacking = [k for k in (*FLOAT_KEYS[topic], *STRING_KEYS[topic]) if k not in names]
                        rows = sum(pq.read_metadata(root / part).num_rows for part in f["parts"])
                        if rows != f["rows"] or lacking:
                            raise ValueError(f"{f['file']}: {rows} rows (meta.json: {f['rows']})"
                                             + (f", no column {lacking[0]!r}" if lacking else ""))
                    tables[topic] = Table(cols, tm["strings"], tm["extra"], FLOAT_KEYS[topic])
                    continue
            else:
                parts = parquet_parts.parts_on_disk(root, f"{topic}.parquet")
                rows = sum(pq.read_metadata(part).num_rows for part in parts)
                if not parts or rows != tm["rows"]:
                    raise ValueError(f"{topic}.parquet: {rows} rows in {len(parts)} part(s) (meta.json: {tm['rows']})")
                # (without the GPUs' rows, none of the host's: gpu_store.lazy_batch folds them from the
                # file a row group at a time, the stretches read theirs)
                cols = _concat([]) if lean else parquet_parts.read_columns(parts)
                if topic == M.TEL_HB:  # (a heartbeat a second from each daemon, whatever the length: mapped)
                    cols = {k: mapped.kept(v) for k, v in cols.items()}
                have = set(pq.read_schema(parts[0]).names)
            if not cols:
                cols = _concat([])
            if not lean and any(c.size != tm["rows"] for c in cols.values()):
                raise ValueError(f"{topic}: column lengths differ from meta.json's {tm['rows']} rows")
            declared = (*FLOAT_KEYS[topic], *STRING_KEYS[topic])
            lacking = [k for k in declared if k not in have or (k in STRING_KEYS[topic] and k not in tm["strings"])]
            if tm["rows"] and lacking:  # a key declared since the copy was written: rebuild, no version bump needed
                raise ValueError(f"{topic}: no column {lacking[0]!r} (declared in shared/messages.py after "
                                 f"this copy was written)")
            tables[topic] = Table(cols, tm["strings"], tm["extra"], FLOAT_KEYS[topic])
        events = []
        requests = StoredEvents(EventFile(root / "events.msgpack"))
        src_code = {src: k for k, src in enumerate(meta["srcs"])}
        with open(requests.file.path, "rb") as fh:
            # event by event, a request's own left in the file where it is, noted as a row of columns
            # (stream.StoredEvents; read back when used): a day of requests' events are not all held,
            # nor a map each while the copy is read (their memory, freed, stayed behind)
            unpacker = msgpack.Unpacker(fh, raw=False, strict_map_key=False, max_buffer_size=1 << 30)
            at = 0
            for i, t, p in unpacker:
                end = unpacker.tell()
                if t in REQUEST_TOPICS and isinstance(p, dict) and isinstance(p.get("rid"), str):
                    requests.add(REQUEST_TOPICS.index(t), int(i), src_code[str(p["src"])], p, at, end - at)
                else:
                    events.append((int(i), str(t), p))
                at = end
        dec = Decoded(tables, events, meta["srcs"], int(meta["invalid"]), now, requests.done())
    except Exception as exc:  # a damaged copy is never trusted: stream.msgpack is the source of truth
        log.warning("columnar_copy_unreadable", path=str(root), problem=str(exc), note="rebuilt from stream.msgpack")
        return None
    log.info("columnar_copy_used", path=str(root), source_bytes=meta["source_bytes"])
    return (dec, meta.get("problem")) if gpus else ((dec, meta.get("problem")), files)


def write_copy(stream: Path, dec: Decoded, header: dict, problem: str | None, fp: dict[str, Any],
               gpu_files: list[dict[str, Any]] | None = None, events_written: bool = False,
               tables_written: dict[str, int] | None = None) -> bool:
    """Write the columnar copy: the GPU samples one LZ4 Parquet file per GPU (analyzer.gpu_store), the
    host and heartbeats one per topic, the events, and meta.json last (a copy without meta.json is
    never read). Failing (read-only batch, full disk) only costs the next analysis a re-read of
    stream.msgpack. ``fp``: the fingerprint taken before the recording was read. ``gpu_files``: the
    GPU files already spilled into the copy's .tmp folder (decode_to_copy); else from ``dec``.
    ``events_written``: its events.msgpack too (decode_to_copy's EventSpill); else from ``dec``.
    ``tables_written``: rows of the other tables already written there (decode_to_copy's TableSpill)."""
    import pyarrow.parquet as pq

    root = copy_dir(stream)
    tmp = root.with_name(root.name + ".tmp")
    try:
        if gpu_files is None:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            spill = gpu_store.Spill(tmp)
            gpu = dec.tables[M.TEL_GPU]
            if gpu.n:
                spill(M.TEL_GPU, gpu.cols)
            gpu_files = spill.close()
        written = tables_written or {}
        for topic in TABLE_TOPICS:
            if topic == M.TEL_GPU or topic in written:
                continue
            cols = dec.tables[topic].cols
            table = arrow_np.table(cols)
            writer = parquet_parts.PartWriter(tmp, f"{topic}.parquet", table.schema, **parquet_parts.parquet_options(cols))
            writer.write(table, _row_groups()[topic])
            writer.close()
        if not events_written:
            with open(tmp / "events.msgpack", "wb") as fh:
                packer = msgpack.Packer(use_bin_type=True)
                for e in dec.events:
                    fh.write(packer.pack(list(e)))
        rows = {t: dec.tables[t].n for t in TABLE_TOPICS} | written
        rows[M.TEL_GPU] = sum(f["rows"] for f in gpu_files)
        meta = {"version": COPY_VERSION, **fp, "problem": problem, "srcs": dec.srcs, "invalid": dec.invalid,
                "recording_header": header, "gpu_files": gpu_files,
                "tables": {t: {"rows": rows[t], "strings": dec.tables[t].strings,
                               "extra": dec.tables[t].extra} for t in TABLE_TOPICS}}
        (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, default=str), encoding="utf-8")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    except Exception as exc:
        log.warning("columnar_copy_not_written", path=str(root), problem=str(exc),
                    note="the next analysis reads stream.msgpack again")
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    log.info("columnar_copy_written", path=str(root), source_bytes=fp["source_bytes"])
    return True

