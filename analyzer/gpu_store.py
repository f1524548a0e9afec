"""The GPU telemetry of a recording on disk, one Parquet file per (source, GPU), read by stretch of time.

GPU samples are most of a recording (100 Hz per GPU, against 10 Hz for the host and a few events per
request): a day of eight GPUs is 69 M of them. ``Spill`` takes the decoder's tel.gpu column chunks
as stream.msgpack is read and appends them to ``gpu/<k>.parquet`` in row groups of ``ROW_GROUP``
rows, noting each group's range of raw stamps, so nothing of the GPUs is held whole. A GPU's file is
in parts (``gpu/<k>.parquet``, ``gpu/<k>.1.parquet``, ...: analyzer.parquet_parts), as the host's is: a
reader holds one part's footer, not one that grows with the recording. ``Store`` then
serves the analysis (analyzer.slabs.Source): ``between(lo_s, hi_s)`` reads the row groups around that
stretch and applies ``columnar.to_batch``'s rules to them (de-duplication, clock mapping, scope,
order, series meta), so a stretch is the same BatchData, array for array, as the same stretch of the
whole recording in memory. The host's table (10 Hz) is read by stretch too, from the copy's
tel.host.parquet (row groups of ``HOST_ROW_GROUP`` rows); the heartbeats and the events stay in memory.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analyzer import arrow_np, clock, mapped, memory, parquet_parts, seqset
from analyzer import slabs as SL
from analyzer.stream import BatchData, Series
from shared import messages as M

if TYPE_CHECKING:  # (columnar imports this module)
    from analyzer.columnar import GpuFold

ROW_GROUP = 1 << 14        # rows per Parquet row group of a GPU file (about 2.7 min at 100 Hz: a stretch
#                            decodes little beyond its own; 64 Ki rows held ~50 MiB more at the peak of 8 GPUs)
PAD_NS = 1_000_000_000     # raw stamps read beyond a stretch: covers the clock mapping's rounding
READ_AHEAD_S = SL.SLAB_S   # a short stretch (one request) is read with this much after it, kept for the next
GPU_DIR = "gpu"
HOST_ROW_GROUP = 1 << 14   # rows per row group of the copy's tel.host.parquet (about 27 min at 10 Hz)


class Spill:
    """Decoder sink for tel.gpu: chunks → one Parquet file per (source code, GPU index) under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / GPU_DIR).mkdir(parents=True, exist_ok=True)
        self._files: dict[tuple[int, int], dict[str, Any]] = {}
        self._buf: dict[tuple[int, int], list[dict[str, np.ndarray]]] = {}
        self._rows: dict[tuple[int, int], int] = {}

    def __call__(self, topic: str, cols: dict[str, np.ndarray]) -> bool:
        if topic != M.TEL_GPU:
            return False
        # rows by (source, GPU), each's in file order (a stable sort): one gather per column, then views
        order = np.lexsort((cols["gpu"], cols["src"]))
        src, gpu = cols["src"][order], cols["gpu"][order]
        starts = np.flatnonzero(np.diff(src, prepend=-1) | np.diff(gpu, prepend=gpu[:1] - 1))
        ends = [*starts[1:].tolist(), order.size]
        cols = {k: v[order] for k, v in cols.items()}
        for a, b in zip(starts.tolist(), ends):
            key = (int(src[a]), int(gpu[a]))
            self._buf.setdefault(key, []).append({k: v[a:b] for k, v in cols.items()})
            self._rows[key] = self._rows.get(key, 0) + b - a
            if self._rows[key] >= ROW_GROUP:
                self._flush(key, whole=True)
        return True

    def _flush(self, key: tuple[int, int], whole: bool = False) -> None:
        """Write GPU ``key``'s buffered rows as row groups of ``ROW_GROUP`` rows; ``whole``: only full
        groups, the rest held for the next (a file's groups are all full-size but its last)."""
        parts = self._buf.pop(key, [])
        self._rows[key] = 0
        if not parts:
            return
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if len(parts) > 1 else parts[0]
        held = next(iter(cols.values())).size
        upto = held - held % ROW_GROUP if whole else held
        if upto < held:  # (a copy: a view would hold the whole chunk the rows came from)
            self._buf[key] = [{k: v[upto:].copy() for k, v in cols.items()}]
            self._rows[key] = held - upto
            cols = {k: v[:upto] for k, v in cols.items()}
        if not upto:
            return
        table = arrow_np.table(cols)
        f = self._files.get(key)
        if f is None:
            # LZ4, not the other tables' zstd: every re-analysis decodes each GPU row once (zstd: ~1.7x
            # the decoding CPU, for about half the size)
            writer = parquet_parts.PartWriter(self.root, f"{GPU_DIR}/{len(self._files)}.parquet", table.schema,
                                              **parquet_parts.parquet_options(cols, compression="lz4"))
            f = self._files[key] = {"src": key[0], "gpu": key[1], "file": writer.name, "parts": writer.parts,
                                    "part_groups": writer.per, "rows": 0, "groups": [], "writer": writer}
        f["writer"].write(table, ROW_GROUP)
        for at in range(0, table.num_rows, ROW_GROUP):
            t = cols["t"][at:at + ROW_GROUP]
            f["groups"].append([int(t.min()), int(t.max()), int(t.size)])
            f["rows"] += t.size

    def close(self) -> list[dict[str, Any]]:
        """Flush and close every file: [{src, gpu, file, rows, groups: [[t_min, t_max, rows], ...]}]."""
        for key in list(self._buf):
            self._flush(key)
        out = []
        for f in self._files.values():
            f.pop("writer").close()
            out.append(f)
        return out

    def abort(self) -> None:
        for f in self._files.values():
            w = f.pop("writer", None)
            if w is not None:
                w.close()


def read_all(root: Path, files: list[dict[str, Any]]) -> dict[str, np.ndarray] | None:
    """Every GPU file joined back into one tel.gpu table in file order (the whole-recording path)."""
    if not files:
        return None
    parts = []
    for f in files:
        cols = parquet_parts.read_columns([Path(root) / name for name in f["parts"]])
        if any(c.size != f["rows"] for c in cols.values()):
            raise ValueError(f"{f['file']}: {next(iter(cols.values())).size} rows, meta.json says {f['rows']}")
        parts.append(cols)
    order = np.argsort(np.concatenate([p["idx"] for p in parts]), kind="stable")
    out = {}
    for name in list(parts[0]):
        out[name] = np.concatenate([p.pop(name) for p in parts])[order]
    return out


def _raw_range(m: clock.Mapping | None, lo_ns: float, hi_ns: float) -> tuple[float, float]:
    """Raw stamps of a source that may map into [lo, hi] on the collector's clock (padded)."""
    if m is None:
        return lo_ns - PAD_NS, hi_ns + PAD_NS
    return m.to_source(lo_ns) - PAD_NS, m.to_source(hi_ns) + PAD_NS


class Store:
    """A recording's GPU files as an analyzer.slabs.Source. ``dec``: the recording's columns without
    the GPU rows (the heartbeat table in memory: a stretch takes its part of it; the host's stamps, seqs
    and flags, its readings left in the copy's tel.host.parquet, read by stretch as the GPU files);
    ``base``: the BatchData of everything but the GPUs (host, events, requests) built from it by
    columnar.to_batch."""

    def __init__(self, root: Path, files: list[dict[str, Any]], strings: dict[str, list[str]], series: tuple[str, ...],
                 dec, lookback_s: float, base: BatchData, host: HostScan):
        self.root, self.files, self.strings, self.series = Path(root), files, strings, series
        # the tables only: the events' maps are the requests' (held in base), not needed again here
        # and not the host's rows: the file's, by stretch (_HostFile)
        self.host_file = _HostFile(host)
        self.dec = dataclasses.replace(dec, events=[], requests=None,
                                       tables={**dec.tables, M.TEL_HOST: dataclasses.replace(dec.tables[M.TEL_HOST], cols={})})
        self.lookback_s = lookback_s
        h = base.host
        if h is not None and h.t_ns.size:
            self._host_ends = [int(h.t_ns[0]), int(h.t_ns[-1])]
        elif h is not None and host.facts:  # (folded: the picked source's first and last stamps)
            f = host.facts[dec.srcs.index(h.src)]
            self._host_ends = [f.first_t, f.last_t]
        else:
            self._host_ends = []
        self.mappings = base.clock
        self.srcs = dec.srcs
        starts = [p["t"] for _, t, p in dec.events if t == M.BATCH_START]
        ends = [p["t"] for _, t, p in dec.events if t == M.BATCH_END]
        self.lo = min(starts) - int(lookback_s * 1e9) if starts else None
        self.hi = max(ends) if ends else None
        # what a stretch needs of the events: the batch markers (scope, the host's pick), not the whole
        # day's clock probes every time (the clock is fitted once: base.clock); every event's seq still
        # counts as seen (a publisher of both events and telemetry has no gap)
        self._marks = [e for e in dec.events if e[1] in (M.BATCH_START, M.BATCH_END)]
        # the non-GPU tables' rows by source in time order, once: a stretch bisects rather than masks them
        self._rows_by_src = {topic: _by_src(dec.tables[topic].cols) for topic in dec.tables
                             if topic not in (M.TEL_GPU, M.TEL_HOST)}
        mapped.drop()  # (the heartbeats' pages read, handed back before the events' are: each a pass of its own)
        seqs: dict[str, list[np.ndarray]] = {}
        names = np.array([str(p["src"]) for _, _, p in dec.events], dtype=object)
        values = np.array([int(p["seq"]) for _, _, p in dec.events], dtype=np.int64)
        for name in sorted(set(names.tolist())):
            seqs.setdefault(name, []).append(values[names == name])
        if dec.requests is not None and len(dec.requests):  # (the request events left in the copy's file)
            from analyzer.columnar import distinct

            cols = dec.requests.columns()
            codes = distinct(cols["src"]).tolist()
            for code in codes:  # (one publisher, the usual: its seqs are the column, no mask read)
                seqs.setdefault(dec.srcs[code], []).append(cols["seq"] if len(codes) == 1 else
                                                            cols["seq"][cols["src"] == code])
        self._event_seqs = {s: _sorted_once(v) for s, v in seqs.items()}
        mapped.drop()
        self._cache: tuple[float, float, BatchData] | None = None
        self._files = {f["file"]: _GroupFile([self.root / n for n in f["parts"]],
                                             [(t0, t1) for t0, t1, _ in f["groups"]], f["part_groups"])
                       for f in files}
        self.recording: dict[str, Any] = {}
        self.most_rows = 0  # the most GPU rows one stretch held (the bench and tests show it stays a slab's)
        self.scans = [self._scan(f) for f in files]
        self.base = base

    def __getstate__(self) -> dict[str, Any]:
        # open files and decoded row groups stay with the process that has them (a worker reads its own)
        return {**self.__dict__, "_cache": None, "_files": {k: v.closed() for k, v in self._files.items()},
                "host_file": self.host_file.closed()}

    @property
    def holding(self) -> bool:
        """Whether a stretch read or a file's decoded row group is kept (for the next read)."""
        return self._cache is not None or any(gf._kept is not None for gf in (*self._files.values(), self.host_file.file))

    def release(self) -> None:
        """Let go of the last stretch read and each file's kept row group: a pass over the slabs is done
        (the next stretch read is the first slab's, so they would only sit beside the outputs)."""
        self._cache = None
        for gf in (*self._files.values(), self.host_file.file):
            gf._kept = None

    def _file(self, f: dict[str, Any]) -> _GroupFile:
        """GPU file ``f``'s reader (its parts opened as the stretches read them)."""
        return self._files[f["file"]]

    # -- the whole file, once: meta of the series ------------------------------------------------
    def _scoped(self, f: dict[str, Any], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mapped stamps, in-scope mask) of raw stamps ``t`` of file ``f``'s source."""
        from analyzer.columnar import _mapped_t

        mapped = _mapped_t(t, np.full(t.size, f["src"], dtype=np.int32), self.srcs, self.mappings)
        keep = np.ones(t.size, dtype=bool)
        if self.lo is not None:
            keep &= mapped >= self.lo
        if self.hi is not None:
            keep &= mapped <= self.hi
        return mapped, keep

    def _scan(self, f: dict[str, Any]) -> GpuFold:
        """The meta of file ``f``'s series, read a row group at a time (its few meta columns, once)
        while file order is time order without repeats (the usual case); else the whole file's meta
        columns sorted by (t, seq), repeats dropped."""
        import pyarrow.parquet as pq

        from analyzer.columnar import GpuFold

        # (not kept open: the stretches open their files when first read, as a worker does)
        parts = [self.root / name for name in f["parts"]]
        have = set(pq.read_schema(parts[0]).names)
        names = [n for n in GpuFold.COLUMNS if n in have]
        out = GpuFold()
        last_t, last_seq = None, None
        for c in (_group_meta(pf, g, names) for pf in map(pq.ParquetFile, parts) for g in range(pf.num_row_groups)):
            t, seq = c["t"], c["seq"]
            if t.size == 0:
                continue
            if ((np.diff(t) < 0).any() or (np.diff(seq) <= 0).any()
                    or (last_t is not None and (t[0] < last_t or seq[0] <= last_seq))):
                break  # shuffled or repeated: folded over again below, from the whole file
            last_t, last_seq = int(t[-1]), int(seq[-1])
            self._fold(out, f, c)
        else:
            return out
        import pyarrow as pa

        tab = pa.concat_tables([pq.ParquetFile(part).read(columns=names, use_threads=False) for part in parts])
        t, seq = arrow_np.to_numpy(tab.column("t")), arrow_np.to_numpy(tab.column("seq"))
        order = np.lexsort((seq, t))
        first = np.ones(order.size, dtype=bool)
        first[1:] = (t[order][1:] != t[order][:-1]) | (seq[order][1:] != seq[order][:-1])
        tab = tab.take(order[first])
        out = GpuFold()
        self._fold(out, f, {n: arrow_np.to_numpy(tab.column(n)) for n in tab.column_names})
        return out

    def _fold(self, out: GpuFold, f: dict[str, Any], c: dict[str, np.ndarray]) -> None:
        """Rows in time order into the file's fold (columnar.GpuFold: _gpu_series's rules), those in scope."""
        mapped, keep = self._scoped(f, c["t"])
        out.add(c, np.flatnonzero(keep), mapped)

    def gpus(self) -> list[Series]:
        """The series of every GPU with samples in scope, meta only (arrays empty), as to_batch names them."""
        have = [(f, s) for f, s in zip(self.files, self.scans) if s.rows]
        pairs = sorted((self.srcs[f["src"]], f["gpu"], i) for i, (f, _) in enumerate(have))
        one_src = len({s for s, _, _ in pairs}) == 1
        out = []
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        for src, gpu, i in pairs:
            f, sc = have[i]
            s = Series(f"gpu{gpu}" if one_src else f"{src}/gpu{gpu}", src, empty_i, empty_i,
                       {k: empty_f for k in self.series}, sc.simulated)
            s.meta = sc.meta(gpu, self.strings)
            s.meta["samples"] = sc.rows
            s.meta["file"] = f["file"]
            out.append(s)
        return out

    def first_last(self) -> tuple[int | None, int | None]:
        firsts = [s.first_t for s in self.scans if s.first_t is not None]
        lasts = [s.last_t for s in self.scans if s.last_t is not None]
        return (min(firsts) if firsts else None), (max(lasts) if lasts else None)

    # -- stretches ----------------------------------------------------------------------------------
    def span_s(self) -> tuple[float, float]:
        b = self.base
        ends = [x for x in self.first_last() if x is not None] + self._host_ends
        if not ends:
            return (float("nan"), float("nan"))
        return (min(ends) - b.origin_ns) / 1e9, (max(ends) - b.origin_ns) / 1e9

    def between(self, lo_s: float, hi_s: float) -> BatchData:
        if self._cache is not None and self._cache[0] <= lo_s and hi_s <= self._cache[1]:
            return SL.InMemory(self._cache[2]).between(lo_s, hi_s)
        read_hi = hi_s if hi_s - lo_s >= READ_AHEAD_S / 10 else hi_s + READ_AHEAD_S
        self._cache = None  # the old stretch goes before the next is read (the caller may still hold a view)
        got = self._read(lo_s, read_hi)
        self._cache = (lo_s, read_hi, got)
        return SL.InMemory(got).between(lo_s, hi_s)

    def _names(self, f: dict[str, Any]) -> tuple[str, ...]:
        """The columns a stretch reads of file ``f``: stamps, seqs and readings. Its source and GPU are
        the file's own (filled in, not decoded); its meta comes from the whole file's scan; ``idx`` (file
        order) only matters among repeated messages, read then (``_Rows``)."""
        have = self._file(f).schema_arrow.names
        return tuple(n for n in ("t", "seq", *self.series) if n in have)

    def _gpu_rows(self, wanted: list[tuple[dict[str, Any], float, float, list[int]]]) -> dict[str, np.ndarray]:
        """The rows of each (file, r0, r1, groups) with r0 <= t <= r1, in file order, one numpy column
        each. Copied once out of the decoded pages into columns sized by the groups' rows (pages never
        written to are never resident), each file's groups let go before the next file's are read;
        files whose columns differ (not as Spill writes them) are joined as columnar.to_batch's chunks."""
        from analyzer.columnar import _concat

        schemas = [self._file(f).schema_arrow for f, _, _, _ in wanted]
        if any(not sc.equals(schemas[0]) for sc in schemas):
            parts = [_copied(_rows_between(self._files[f["file"]].read(g, tuple(sc.names)), r0, r1))
                     for (f, r0, r1, g), sc in zip(wanted, schemas)]
            return _concat([p for p in parts if p])
        if not wanted:
            return _concat([])
        names = self._names(wanted[0][0])
        fixed = ("src", "gpu")
        most = sum(f["groups"][g][2] for f, _, _, groups in wanted for g in groups)
        out = {n: np.empty(most, dtype=arrow_np.dtype_of(schemas[0].field(n).type)) for n in (*fixed, *names)}
        at = 0
        for f, r0, r1, g in wanted:
            for batch, p in _rows_between(self._files[f["file"]].read(g, names), r0, r1):
                n = _rows(p)
                for i, name in enumerate(batch.schema.names):
                    out[name][at:at + n] = arrow_np.to_numpy(batch.column(i))[p]
                for name in fixed:
                    out[name][at:at + n] = f[name]
                at += n
        return _Rows({n: v[:at] for n, v in out.items()}, lambda: self._idx(wanted))

    def _idx(self, wanted: list[tuple[dict[str, Any], float, float, list[int]]]) -> np.ndarray:
        """The ``idx`` column of ``_gpu_rows(wanted)``'s rows (the same rows: picked by the same stamps)."""
        parts = []
        for f, r0, r1, g in wanted:
            tab = self._files[f["file"]].read(g, ("t", "idx"), keep=False)
            t = arrow_np.to_numpy(tab.column("t"))
            parts.append(arrow_np.to_numpy(tab.column("idx"))[(t >= r0) & (t <= r1)])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _read(self, lo_s: float, hi_s: float) -> BatchData:
        from analyzer.columnar import Decoded, Table, TABLE_TOPICS, _concat, to_batch

        b = self.base
        lo_ns = lo_s if lo_s == -SL.INF else b.origin_ns + lo_s * 1e9
        hi_ns = hi_s if hi_s == SL.INF else b.origin_ns + hi_s * 1e9
        ranges = {code: _raw_range(self.mappings.get(src), lo_ns, hi_ns) for code, src in enumerate(self.srcs)}
        wanted = []  # (file, its raw range, its row groups there)
        for f in self.files:
            r0, r1 = ranges[f["src"]]
            groups = self._files[f["file"]].meeting([(r0, r1)])
            if groups:
                wanted.append((f, r0, r1, groups))
        cols = self._gpu_rows(wanted)
        self.most_rows = max(self.most_rows, cols["t"].size)
        tables = {}
        gpu = self.dec.tables[M.TEL_GPU]
        tables[M.TEL_GPU] = Table(cols, gpu.strings, gpu.extra, gpu.series)
        for topic in TABLE_TOPICS:
            if topic == M.TEL_GPU:
                continue
            tab = self.dec.tables[topic]
            if topic == M.TEL_HOST:
                tables[topic] = Table(self.host_file.rows(ranges) or _concat([]), tab.strings, tab.extra, tab.series)
                continue
            # every source's rows (their seqs say what was lost), the host's picked below as the whole's;
            # in file order, as a mask over the table would pick them
            spans = [(idx, SL.stamp_range(t, *ranges[code])) for code, idx, t in self._rows_by_src[topic]]
            picks = [np.arange(*ab) if idx is None else idx[slice(*ab)] for idx, ab in spans]
            sel = np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)
            tables[topic] = Table({k: v[sel] for k, v in tab.cols.items()}, tab.strings, tab.extra, tab.series)
        part = to_batch(Decoded(tables, self._marks, self.srcs, 0), self.lookback_s, mappings=self.mappings,
                        gpu_meta=False)
        # the whole recording's names, order and meta; a GPU without samples here gets empty arrays
        found = {(g.src, g.meta.get("gpu")): g for g in part.gpus}
        gpus = []
        for g in b.gpus:
            got = found.get((g.src, g.meta.get("gpu")))
            gpus.append(dataclasses.replace(g, t_ns=got.t_ns, seq=got.seq, values=got.values) if got is not None
                        else _empty(g))
        src_seqs = dict(part.src_seqs)
        # the events' seqs between the first and the last of a source's samples in the stretch: all
        # that counts the seqs seen between two of them (windows.seq_gap_intervals), not the whole day's
        bounds: dict[str, tuple[int, int]] = {}
        for series in part.gpus + ([part.host] if part.host is not None else []):
            if series.seq.size:
                a, z = int(series.seq.min()), int(series.seq.max())
                was = bounds.get(series.src, (a, z))
                bounds[series.src] = (min(a, was[0]), max(z, was[1]))
        for s, ev in self._event_seqs.items():
            a, z = bounds.get(s, (0, -1))
            near = ev[np.searchsorted(ev, a, "left"):np.searchsorted(ev, z, "right")]
            src_seqs[s] = np.union1d(src_seqs.get(s, np.zeros(0, dtype=np.int64)), near)
        host, procs, rapl = part.host, part.procs, part.rapl
        if b.host is not None and (host is None or host.src != b.host.src):
            # the stretch holds no sample of the whole's host (another host's, at most): none here
            host, procs, rapl = _empty(b.host), {}, {}
        elif host is not None and b.host is not None:
            host = dataclasses.replace(b.host, t_ns=host.t_ns, seq=host.seq, values=host.values)
        return dataclasses.replace(b, gpus=gpus, host=host, procs=procs, rapl=rapl, src_seqs=src_seqs, source=None)


class _GroupFile:
    """A Parquet file of the copy read by row group, in its parts of ``per`` groups (analyzer.parquet_parts):
    a part opened once per process while its groups are read (a stretch reads a file up to three times,
    schema, stamps and rows, and a day has dozens of slabs), one part open at a time (a footer parsed
    takes ~15 KiB a row group: a whole day's GPU file held ~8 MiB), and the last group a stretch read
    kept decoded: stretches are read in time order and meet or overlap (a slab's margins, requests past
    a cut), so the next one starts in it. ``spans``: each group's range of raw stamps."""

    def __init__(self, paths: list[Path], spans: list[tuple[float, float]], per: int):
        self.paths, self.spans, self.per = paths, spans, per
        self._open = None  # (part, its pq.ParquetFile)
        self._kept = None  # (group, columns, its Arrow table)
        self._schema = None

    def closed(self) -> _GroupFile:
        """This reader without its open file and decoded group (a worker opens its own)."""
        out = copy.copy(self)
        out._open, out._kept, out._schema = None, None, None
        return out

    def _part(self, k: int):
        """Part k's pq.ParquetFile (the one open before let go)."""
        if self._open is None or self._open[0] != k:
            import pyarrow.parquet as pq

            self._open = None
            self._open = (k, pq.ParquetFile(self.paths[k]))
        return self._open[1]

    @property
    def schema_arrow(self):
        if self._schema is None:
            self._schema = self._part(0).schema_arrow
        return self._schema

    def meeting(self, ranges: list[tuple[float, float]]) -> list[int]:
        """The row groups whose stamps meet one of the raw ranges [r0, r1], ascending."""
        return [g for g, (t0, t1) in enumerate(self.spans) if any(t1 >= r0 and t0 <= r1 for r0, r1 in ranges)]

    def _groups(self, run: list[int], names: tuple[str, ...]) -> list:
        """Row groups ``run`` (ascending) as a table per part they lie in."""
        out, per = [], self.per
        for k in sorted({g // per for g in run}):
            out.append(self._part(k).read_row_groups([g - k * per for g in run if g // per == k],
                                                     columns=list(names), use_threads=False))
        return out

    def read(self, groups: list[int], names: tuple[str, ...], keep: bool = True):
        """Row groups ``groups`` (ascending), columns ``names``, as one Arrow table; the last one kept
        decoded for the next stretch (``keep``). The kept group is read on its own: a slice of a read of
        several groups would hold the whole read's buffers."""
        import pyarrow as pa

        kept = self._kept
        if kept is not None and (kept[1] != names or kept[0] not in groups):
            kept = None
        tabs, run = [], []
        for g in groups:
            alone = kept is not None and g == kept[0]
            if alone or (keep and g == groups[-1]):
                if run:
                    tabs.extend(self._groups(run, names))
                    run = []
                tabs.extend([kept[2]] if alone else self._groups([g], names))
            else:
                run.append(g)
        if run:
            tabs.extend(self._groups(run, names))
        if keep:
            self._kept = (groups[-1], names, tabs[-1])
        return tabs[0] if len(tabs) == 1 else pa.concat_tables(tabs)


@dataclass
class HostFacts:
    """What a batch needs of one source's host rows in scope (columnar._host_series' meta, folded)."""

    rows: int = 0
    first_t: int = 0   # the first and last stamp, on the collector's clock
    last_t: int = 0
    simulated: bool = False
    present: set[str] = dataclasses.field(default_factory=set)  # the column groups (proc:*, rapl:*) sent
    sim: set[str] = dataclasses.field(default_factory=set)      # the processes' groups marked simulated


class HostScan:
    """The copy's tel.host.parquet met a row group at a time, never whole (a week of the host's 10 Hz
    stamps, seqs and flags is ~200 MB, then de-duplicated and sorted): each group's range of raw stamps
    (``spans``, the stretches' _HostFile's), and whether its rows are the usual ones (``usual``): no
    (source, seq) sent twice, none another message's (``others``: their pairs, analyzer.seqset; None
    when they could not be made), so every row is kept (columnar._first_of_duplicates would find so).
    Then ``fold`` gives what the batch needs of them; else the table is read whole (``lean``)."""

    COLUMNS = ("src", "seq", "t")

    def __init__(self, paths: list[Path], others: seqset.SeqSet | None):
        import pyarrow.parquet as pq

        counts = [pq.read_metadata(part).num_row_groups for part in paths]  # (every part full but the last)
        self.groups = sum(counts)
        self.names = tuple(pq.read_schema(paths[0]).names)
        self.spans: list[tuple[float, float]] = []
        self.file = _GroupFile(paths, self.spans, max(counts[0], 1))  # (the stretches' reader: _HostFile)
        self.usual = others is not None
        self.facts: dict[int, HostFacts] = {}
        last: dict[int, int] = {}  # each source's last seq so far, in file order
        for g in range(self.groups):
            c = self._group(g, self.COLUMNS)
            src, seq, t = c["src"], c["seq"], c["t"]
            # (as floats: compared as the stretches' ranges are; an empty group meets no range)
            self.spans.append((float(t.min()), float(t.max())) if t.size else (np.nan, np.nan))
            if not self.usual or not t.size:
                continue
            if seqset.out_of_range(seq) or others.hits(src, seq):
                self.usual = False
                continue
            for code in np.unique(src).tolist():  # each source's seqs rising in file order: none twice
                mine = seq[src == code]
                if mine[0] <= last.get(code, -1) or (mine[1:] <= mine[:-1]).any():
                    self.usual = False
                    break
                last[code] = int(mine[-1])

    def _group(self, g: int, names) -> dict[str, np.ndarray]:
        tab, = self.file._groups([g], tuple(n for n in names if n in self.names))
        return {n: arrow_np.to_numpy(c) for n, c in zip(tab.column_names, tab.columns)}

    def lean(self) -> dict[str, np.ndarray]:
        """The whole table's stamps, seqs, codes and flags (its readings left on disk)."""
        return parquet_parts.read_columns(self.file.paths, readings=False)

    def fold(self, srcs: list[str], mappings: dict[str, clock.Mapping], lo: int | None, hi: int | None,
             extra: list[str]) -> dict[int, HostFacts]:
        """Per source code, its rows with stamps (mapped to the collector's clock) within [lo, hi]: their
        count, first and last stamps, flags and the column groups of ``extra`` sent (kept as ``facts``)."""
        from analyzer.columnar import _mapped_t

        flags = [f"{g}:present" for g in extra] + [f"{g}:sim" for g in extra if g.startswith("proc:")]
        out: dict[int, HostFacts] = {}
        for g in range(self.groups):
            c = self._group(g, ("src", "t", "simulated", *flags))
            src = c["src"]
            t = _mapped_t(c["t"], src, srcs, mappings)
            keep = np.ones(t.size, dtype=bool)
            if lo is not None:
                keep &= t >= lo
            if hi is not None:
                keep &= t <= hi
            for code in np.unique(src[keep]).tolist():
                sel = keep & (src == code)
                mine = t[sel]
                a, z = int(mine.min()), int(mine.max())
                f = out.setdefault(code, HostFacts(first_t=a, last_t=z))
                f.rows += int(mine.size)
                f.first_t, f.last_t = min(f.first_t, a), max(f.last_t, z)
                f.simulated |= bool(c["simulated"][sel].any())
                f.present |= {name for name in extra if c[f"{name}:present"][sel].any()}
                f.sim |= {name for name in extra if name.startswith("proc:") and c[f"{name}:sim"][sel].any()}
        self.facts = out
        return out


class _HostFile:
    """The copy's tel.host.parquet read by stretch: the row groups whose stamps meet a stretch's raw
    ranges (a _GroupFile), and of them the rows of each source within its range, in file order (the rows
    a mask over the whole table picks). ``scan``: the file met once (each group's range of stamps)."""

    def __init__(self, scan: HostScan):
        self.names = scan.names
        self.file = scan.file
        self.most_rows = 0  # the most host rows one stretch held decoded (the tests show it stays a slab's)

    def closed(self) -> _HostFile:
        """This reader without its open file and decoded group (a worker opens its own)."""
        out = copy.copy(self)
        out.file = self.file.closed()
        return out

    def rows(self, ranges: dict[int, tuple[float, float]]) -> dict[str, np.ndarray] | None:
        """The rows of each source code within its raw range ``ranges[code]`` (None: no group holds any)."""
        want = self.file.meeting(list(ranges.values()))
        if not want:
            return None
        tab = self.file.read(want, self.names)
        cols = {n: arrow_np.to_numpy(c) for n, c in zip(tab.column_names, tab.columns)}
        t, src = cols["t"], cols["src"]
        self.most_rows = max(self.most_rows, t.size)
        keep = np.zeros(t.size, dtype=bool)
        for code in np.unique(src).tolist():
            r0, r1 = ranges[code]
            keep |= (src == code) & (t >= r0) & (t <= r1)
        sel = np.flatnonzero(keep)
        return {n: v[sel] for n, v in cols.items()}


class _Rows(dict):
    """A stretch's GPU columns. ``idx`` (the rows' places in stream.msgpack) is read only if asked for:
    columnar.to_batch needs it only to tell which of a repeated message's copies came first."""

    def __init__(self, cols: dict[str, np.ndarray], read_idx):
        super().__init__(cols)
        self._read_idx = read_idx

    def __missing__(self, key: str) -> np.ndarray:
        if key != "idx":
            raise KeyError(key)
        self["idx"] = idx = self._read_idx()
        return idx


def _group_meta(pf, g: int, names: list[str]) -> dict[str, np.ndarray]:
    """Columns ``names`` of row group ``g`` of GPU file ``pf``. A label, flag or code column holding one
    value throughout the group (its statistics: min == max, no nulls; the usual case) is filled in
    rather than decoded; the power limit is not read where the group sends none (GpuFold reads it only
    where sent)."""
    rg, schema = pf.metadata.row_group(g), pf.schema_arrow
    fixed = {}  # name → (its one value, dtype)
    for name in names:
        col = rg.column(schema.get_field_index(name))
        dtype, stats = arrow_np.dtype_of(schema.field(name).type), col.statistics
        if (name not in ("t", "seq") and col.path_in_schema == name and dtype is not None and dtype.kind in "biu"
                and stats is not None and stats.has_min_max and stats.has_null_count and stats.null_count == 0
                and stats.min == stats.max):
            fixed[name] = (stats.min, dtype)
    skip = set(fixed)
    if fixed.get("power_limit_w:present", (None,))[0] is False:
        skip.add("power_limit_w")
    tab = pf.read_row_group(g, columns=[n for n in names if n not in skip], use_threads=False)
    out = {n: arrow_np.to_numpy(tab.column(n)) for n in tab.column_names}
    for name, (value, dtype) in fixed.items():
        out[name] = np.full(rg.num_rows, value, dtype=dtype)
    return out


def _sorted_once(parts: list[np.ndarray]) -> np.ndarray:
    """``np.unique`` of the parts' values (mapped: analyzer.mapped), without a sort where they rise
    already (a publisher's seqs in file order: a day's events' sorted again were three copies at once)."""
    if len(parts) == 1 and mapped.rising(parts[0]):
        return mapped.kept(parts[0])
    out = mapped.empty(sum(p.size for p in parts), np.int64)  # (joined and sorted in place, not on the heap)
    at = 0
    for p in parts:
        out[at:at + p.size] = p
        at += p.size
    out.sort(kind="stable")  # (runs in order: merged)
    return mapped.written(out) if mapped.rising(out) else mapped.kept(np.unique(out))


def _by_src(cols: dict[str, np.ndarray]) -> list[tuple[int, np.ndarray | None, np.ndarray]]:
    """Per source code of a table: (code, its rows' indices, their raw stamps), in stamp order (stable),
    so the rows within a raw range are found by bisection (slabs.stamp_range: the comparison a mask
    ``t >= r0`` makes). One source whose stamps rise in file order (the usual): (code, None, the table's
    own stamps): its rows are the table's, no index array made (a day's heartbeats' were 16 bytes each)."""
    from analyzer.columnar import distinct

    t = cols["t"]
    if not t.size:
        return []
    codes = distinct(cols["src"]).tolist()
    if len(codes) == 1 and mapped.rising(t, strictly=False):
        return [(int(codes[0]), None, t)]
    out = []
    for code in codes:
        idx = np.flatnonzero(cols["src"] == code)
        ts = t[idx]
        if ts.size > 1 and (ts[1:] < ts[:-1]).any():
            order = np.argsort(ts, kind="stable")
            idx, ts = idx[order], ts[order]
        out.append((int(code), mapped.kept(idx), mapped.kept(ts)))
    return out


def _rows_between(tab, r0: float, r1: float) -> list[tuple[Any, Any]]:
    """The rows of an Arrow table with r0 <= t <= r1, in order: (record batch, slice or index array)
    per batch holding some."""
    picks = []
    for batch in tab.to_batches():
        t = arrow_np.to_numpy(batch.column("t"))
        sel = np.flatnonzero((t >= r0) & (t <= r1))
        if sel.size:  # a file in time order keeps one run of each batch: a slice, no index array
            picks.append((batch, slice(sel[0], sel[-1] + 1) if sel[-1] - sel[0] + 1 == sel.size else sel))
    return picks


def _rows(p: slice | np.ndarray) -> int:
    return p.stop - p.start if isinstance(p, slice) else p.size


def _copied(picks: list[tuple[Any, Any]]) -> dict[str, np.ndarray]:
    """One file's picked rows (``_rows_between``) as numpy columns."""
    names = picks[0][0].schema.names if picks else []
    return {n: np.concatenate([arrow_np.to_numpy(b.column(i))[p] for b, p in picks])
            for i, n in enumerate(names)}


def _empty(series: Series) -> Series:
    """``series`` with no samples: arrays of its dtypes, new (a view, however short, would hold the whole)."""
    return dataclasses.replace(series, t_ns=series.t_ns[:0].copy(), seq=series.seq[:0].copy(),
                               values={k: v[:0].copy() for k, v in series.values.items()})


def lazy_batch(root: Path, files: list[dict[str, Any]], dec, lookback_s: float) -> BatchData:
    """The BatchData of a recording whose GPU samples stay in ``root``'s files: host, events and
    requests as columnar.to_batch builds them, the GPUs as meta, their samples read by stretch."""
    from analyzer.columnar import message_keys, to_batch

    # the host's rows stay in the copy's file (read_copy left dec's host table empty): folded from it a
    # row group at a time, unless one repeats a message (then read whole, de-duplicated as the others)
    scan = HostScan(parquet_parts.parts_on_disk(root, f"{M.TEL_HOST}.parquet"), message_keys(dec))
    if not scan.usual:
        dec.tables[M.TEL_HOST].cols = scan.lean()
    memory.give_back()  # (each step below reads every event's columns: their pages, and what it freed, handed back)
    # (dec's tel.gpu table is empty too; the store keeps every source's seqs itself)
    base = to_batch(dec, lookback_s, host_scan=scan if scan.usual else None, seqs=False)
    memory.give_back()
    gpu = dec.tables[M.TEL_GPU]
    store = Store(root, files, gpu.strings, tuple(gpu.series), dec, lookback_s, base, scan)
    memory.give_back()
    if base.host is not None:  # its rows are the stretches' (dec's host table had no readings); kept: meta
        host = _empty(base.host)
        host.meta = {**base.host.meta, "samples": base.host.meta.get("samples", int(base.host.t_ns.size))}
        base = dataclasses.replace(base, host=host, procs={k: _empty(v) for k, v in base.procs.items()},
                                   rapl={k: _empty(v) for k, v in base.rapl.items()})
    store.recording = dec.source  # the fingerprint of the recording the copy is of (columnar.samples_key)
    gpus = store.gpus()
    first, _ = store.first_last()
    events_or_host = bool(dec.events) or bool(dec.requests) or base.host is not None or dec.tables[M.TEL_HB].n > 0
    origin = base.origin_ns if first is None else (min(base.origin_ns, first) if events_or_host else first)
    tel_srcs = sorted({g.src for g in gpus} | ({dec.srcs[c] for c in scan.facts} if scan.usual else _host_srcs(dec, store)))
    base = dataclasses.replace(base, gpus=gpus, origin_ns=origin, src_seqs={},
                               clock_notes=clock.unprobed_notes(tel_srcs, base.clock))
    store.base = base
    return dataclasses.replace(base, source=store)


def _host_srcs(dec, store: Store) -> set[str]:
    c = dec.tables[M.TEL_HOST].cols
    if not c["t"].size:
        return set()
    out = set()
    for code in np.unique(c["src"]).tolist():
        t = c["t"][c["src"] == code]
        _, keep = store._scoped({"src": code}, t)
        if keep.any():
            out.add(store.srcs[code])
    return out
