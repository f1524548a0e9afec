"""The one analysis path: BatchData → per-request rows, per-request JSON, stats and Pareto (pure
except for the optional quality step, which is injected/contained in quality_call)."""
from __future__ import annotations

from array import array
import dataclasses
import functools
import hashlib
import itertools
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from analyzer import clock as CLOCK
from analyzer import columns as COLS
from analyzer import hosts
from analyzer import energy as E
from analyzer import load_curve as LC
from analyzer import mapped, memory
from analyzer import rows as ROWS
from analyzer import shading
from analyzer import slab_pool
from analyzer import slabs as SL
from analyzer import tables
from analyzer.i18n import Msg
from analyzer.places import Places
from analyzer.pooled import InArray, kth
from analyzer.quality_call import QUALITY_COLUMNS, UNSAFE_SANDBOX, quality_inputs, run_quality
from analyzer.stream import (BatchData, Request, Series, answer, request_columns, request_rids, take_requests,
                             take_strings)
from analyzer.throughput import cold_start, iso_utc, throughput, timing, token_latency
from analyzer.windows import split_time
from shared import messages as M
from shared.batch import resume_command
from shared.logs import get_logger
from shared.numbers import FiniteFloats, finite
from shared.tasks import PROXY_TASK, SUITE_TASK, TASKS, closest_task, unknown_tasks

log = get_logger("analyzer.pipeline")

# results.csv's columns, in order (the seed's first), and the per-GPU fields written as gpu<k>_<field>
# when a request used more than one GPU: both from the column registry (analyzer/columns.py).
SEED_COLUMNS = COLS.SEED_COLUMNS
MAIN_COLUMNS = COLS.RESULTS
PER_GPU = COLS.PER_GPU


@dataclass
class Options:
    cpu_tdp_w: float = E.DEFAULT_CPU_TDP_W
    cpu_tdp_w_explicit: bool = True     # False: the batch's recorded cpu_tdp_w (collector settings) wins
    idle_baseline: bool = False
    quality: bool = True
    quality_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = False
    assess: Callable | None = None      # injected scorer (tests); None = analyzer.quality.assess
    metric_percentiles: tuple[float, ...] = tables.DEFAULT_PERCENTILES  # stats.csv pXX columns
    server_gpus: str = "auto"           # which GPUs a request's energy counts (analyzer.hosts; --server-gpus)
    log_skipped_quality: bool = True    # False for the live rows: quality waits for batch.end, said once there
    batch_dir: Path | None = None       # where the batch lies: the PARTIAL note's resume command names it
    goodput: dict[str, float] | None = None  # SLOs in ms (--goodput); None: the collector's --goodput, if any
    slab_s: float = SL.SLAB_S           # seconds of telemetry measured at a time (analyzer.slabs)
    jobs: int | None = 1                # processes measuring slabs (--jobs; analyzer.slab_pool): 1 here, None one a core


@dataclass
class Analysis:
    columns: list[str]
    results: list[dict[str, Any]]        # non-warm-up requests, sorted by (start, rid)
    warmups: list[dict[str, Any]]
    stats: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    request_json: Mapping[str, dict[str, Any]]  # built when read (RequestJson): never all at once
    gpu_samples: "Samples"               # long format, for Parquet: one piece per GPU, built when written
    host_samples: "Samples"
    timelines: list[dict[str, Any]]      # per GPU: key, t_s, power_w, simulated
    windows: Sequence[dict[str, Any]]    # rid, a_s, b_s, label, warmup, first_s (pipeline.Windows)
    simulated: bool
    problems: list[str]
    batch_id: str | None
    batch_end: M.BatchEnd | None = None  # the collector's tally (skipped requests) for the report
    quality_ran: bool = True                  # False with --no-quality: the report says so once
    stats_columns: tuple[str, ...] = tables.STATS_COLUMNS + tables.SPREAD_COLUMNS
    suites: list[dict[str, Any]] = field(default_factory=list)  # per model × suite (tables.suite_board)
    load_curve: list[dict[str, Any]] = field(default_factory=list)  # summary/load_curve.csv (analyzer.load_curve)
    slo: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)  # what the analysis did (not problems), shown apart


def _sum_available(values: list) -> float | None:
    vals = [v for v in (finite(x) for x in values) if v is not None]
    return float(sum(vals)) if vals else None


def _label(row: Mapping[str, Any]) -> str:
    """A request's label in the plots and report.html, from its row (model, task, load, run: its req.start's)."""
    run = row.get("run")
    return f"{row.get('model') or '?'}/{row.get('task') or '?'}/{row.get('load') or '?'}#{'?' if run is None else run}"


def _in_window(t_s: np.ndarray, a_s: float, b_s: float) -> slice:
    """The samples with a_s <= t <= b_s (t_s sorted): a slice, not a mask over the whole run."""
    return slice(int(t_s.searchsorted(a_s, "left")), int(t_s.searchsorted(b_s, "right")))


class Windows(Sequence):
    """The requests' windows for the plots and the report: a dict each (rid, a_s, b_s, label, warmup and
    first_s, where prefill ends and decode begins: None when no first token was seen), made when read
    (a day of requests' dicts are not all held; a report reads them once per GPU). ``rids``, ``warmup``,
    ``rows``: the done requests' rids, warm-up flags and results rows; ``first``: the first token's s
    after a_s, NaN for none."""

    def __init__(self, rids: Sequence[str], warmup: np.ndarray, rows: list[Mapping[str, Any]], win: E.Window,
                 first: np.ndarray):
        self._rids, self._warmup, self._rows, self._win, self._first = rids, warmup, rows, win, first

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        a_s, first = float(self._win.a_s[i]), float(self._first[i])
        return {"rid": self._rids[i], "a_s": a_s, "b_s": float(self._win.b_s[i]), "label": _label(self._rows[i]),
                "warmup": bool(self._warmup[i]), "first_s": None if math.isnan(first) else a_s + first}

    def __len__(self) -> int:
        return len(self._rids)

    def arrays(self) -> shading.WindowArrays:
        """The windows as arrays, no dict made per window (their values as ``self[i]`` gives them); where
        the first token came made a block at a time into a mapped file (analyzer.mapped), as the others are."""
        a_s = np.asarray(self._win.a_s, dtype=np.float64)
        first_s = mapped.empty(a_s.size)
        for lo in range(0, a_s.size, _WINDOW_BLOCK):
            np.add(a_s[lo:lo + _WINDOW_BLOCK], self._first[lo:lo + _WINDOW_BLOCK], out=first_s[lo:lo + _WINDOW_BLOCK])
        return shading.WindowArrays(a_s, np.asarray(self._win.b_s, dtype=np.float64), mapped.written(first_s),
                                    np.asarray(self._warmup, dtype=bool))


_WINDOW_BLOCK = 1 << 16


class Gaps(Mapping):
    """rid → that request's inter-token gaps (ms), worked out again from its chunk times when asked:
    a long answer's are thousands of values (the chunk times are its req.end's, stream.Request)."""

    def __init__(self, place: Mapping[str, int], reqs: list[Request], rows: list[Mapping[str, Any]]):
        self._at, self._reqs, self._rows = place, reqs, rows  # rid → its place in reqs and rows
        self._place: np.ndarray | None = None  # (of_rows': by table row)

    def __getitem__(self, rid: str) -> list[float]:
        p = self._at[rid]
        return _gaps(self._reqs[p], self._rows[p])

    def of_rows(self, rows: Sequence[Mapping[str, Any]]) -> Iterator[list[float]]:
        """Each of ``rows``' gaps (``self.get(row["rid"], [])``), the rows of this analysis found by their
        number in its table, not by rid: a week's rids read back from the table as strings were the
        biggest parts it held."""
        mine = self._rows
        if not (isinstance(rows, ROWS.RowList) and isinstance(mine, ROWS.RowList) and rows.table is mine.table):
            yield from (self.get(r.get("rid"), []) for r in rows)
            return
        if self._place is None:  # each table row's request (-1: none), once for every group
            self._place = mapped.inverse(mine.places, mine.table.n)
        place = self._place
        for k in range(0, len(rows), 1 << 14):
            for p in place[rows.places[k:k + (1 << 14)]].tolist():
                yield _gaps(self._reqs[p], mine[p]) if p >= 0 else []
            mapped.drop()  # the block's events read from their mapped files: not resident for the whole pass

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)

    def __len__(self) -> int:
        return len(self._at)


def _gaps(r: Request, row: Mapping[str, Any], events: tuple | None = None) -> list[float]:
    """The request's inter-token gaps (ms) as its row's itl_ms_mean and itl_ms_max were made from (from the
    row's timing columns, which token_latency reads by name: ``timing`` is not worked out again).
    ``events``: r.events() when the caller has them."""
    if r.end_t is None or r.end_t < r.start_t:  # (no window: _row measured nothing)
        return []
    start, end, _ = events or r.events(keep=False)  # (read once, for stats.csv)
    return token_latency(start, end, row, None)[1]


class RequestJson(Mapping):
    """rid → that request's JSON (raw/<rid>.json), built when asked for: the samples of every window
    are never held at once (a day of requests would hold most of the recording). ``inputs``: what one
    request's JSON derives from beyond the recording, its lookback and the code (``key``)."""

    def __init__(self, build: Callable[[str], dict[str, Any]], rids: Mapping[str, Any] | list[str],
                 inputs: Callable[[str], str] | None = None, stretches: Callable[[str], int | None] | None = None,
                 release: Callable[[], None] | None = None):
        self._build = build
        self._known = rids if isinstance(rids, Mapping) else dict.fromkeys(rids)  # (in order, each once)
        self._inputs = inputs
        self._stretches = stretches
        self._release = release

    def release(self) -> None:
        """The files are written: let go of the telemetry kept to build the next one (a slab's stretch,
        ~60-100 MiB for 8 GPUs) before the reports are made. A later read reads it again."""
        if self._release is not None:
            self._release()

    def stretch(self, rid: str) -> int | None:
        """The slab whose stretch of telemetry ``self[rid]`` reads (Samples.stretches' index; None:
        it reads none), so that a writer can write that stretch's samples while it is held."""
        return None if self._stretches is None else self._stretches(rid)

    def key(self, rid: str) -> str | None:
        """What ``self[rid]`` is built from besides the recording, the lookback and the code (None: not
        known, so it is always built). Two analyses of one recording by one code giving the same key
        give the same JSON (outputs.write_all then leaves a file holding it)."""
        if rid not in self._known:
            raise KeyError(rid)
        return None if self._inputs is None else self._inputs(rid)

    def __getitem__(self, rid: str) -> dict[str, Any]:
        if rid not in self._known:
            raise KeyError(rid)
        return self._build(rid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)


def _clean(v):
    if isinstance(v, (np.floating, float)):
        return finite(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _cleaned(values) -> list:
    """``[_clean(v) for v in values]``, a float array at once (NaN and inf: None), values _clean keeps
    (text, flags, ints, None) without a call each."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return _finite_list(values) if values.dtype.kind == "f" else values.tolist()
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return values if set(map(type, values)) <= _KEPT else [_clean(v) for v in values]


_KEPT = {str, bool, int, type(None)}  # the types _clean returns as they are


class _Cells:
    """Per-window columns (numpy) as the Python values a row holds (_cleaned), a block of windows at a
    time: every window's at once were a float object per request, column and GPU while the rows were
    built (KBs a request with 8 GPUs), and the memory they left behind stayed. ``names``: the columns
    a window gives, in this order (None where there is no such column); default: every column."""

    BLOCK = 512

    def __init__(self, cols: dict[str, np.ndarray], names: tuple[str, ...] | None = None, n: int = 0):
        self._cols, self._lo, self._cells = cols, -1, {}
        self._names, self._n = (tuple(cols) if names is None else names), n

    def at(self, i: int) -> dict[str, Any]:
        """{column: window i's value}. Windows are asked for in order: one block converted at a time."""
        cells, j = self._window(i)
        return {c: v[j] for c, v in cells.items()}

    def _window(self, i: int) -> tuple[Any, int]:
        """(the block that holds window i, i's place in it)."""
        lo = i - i % self.BLOCK
        if lo != self._lo:
            self._lo = lo
            self._cells = self._block(lo, lo + self.BLOCK)
        return self._cells, i - lo

    def _block(self, lo: int, hi: int) -> Any:
        cols, missing = self._cols, [None] * (min(hi, self._n) - lo)
        return {c: _cleaned(cols[c][lo:hi]) if c in cols else missing for c in self._names}


class _GpuCells(_Cells):
    """A window's GPU columns from every counted GPU's per-window columns, a block of windows at a
    time: each GPU column by its registered rule (sum, mean, max, …) and the GPUs' counter refresh
    (``head``), then with several GPUs each GPU's own as <gpu>_<field> (``tail``)."""

    def __init__(self, per_gpu: dict[str, dict[str, np.ndarray]]):
        super().__init__({})
        self._per_gpu = per_gpu

    def at(self, i: int) -> tuple[dict[str, Any], dict[str, Any]]:  # type: ignore[override]
        (head, head_rows, tail, tail_rows), j = self._window(i)
        return dict(zip(head, head_rows[j])), dict(zip(tail, tail_rows[j]))

    def _block(self, lo: int, hi: int) -> Any:
        each = {k: {c: _cleaned(v[lo:hi]) for c, v in cols.items()} for k, cols in self._per_gpu.items()}
        g = list(each.values())
        head = {}
        for col in COLS.GPU_COMBINED:
            field_, rule = col.gpu
            head[col.name] = [COLS.combine(rule, list(vals)) for vals in zip(*[x[field_] for x in g])]
        # (after gpu_energy_uncertainty_pct, which _row adds from the head's figures)
        tail = {"gpu_counter_refresh_ms": [1000.0 * max(got) if (got := [v for v in vals if v is not None]) else None
                                           for vals in zip(*[x["counter_refresh_s"] for x in g])]}
        if len(each) > 1:
            for k, x in each.items():
                name = k.replace("/", "_").replace("@", "_")
                for c in PER_GPU:
                    tail[f"{name}_{c}"] = x[c]
        # each window's values side by side (a row's dicts made by zip: a dict of ~100 columns a window)
        return tuple(head), list(zip(*head.values())), tuple(tail), list(zip(*tail.values()))


class _SlabRows:
    """Every request's results row (``finish()``: in ``reqs`` order), a slab's requests' made as soon as
    its per-window columns come (``add``), so the whole run's columns are never held beside the rows (a
    day of 8 GPUs: ~75 MiB). ``make(r, i, at, gpu, host)``: request r's row as a dict (i: its window,
    None for none; at: the window's place in the cells). A request without a window is made in its turn
    among the others: the slabs own windows by start time, so the table's rows keep ``reqs`` order and
    ROWS.iter_columns reads runs of them as slices (any order gives the same values)."""

    def __init__(self, reqs: Sequence[Request], window_of: np.ndarray, slab_of: np.ndarray, slabs: int,
                 counted: list[str], make: Callable[[Request, int | None, int | None, _GpuCells | None, _Cells | None],
                                                    dict]):
        self._reqs, self._counted, self._make = reqs, counted, make
        self._layouts = ROWS.Layouts()  # rows as compact mappings: a dict of ~200 columns a request is several KB
        self._num = mapped.full(len(reqs), -1, dtype=np.int64)  # each request's row number in the table
        self._win = window_of  # each request's window (-1: none)
        at = np.full(len(reqs), -1, dtype=np.int64)  # each request's slab (slab_of: each window's)
        at[self._win >= 0] = slab_of[self._win[self._win >= 0]]
        self._order = mapped.kept(np.argsort(at, kind="stable"))  # the requests by slab (first those without a window)
        self._bounds = np.searchsorted(at[self._order], np.arange(-1, slabs + 1))
        self._undone, self._u = self._order[:self._bounds[1]].tolist(), 0
        self._procs: list[tuple[str, ...]] = []  # per slab: the proc columns its rows were made with
        self.idle_found: set[str] = set()  # the GPUs with an idle power in some window

    def add(self, s: SL.Slab, cols: dict[tuple, np.ndarray]) -> None:
        """The rows of slab ``s``'s requests from its columns ({(GPU key or None for the host, column):
        values of ``s.rows``}), the next slab's."""
        k = len(self._procs)
        per_gpu: dict[str, dict[str, np.ndarray]] = {g: {} for g in self._counted}
        host: dict[str, np.ndarray] = {}
        for (g, c), v in cols.items():
            (host if g is None else per_gpu[g])[c] = v
        self.idle_found.update(g for g, c in per_gpu.items() if np.isfinite(c["idle_w"]).any())
        # a row has the proc columns of the whole run (None where its slab saw no such process): those met so far
        procs = tuple(sorted({*(self._procs[-1] if self._procs else ()), *(c for c in host if c.startswith("proc_"))}))
        self._procs.append(procs)
        gpu = _GpuCells(per_gpu) if per_gpu else None
        cells = _Cells(host, HOST_COLUMNS + procs, s.rows.size)
        mine = self._order[self._bounds[k + 1]:self._bounds[k + 2]]
        for p, at in zip(mine.tolist(), np.searchsorted(s.rows, self._win[mine]).tolist()):
            self._undone_before(p)
            self._num[p] = self._layouts.row(self._make(self._reqs[p], int(self._win[p]), at, gpu, cells))._i

    def _undone_before(self, p: float) -> None:
        """The rows of the requests without a window before the p-th."""
        undone, u = self._undone, self._u
        while u < len(undone) and undone[u] < p:
            self._num[undone[u]] = self._layouts.row(self._make(self._reqs[undone[u]], None, None, None, None))._i
            u += 1
        self._u = u

    def finish(self) -> ROWS.RowList:
        """Every request's row, in ``reqs`` order (a Row made when read)."""
        self._undone_before(math.inf)
        every = self._procs[-1] if self._procs else ()
        rows = ROWS.RowList(self._layouts.table, self._num)
        for k, procs in enumerate(self._procs):
            if procs != every:  # a process first seen in a later slab: these rows get its columns too
                for p in self._order[self._bounds[k + 1]:self._bounds[k + 2]].tolist():
                    self._num[p] = self._layouts.row(_with_procs(rows[p], every))._i
        return rows


def _with_procs(row: Mapping[str, Any], procs: tuple[str, ...]) -> dict[str, Any]:
    """``row`` with the proc columns ``procs`` (sorted) after its host columns, as a row made with
    them has them (None where it has none)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if not k.startswith("proc_"):
            out[k] = v
            if k == HOST_COLUMNS[-1]:
                out.update((c, row.get(c)) for c in procs)
    return out


def batch_setting(batch: BatchData, key: str) -> dict[str, Any] | None:
    """One setting as the collector recorded it in batch.start's config ({"value", "source", ...})."""
    config = batch.batch_start.config if batch.batch_start else None
    entry = ((config or {}).get("settings") or {}).get(key) if isinstance(config, dict) else None
    return entry if isinstance(entry, dict) else None


def _cpu_tdp(batch: BatchData, opts: Options) -> tuple[Options, list[str]]:
    """The CPU TDP the approximation uses: --cpu-tdp-w, else the batch's recorded CPU_TDP_W, else env/65."""
    recorded = batch_setting(batch, "cpu_tdp_w")
    value = finite((recorded or {}).get("value"), text=False)
    if opts.cpu_tdp_w_explicit or value is None or value <= 0:
        return opts, []
    how = str(recorded.get("source") or "?") + (f":{recorded['line']}" if recorded.get("line") else "")
    opts = dataclasses.replace(opts, cpu_tdp_w=float(value))
    return opts, [Msg("n_cpu_tdp", w=f"{value:g}", source=Msg("src_batch", how=how))]


def fallback_problems(batch: BatchData) -> list[str]:
    """The collector's --use-default-on-error replaced a bad file: the batch measured other cases or
    settings than the person wrote, which the report must say first."""
    config = batch.batch_start.config if batch.batch_start else None
    files = (((config or {}).get("fallback") or {}).get("files") or {}) if isinstance(config, dict) else {}
    out = []
    for path, why in files.items() if isinstance(files, dict) else ():
        reason, _, instead = str(why).rpartition(" -> ")
        out.append(Msg("p_fallback", file=str(path), why=reason or str(why),
                       instead=Msg("fb_builtin" if str(path).endswith(".json") else "fb_defaults")))
    return out


def analyze(batch: BatchData, opts: Options | None = None, recording_problem: str | None = None) -> Analysis:
    opts = opts or Options()
    opts, notes = _cpu_tdp(batch, opts)
    problems = [Msg("p_recording", what=recording_problem)] if recording_problem else []
    # several GPU hosts on the bus: count the server's GPUs; the samples of every GPU are still written
    all_gpus = batch.gpus
    counted, gpu_notes = hosts.select(batch.gpus, opts.server_gpus, batch.batch_start)
    batch = dataclasses.replace(batch, gpus=counted)
    for line in gpu_notes:  # which GPUs count is a note; a spec that matched nothing is a problem
        (notes if getattr(line, "key", "").startswith("n_") else problems).append(line)
    origin = batch.origin_ns
    reqs = batch.requests  # (a day's are columns, stream.StoredRequests: read as arrays where a pass needs no more)
    rc = request_columns(reqs)
    rids = request_rids(reqs)
    mapped.drop()  # (the pages each pass over the requests reads are handed back before the next one's)
    ended = rc["has_end"]
    # (the run's per-request arrays in mapped files: analyzer.mapped) the requests with a window, by window
    done_at = mapped.kept(np.flatnonzero(ended & (rc["end_t"] >= rc["start_t"])))
    for p in np.flatnonzero(ended & (rc["end_t"] < rc["start_t"])).tolist():
        problems.append(Msg("p_end_before_start", rid=rids[p]))
    warm = rc["warmup"]
    measured_at = mapped.kept(np.flatnonzero(~warm))  # the requests measured (not warm-ups), by place
    done = take_requests(reqs, done_at)
    win = E.Window(*(mapped.kept((rc[k][done_at] - origin) / 1e9) for k in ("start_t", "end_t")))
    memory.give_back()  # the request columns' pages read so far, handed back before the windows' split
    # each window's share of the time it ran and the most requests beside it (a block of windows at a time)
    shared_s, most_active = split_time(win.a_s, win.b_s, mapped.empty, mapped.drop)
    idle_until = (int(rc["start_t"].min()) - origin) / 1e9 if (opts.idle_baseline and len(reqs)) else None
    mid = _FirstChunks(done, origin)
    window_of = mapped.inverse(done_at, len(reqs))  # each request's window (-1: none)
    # the telemetry of every GPU (counted or not: all are written), read a slab of time at a time
    source = SL.source_of(dataclasses.replace(batch, gpus=all_gpus))
    slabs = SL.plan(win.a_s, win.b_s, source.span_s(), opts.slab_s)
    slab_of = mapped.full(len(done), -1, dtype=np.int64)  # each window's slab
    for k, s in enumerate(slabs):
        slab_of[s.rows] = k
    loaded, slo = _load_info(batch, opts)
    # the load levels' windows (the requests' own fields say which level each ran in) are measured with the slabs
    spans = {rids[p]: (float(win.a_s[i]), float(win.b_s[i])) for i, p in enumerate(done_at.tolist())
             if not warm[p]} if (loaded or slo) else {}
    levels = _LevelPieces.of(reqs, spans, slabs) if (loaded or slo) else None
    simulated = any(g.simulated for g in batch.gpus)
    fixed = _batch_columns(batch, opts, simulated)

    def make(r: Request, i: int | None, at: int | None, gpu: _GpuCells | None, host: _Cells | None) -> dict:
        d = _row(r, at, gpu, host, batch, opts, fixed)
        if i is not None:
            d["effective_window_s"] = float(shared_s[i])
            d["concurrency_max"] = int(most_active[i])
        return d

    # every request's row built with its slab (then the slab's columns go: the run's are never all held)
    built = _SlabRows(reqs, window_of, slab_of, len(slabs), [g.key for g in batch.gpus], make)
    timelines, level_j = _measure(batch, source, slabs, win, mid, idle_until, opts, levels, built.add)
    rows = built.finish()
    if opts.idle_baseline and batch.gpus and not built.idle_found >= {g.key for g in batch.gpus}:
        problems.append(Msg("p_no_idle_samples"))
    del built
    cases = batch.batch_start.cases if batch.batch_start else None
    # Quality: finished, successful, measured requests only. A proxy batch's task names are the user's
    # labels (X-GenAI-Power-Task), not task types: scored as proxy requests, never "not a known task".
    proxied = bool(batch.batch_start and batch.batch_start.backend == "proxy")
    to_score = rc["ok"] & ~rc["warmup"]  # (by place, not a set of rids: ~35 bytes a request)
    quality: dict[str, dict] = {}
    quality_problem = None
    if opts.quality and to_score.any():  # (their places listed only to score: held to the end, 8 bytes a request)
        q_reqs = [{"rid": r.rid, "task": PROXY_TASK if proxied else r.start.task,
                   **dict(zip(("text", "thinking"), answer(r))), "prompt": r.start.prompt, "case": r.start.case}
                  for r in map(reqs.__getitem__, np.flatnonzero(to_score).tolist())]
        quality, quality_problem = run_quality(quality_inputs(q_reqs, cases), opts.quality_options, opts.progress,
                                               opts.assess)
        if quality_problem:
            problems.append(quality_problem)
    elif not opts.quality:
        if opts.log_skipped_quality:
            log.info("quality_skipped", reason="--no-quality")
        notes.append(Msg("n_no_quality"))
    if opts.quality and opts.quality_options.get("enable_bart") is False:
        notes.append(Msg("n_no_bart"))
    ROWS.fill(rows, MAIN_COLUMNS)
    for p, row in enumerate(rows):
        q = quality.get(rids[p], {}) if quality else {}  # (the rid column not read back: ~80 B a row held)
        # the row's quality columns in one dict, set in one update (in this order, as one by one)
        cells = {col: _clean(q.get(col)) for col in QUALITY_COLUMNS} if q else dict.fromkeys(QUALITY_COLUMNS)
        for col in sorted(set(q) - set(QUALITY_COLUMNS) - {"bartscore", "quality_error"}):
            cells[f"q_{col}"] = _clean(q.get(col))
        cells["bartscore"] = _clean(q.get("bartscore"))
        qs, te = finite(cells["quality_score"]), finite(row["total_energy_j"])
        cells["quality_per_j"] = qs / te if (qs is not None and te) else None
        cells["j_per_quality"] = te / qs if (qs and te is not None) else None
        # the readable unit (quality points per kJ); quality_per_j stays for existing readers
        cells["quality_per_kj"] = 1000.0 * cells["quality_per_j"] if cells["quality_per_j"] is not None else None
        cells["quality_error"] = q.get("quality_error")
        if not q and opts.quality and row["status"] == "ok" and to_score[p]:
            cells["quality_error"] = quality_problem or "quality not computed for this request"
        row.update(cells)
    curve: list[dict[str, Any]] = []
    curve_problems: list[str] = []
    if loaded or slo:
        for r, row in zip(reqs, rows):
            _load_columns(r, row, slo)
        par = ((batch.batch_start.load or {}) if batch.batch_start else {}).get("server_parallel")
        measured = rows.take(measured_at)
        level_energy = functools.partial(_LevelPieces.measured, levels, level_j)
        curve, curve_problems = LC.curve(measured, spans, level_energy, slo, simulated,
                                         par if isinstance(par, int) else None)
        LC.annotate(measured, curve)
        for row, a_s, b_s in zip(curve, *LC.level_windows(LC.groups(measured, spans), spans)):
            row["gpu_power_limit_w"] = _power_limits(batch, float(a_s), float(b_s))
            row["gpu_driver"] = _joined(g.meta.get("driver") for g in batch.gpus)
        if curve and curve[0].get("gpu_energy_j") is not None:
            notes.append(Msg("n_level_window"))  # how the figures were made: a note, not a problem
    extra = sorted(ROWS.keys_of(rows) - set(MAIN_COLUMNS))
    columns = list(MAIN_COLUMNS) + extra
    ROWS.fill(rows, columns)
    results = rows.take(measured_at)  # (row numbers, not a Row object a request)
    warmups = rows.take(np.flatnonzero(warm))
    problems[:0] = fallback_problems(batch) + batch_problems(batch, results, opts.batch_dir)
    notes.extend(m.describe() for m in batch.clock.values())
    problems.extend(batch.clock_notes)
    outliers = mark_outliers(results)
    memory.give_back()  # (each pass over the rows after the slabs leaves what it freed, and the index's pages read)
    if outliers:
        problems.append(Msg("p_outliers", n=len(outliers), k=f"{OUTLIER_FACTOR:g}",
                            which=", ".join(f"{r['rid']} ({r['latency_vs_twins']:.0f}×)" for r in outliers[:10])
                            + (" …" if len(outliers) > 10 else "")))
    short = [row["rid"] for row in results if row.get("clock_short_window")]
    if short:
        problems.append(Msg("p_clock_short", n=len(short), k=f"{CLOCK.SHORT_WINDOW_FACTOR:g}",
                            which=", ".join(short[:10])))
    unseen = [row["rid"] for row in results if row.get("cpu_server_basis") == "server_not_seen"]
    if unseen:
        problems.append(Msg("p_server_not_seen", n=len(unseen), which=", ".join(unseen[:10])))
    if not (batch.batch_start and batch.batch_start.backend == "proxy"):  # the proxy's tasks are the user's labels
        for name in unknown_tasks(sorted({str(row["task"]) for row in results if row.get("task")})):
            close = closest_task(name)
            problems.append(Msg("p_unknown_task", task=repr(name), known=", ".join(TASKS), suite=SUITE_TASK,
                                proxy=PROXY_TASK, hint=Msg("p_did_you_mean", name=repr(close)) if close else ""))
    skipped = [row for row in results if row.get("code_tests_skipped")]
    if skipped:  # once per batch, not per row: the reason is the machine's, not the request's
        on_suite = sum(1 for row in skipped if row.get("suite"))
        problems.append(Msg("p_code_tests_skipped", n=len(skipped), why=skipped[0]["code_tests_skipped"],
                            suite=Msg("p_suite_no_score", n=on_suite) if on_suite else ""))
    unsafe = sum(1 for row in results if row.get("code_tests_sandbox") == UNSAFE_SANDBOX)
    if unsafe:
        problems.append(Msg("p_unsafe_code_tests", n=unsafe))
    busy = [row["rid"] for row in results if (finite(row.get("host_cpu_other_pct")) or 0.0) > E.CONTENTION_OTHER_PCT]
    if busy:
        problems.append(Msg("p_cpu_contention", n=len(busy), pct=f"{E.CONTENTION_OTHER_PCT:g}",
                            which=", ".join(busy[:10])))
    incomplete = [row["rid"] for row in rows if row["status"] == "incomplete"]
    if incomplete:
        problems.append(Msg("p_incomplete_requests", n=len(incomplete), which=", ".join(incomplete[:10])))
    place = Places(rids)  # (one lookup by rid for what follows: arrays, not a dict entry and an int a request)
    mapped.drop()
    counted_keys = {g.key for g in batch.gpus}

    def window(rid: str) -> int | None:
        i = int(window_of[place[rid]])
        return None if i < 0 else i

    def stretch_of(rid: str) -> int | None:
        i = window(rid) if rid in place else None
        return None if i is None or slab_of[i] < 0 else int(slab_of[i])

    held: list = [None, None]  # [slab, its _Stretch]: the requests of a slab are written in a row

    def one_json(rid: str) -> dict[str, Any]:
        r, row = reqs[place[rid]], rows[place[rid]]
        i = window(rid)
        if i is None:
            tele = _Stretch(batch)
        else:  # the window's telemetry (a second either side; the JSON keeps [a, b])
            k = stretch_of(rid)
            if k is None:
                tele = _Stretch(source.between(float(win.a_s[i]) - 1.0, float(win.b_s[i]) + 1.0), counted_keys)
            elif held[0] == k:
                tele = held[1]
            else:
                # read as its slab's stretch (it holds the window and the margin): the samples of that
                # slab are written from the same read (outputs.write_all); the last slab's let go first
                held[:] = [None, None]
                tele = _Stretch(source.between(slabs[k].lo_s, slabs[k].hi_s), counted_keys)
                held[:] = [k, tele]
        events = r.events(keep=False)  # (each request's JSON built once)
        obj = _request_json(r, events, row, i, win, tele, quality.get(rid), simulated)
        obj["itl_ms"] = _gaps(r, row, events) or None
        return obj

    sample_stretch: dict[tuple[float, float], BatchData] = {}  # (_samples': the last slab's own stretch)

    def let_go() -> None:  # the request files and sample tables written: no stretch is read again
        held[:] = [None, None]
        sample_stretch.clear()
        source.release()

    request_json = RequestJson(one_json, place, functools.partial(_request_inputs, _options_text(opts), quality),
                               stretch_of, let_go)
    gpu_samples, host_samples = _samples(dataclasses.replace(batch, gpus=all_gpus), source, slabs, sample_stretch)
    done_rows = rows.take(done_at)
    first = mapped.kept(next(ROWS.iter_floats(done_rows, ["first_token_s"])))
    windows = Windows(take_strings(rids, done_at), mapped.kept(rc["warmup"][done_at]), done_rows, win, first)
    problems.extend(tables.basis_problems(results))
    batch_id = (batch.batch_start or batch.batch_end).batch if (batch.batch_start or batch.batch_end) else None
    pct = tuple(opts.metric_percentiles)
    problems.extend(curve_problems)
    leveled = any(row.get("sweep_level") is not None for row in results)
    memory.give_back()
    stats = tables.stats(results, simulated, pct, {"itl_ms": Gaps(place, reqs, rows)})
    return Analysis(columns, results, warmups, stats,
                    tables.pareto(results, simulated),
                    request_json, gpu_samples, host_samples, timelines, windows, simulated, problems,
                    str(batch_id) if batch_id is not None else None, batch.batch_end, opts.quality,
                    tables.stats_columns(pct, leveled), tables.suite_board(stats), curve, slo, notes=notes)


OUTLIER_FACTOR = 3.0  # latency above this many times the lower median of the case's other runs


def mark_outliers(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-request latency outliers, against the same model's other successful runs of the same case:
    ``latency_vs_twins`` = latency_s / the lower median of the others' (the lower median, so that two
    slow runs out of three still stand out against the fast one), ``latency_outlier`` when above
    OUTLIER_FACTOR. Rows without another run get neither. Returns the outliers."""
    def key(status, latency_s, *twins):
        lat = finite(latency_s, text=False)
        # a sweep's levels are different loads: a run is compared with its own level's twins only
        return twins if status == "ok" and lat is not None and lat > 0 else None
    groups = ROWS.group_by(results, ["status", "latency_s", "model", "case", "task", "load", "sweep_level"], key)
    out = []
    for rows in groups.values():
        if len(rows) < 2:
            continue
        lat = next(ROWS.iter_floats(rows, ["latency_s"]))  # (as doubles: a week's group is no Python float a row)
        mid = (len(rows) - 2) // 2  # the lower median's place among the others
        # the group's sorted values there: a long group's found by rank (pooled.kth), not a sorted copy
        if lat.size > _OUTLIER_BLOCK:
            low, high = (kth(InArray(lat), k, _OUTLIER_BLOCK) for k in (mid, mid + 1))
        else:
            sorted_there = lat.copy()
            sorted_there.partition((mid, mid + 1))
            low, high = float(sorted_there[mid]), float(sorted_there[mid + 1])
            del sorted_there
        for lo in range(0, lat.size, _OUTLIER_BLOCK):  # (a block at a time: no group-long temporaries)
            # the others, sorted, are the group's less one copy of a row's value: a row above the value at
            # ``mid`` leaves it in place, any other row moves the one after it there
            mine = lat[lo:lo + _OUTLIER_BLOCK]
            part = mine / np.where(mine > low, low, high)
            for r, vs, outlier in zip(rows[lo:lo + _OUTLIER_BLOCK], part.tolist(), (part > OUTLIER_FACTOR).tolist()):
                r["latency_vs_twins"] = vs
                r["latency_outlier"] = outlier
                if outlier:
                    out.append(r)
    return out


_OUTLIER_BLOCK = 1 << 14


def _load_info(batch: BatchData, opts: Options) -> tuple[bool, dict[str, float] | None]:
    """(whether the batch ran load levels or open-loop arrivals, the SLOs for goodput). The SLOs are
    the analyzer's --goodput, else the collector's (saved in batch.start's config)."""
    bs = batch.batch_start
    load = (bs.load or {}) if bs is not None else {}
    loaded = bool(load.get("swept")) or any(lv.get("kind") == "rate" for lv in load.get("levels") or []
                                            if isinstance(lv, dict))
    slo = opts.goodput
    if slo is None and bs is not None:
        saved = (((bs.config or {}).get("settings") or {}).get("goodput") or {}).get("value")
        slo = saved if isinstance(saved, dict) and saved else None
    return loaded, slo


def _load_columns(r: Request, row: dict[str, Any], slo: dict[str, float] | None) -> None:
    """The request's load level and open-loop start (req.start), and whether it met the SLOs."""
    s = r.start
    row["sweep"], row["sweep_level"] = s.sweep, s.sweep_level
    row["start_lag_ms"], row["start_blocked"] = s.start_lag_ms, s.start_blocked
    row["start_late"] = (bool(s.start_blocked) or s.start_lag_ms > 10.0) if s.start_lag_ms is not None else None
    if slo:
        row["slo_ok"] = LC.meets_slo(row, slo) if row.get("status") != "incomplete" else False


def _power_limits(batch: BatchData, a_s: float, b_s: float) -> str | None:
    """The GPUs' enforced power limits in effect during [a_s, b_s] (W, comma-joined; None: not reported)."""
    seen = set()
    for g in batch.gpus:
        changes = g.meta.get("power_limit_changes") or []
        for i, (t_ns, w) in enumerate(changes):
            start = (t_ns - batch.origin_ns) / 1e9
            end = (changes[i + 1][0] - batch.origin_ns) / 1e9 if i + 1 < len(changes) else float("inf")
            if start <= b_s and end >= a_s:
                seen.add(w)
    return ",".join(f"{w:g}" for w in sorted(seen)) or None


class _LevelPieces:
    """The load levels' windows [a, b] (a level may last hours) cut where the slabs meet, each slab's
    pieces measured with that slab (the same read of its telemetry) and added up per window: GPU energy
    (every counted GPU summed) and CPU (RAPL, else TDP)."""

    def __init__(self, a: np.ndarray, b: np.ndarray, slabs: list[SL.Slab]):
        self.a, self.b = a, b
        self.whole = len(slabs) == 1
        if self.whole:
            self.tasks: list[tuple | None] = [(-SL.INF, SL.INF, a, b)]
            return
        owner, pa, pb, which = SL.pieces(a, b, slabs)
        self.tasks, self._owner = [], []
        for j in range(len(slabs)):
            sel = which == j
            self._owner.append(owner[sel])
            if not sel.any():
                self.tasks.append(None)
                continue
            # a piece's telemetry: the piece and the margin (within its slab's stretch)
            self.tasks.append((float(pa[sel].min()) - SL.MARGIN_S, float(pb[sel].max()) + SL.MARGIN_S,
                               pa[sel], pb[sel]))

    @classmethod
    def of(cls, reqs: list[Request], spans: dict[str, tuple[float, float]],
           slabs: list[SL.Slab]) -> _LevelPieces | None:
        """The levels as load_curve groups the results' rows (model and level are the request's own)."""
        keys = [{"rid": r.rid, "model": r.start.model, "sweep_level": r.start.sweep_level}
                for r in reqs if not r.warmup]
        grouped = LC.groups(keys, spans)
        return cls(*LC.level_windows(grouped, spans), slabs) if grouped else None

    def total(self, parts: list[dict[str, np.ndarray] | None]) -> dict[str, np.ndarray]:
        """The windows' energies from the slabs' parts (slab_pool.energy_parts, in slab order)."""
        if self.whole:
            got = parts[0]
        else:
            got = {}
            for owner, part in zip(self._owner, parts):
                for k, v in (part or {}).items():
                    np.add.at(got.setdefault(k, np.zeros(self.a.size)), owner, v)
        out = {k: got[k] for k in ("gpu_j", "gpu_unc_j") if k in got}
        rapl, approx = got.get("rapl"), got.get("approx")
        if rapl is not None and np.isfinite(rapl).all():
            out["cpu_j"] = rapl
        elif approx is not None and np.isfinite(approx).all():
            out["cpu_j"] = approx
        return out

    def measured(self, got: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        """load_curve's level_energy(a, b): the windows measured with the slabs (``got``), the same ones."""
        if not (np.array_equal(a, self.a) and np.array_equal(b, self.b)):
            raise RuntimeError("the load levels' windows are not those measured with the slabs")
        return got


def _measure(batch: BatchData, source: SL.Source, slabs: list[SL.Slab], win: E.Window, mid: _FirstChunks | np.ndarray,
             idle_until: float | None, opts: Options, levels: _LevelPieces | None = None,
             take: Callable[[SL.Slab, dict[tuple, np.ndarray]], None] | None = None
             ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray] | None]:
    """Per window, every counted GPU's columns and the host's, slab by slab (with --jobs N, by N processes:
    analyzer.slab_pool), each slab's handed to ``take`` as it comes, in slab order ({(GPU key or None for
    the host, column): values of the slab's windows, ``s.rows``}) and let go; returns each counted GPU's
    power timeline (a slab's own stretch at a time: whole on one slab, its min/max envelope on more) and
    the load levels' energies (``levels``; else None), their pieces measured from the same read of each slab."""
    origin = batch.origin_ns
    counted = [g.key for g in batch.gpus]
    idle: dict[str, float | None] = {k: None for k in counted}
    if len(slabs) > 1 and idle_until is not None:
        # the idle power: the samples of the last slab's length before the first request
        before = source.between(idle_until - opts.slab_s, idle_until).gpus
        idle.update({g.key: E.idle_power_w(g, origin, idle_until) for g in before if g.key in idle})
        del before
    power: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in counted}
    level_parts: list[dict[str, np.ndarray] | None] = []
    overlaps = SL.Overlaps(win.a_s, win.b_s)
    tasks = (_slab_task(s, counted, win, overlaps, mid, idle_until, idle, opts, levels.tasks[j] if levels else None)
             for j, s in enumerate(slabs))
    memory.give_back()  # what reading the copy and indexing the requests freed, before the slabs' working set
    with slab_pool.runner(source, slab_pool.jobs(opts.jobs, source, slabs)) as run:
        # one slab's telemetry at a time: each read goes when its slab is measured
        for s, (cols, shapes, level) in zip(slabs, run(slab_pool.measure_slab, tasks)):
            if take is not None:
                take(s, cols)
            level_parts.append(level)
            for key, piece in shapes.items():
                power[key].append(piece)
            del cols, shapes, level  # gone before the next slab is measured
            memory.give_back()  # the slab's samples, freed
    source.release()  # (the last slab's stretch: the request files read theirs from the first slab on)
    memory.give_back()
    timelines = [{"key": g.key, "t_s": np.concatenate([t for t, _ in power[g.key]]),
                  "power_w": np.concatenate([p for _, p in power[g.key]]),
                  "simulated": g.simulated, "name": g.meta.get("name"),
                  "gpu_id": f"{M.src_host(g.src) or '?'} / {g.meta.get('uuid') or g.key}"} for g in batch.gpus]
    return timelines, levels.total(level_parts) if levels else None


def _slab_task(s: SL.Slab, counted: list[str], win: E.Window, overlaps: SL.Overlaps, mid: _FirstChunks | np.ndarray,
               idle_until: float | None, idle: dict[str, float | None], opts: Options,
               level: tuple | None) -> slab_pool.Task:
    """What slab_pool.measure_slab needs of slab ``s``: its windows and every window overlapping them
    (concurrent requests share energy; ``overlaps``: of ``win``), not the whole run's; ``level``: its
    pieces of the load levels."""
    ctx = overlaps.context(s.rows)
    return s.lo_s, s.hi_s, (s, counted, E.Window(win.a_s[ctx], win.b_s[ctx]), mid[ctx], np.searchsorted(ctx, s.rows),
                            idle_until, idle, opts.cpu_tdp_w, level)


class _FirstChunks:
    """Each window's prefill/decode boundary (``_first_chunk_s``) by window index, ``mid[indices]``, worked
    out when a slab first asks: its requests' events are then read for the slab's measure and, still
    among the last read (stream.EventFile), for its rows; not in a pass of its own over every request."""

    def __init__(self, done: list[Request], origin: int):
        self._done, self._origin = done, origin
        self._s, self._known = mapped.full(len(done), np.nan), mapped.full(len(done), False, dtype=bool)

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        todo = idx[~self._known[idx]]
        for i in todo.tolist():
            self._s[i] = _first_chunk_s(self._done[i], self._origin)
        self._known[todo] = True
        return self._s[idx]


def _first_chunk_s(r: Request, origin: int) -> float:
    """The prefill/decode boundary, s from the origin: the first streamed chunk (else the first
    token of any kind); NaN when nothing was streamed."""
    tm = timing(r.start, r.end, r.first_tokens)
    firsts = [v for v in (tm.get("first_chunk_s"), tm.get("first_token_s"), tm.get("first_thinking_s"))
              if v is not None]
    return (r.start_t - origin) / 1e9 + min(firsts) if firsts else float("nan")


def _clock_columns(batch: BatchData) -> dict[str, Any]:
    """How the telemetry's clocks were mapped into the collector's (analyzer.clock), worst source first."""
    srcs = {g.src for g in batch.gpus} | ({batch.host.src} if batch.host is not None else set())
    maps = [batch.clock[s] for s in sorted(srcs) if s in batch.clock]
    return {"clock_mapping": _joined(m.method for m in maps),
            "clock_uncertainty_ms": max(m.uncertainty_ms for m in maps) if maps else None,
            "clock_short_window": None}


def _joined(values) -> str | None:
    """Distinct non-empty values, sorted and comma-joined (None when there are none)."""
    return ",".join(sorted({str(v) for v in values if v})) or None


def _suite_of(case: int | None, batch: BatchData) -> dict[str, Any]:
    """suite and item_id of a benchmark suite's item (empty for other cases)."""
    cases = batch.batch_start.cases if batch.batch_start else None
    c = cases[case] if cases and isinstance(case, int) and 0 <= case < len(cases) and isinstance(cases[case], dict) \
        else {}
    return {"suite": c.get("suite"), "item_id": c.get("item_id")}


def _batch_columns(batch: BatchData, opts: Options, simulated: bool) -> dict[str, Any]:
    """The row's columns that are the batch's (the same on every row): its GPUs, CPU TDP and clocks."""
    return {
        "gpu_count": len(batch.gpus), "gpu_simulated": simulated if batch.gpus else None,
        "gpu_power_kind": ",".join(sorted({k for g in batch.gpus for k in g.meta.get("power_kind", [])})) or None,
        "cpu_tdp_w": opts.cpu_tdp_w,
        # which GPUs (host from the telemetry publisher id, product name, uuid): compare never pools across them
        "gpu_hosts": _joined(M.src_host(g.src) for g in batch.gpus),
        "gpu_names": _joined(g.meta.get("name") for g in batch.gpus),
        "gpu_uuids": _joined(g.meta.get("uuid") for g in batch.gpus),
        **_clock_columns(batch),
    }


# the host's columns of a row, in this order (then any proc_* columns, sorted)
HOST_COLUMNS = ("cpu_util_avg", "cpu_energy_j_approx", "cpu_energy_j_rapl", "cpu_coverage", "host_mem_peak_mib",
                "cpu_energy_j_server", "cpu_server_basis", "cpu_server_share", "server_cpu_s", "host_cpu_other_pct")


def _row(r: Request, i: int | None, gpu: _GpuCells | None, host: _Cells, batch: BatchData, opts: Options,
         fixed: dict[str, Any]) -> dict:
    s, e = r.start, r.end
    row: dict[str, Any] = {
        "timestamp": iso_utc(s.wall), "model": s.model, "task": s.task, "load": s.load,
        "run": s.run, "rid": r.rid, "case": s.case, "cold": cold_start(e),
        # what makes runs comparable: the same case content and the same max tokens asked
        "case_hash": s.case_hash, "max_tokens": (s.params or {}).get("max_tokens"), "seed": (s.params or {}).get("seed"),
        **_suite_of(s.case, batch), **fixed,
    }
    if e is None or i is None:
        why = ("incomplete: req.start without req.end (batch cut short?)" if e is None
               else "incomplete: req.end is stamped before req.start (clock problem)")
        row.update(status="incomplete", ok=False, error=why)
        e = None  # no window, no figures
    else:
        row.update(status="ok" if e.ok else "failed", ok=e.ok, error=e.error, error_kind=e.error_kind)
    tm = timing(s, e, r.first_tokens) if e is not None else {}
    row.update(tm)
    if e is not None:
        row.update(throughput(e, tm.get("latency_s"), tm.get("first_token_s"), tm.get("first_chunk_s")))
        row["served_model"] = e.served_model
        row["prompt_cache"] = (s.params or {}).get("cache_prompt")
        lat, _ = token_latency(s, e, tm, row.get("output_tokens"))  # the gaps themselves: _gaps, when needed
        row.update(lat)
    if i is None:
        return row
    row["window_s"] = (e.t - s.t) / 1e9
    if row["clock_uncertainty_ms"] is not None:  # a window only a few uncertainties long: its edges are doubtful
        row["clock_short_window"] = row["window_s"] < CLOCK.SHORT_WINDOW_FACTOR * row["clock_uncertainty_ms"] / 1e3
    if gpu is not None:
        head, tail = gpu.at(i)
        row.update(head)
        if not opts.idle_baseline:
            row["gpu_idle_w"] = row["gpu_energy_net_j"] = None
        if row["gpu_energy_uncertainty_j"] is not None and row["gpu_energy_j"]:
            row["gpu_energy_uncertainty_pct"] = 100.0 * row["gpu_energy_uncertainty_j"] / row["gpu_energy_j"]
        row.update(tail)
    row.update(host.at(i))
    if row["cpu_energy_j_rapl"] is not None:
        row["cpu_energy_j"], row["cpu_energy_basis"] = row["cpu_energy_j_rapl"], "rapl"
    elif row["cpu_energy_j_approx"] is not None:
        row["cpu_energy_j"], row["cpu_energy_basis"] = row["cpu_energy_j_approx"], "tdp_approx"
    parts = [(n, row.get(c)) for n, c in (("gpu", "gpu_energy_j"), ("cpu_" + (row.get("cpu_energy_basis") or ""), "cpu_energy_j"))
             if row.get(c) is not None]
    if parts:
        row["total_energy_j"] = float(sum(v for _, v in parts))
        row["energy_basis"] = "+".join(n for n, _ in parts)
    tokens, ej = row.get("output_tokens"), row.get("gpu_energy_j")
    if tokens and ej:
        row["j_per_token"], row["tokens_per_j"] = ej / tokens, tokens / ej
    prompt, e_pre, e_dec = row.get("prompt_tokens"), row.get("gpu_energy_prefill_j"), row.get("gpu_energy_decode_j")
    if prompt and e_pre is not None:
        row["j_per_prompt_token"] = e_pre / prompt
    if tokens and e_dec is not None:
        row["j_per_output_token"] = e_dec / tokens
    return row


def batch_problems(batch: BatchData, results: list[dict], batch_dir: Path | None = None) -> list[str]:
    """Whether the batch is whole: interrupted or cut short, planned requests without a result,
    answers from another model than asked."""
    out = []
    planned = batch.batch_start.planned if batch.batch_start else None
    ok = sum(1 for r in results if r["status"] == "ok")
    have = Msg("p_have_planned", ok=ok, planned=planned) if planned else Msg("p_have_ok", ok=ok)
    resume = ""
    if batch.batch_start is not None:
        resume = Msg("p_resume_hint", command=resume_command(batch_dir or "BATCH_DIR"))
    if batch.batch_start is not None and batch.batch_end is None:
        out.append(Msg("p_partial_cut", have=have, resume=resume))
    elif batch.batch_end is not None and batch.batch_end.interrupted:
        out.append(Msg("p_partial_interrupted", have=have, resume=resume))
    elif planned and ok < planned:
        out.append(Msg("p_incomplete", have=have, resume=resume))
    wrong = sorted({(r["model"], r["served_model"]) for r in results
                    if r.get("served_model") and r["model"] and r["served_model"] != r["model"]})
    for asked, got in wrong:
        out.append(Msg("p_model_mismatch", asked=asked, got=got))
    return out


def _finite_list(values: np.ndarray, scale: float | None = None) -> list:
    """finite() of each value (÷ scale first), vectorised: floats, None where absent or not finite."""
    v = values / scale if scale is not None else values
    if np.isfinite(v).all():  # the usual case: no object array
        return v.tolist()
    out = v.astype(object)
    out[~np.isfinite(v)] = None
    return out.tolist()


def _each(parts: list[np.ndarray], convert: Callable[[np.ndarray], list]) -> list[list]:
    """``[convert(p) for p in parts]`` by one call on the parts joined (``convert`` goes element by
    element, so each part's slice of its result is the same list), when they have one dtype."""
    if len(parts) < 2 or len({p.dtype for p in parts}) > 1:
        return [convert(p) for p in parts]
    whole = convert(np.concatenate(parts))
    return _cut(whole, list(itertools.accumulate([p.size for p in parts])), type(whole) is FiniteFloats)


def _cut(whole: list, ends: list[int], finite: bool) -> list[list]:
    """``whole`` cut into the pieces ending at ``ends``; ``finite``: each marked FiniteFloats (a slice
    of one is a plain list)."""
    if finite:
        return [FiniteFloats(whole[lo:hi]) for lo, hi in zip([0, *ends], ends)]
    return [whole[lo:hi] for lo, hi in zip([0, *ends], ends)]


_READINGS = {"power_w": ("power_mw", 1000.0), "energy_mj": ("energy_mj", None), "util_gpu_pct": ("util_gpu_pct", None),
             "mem_used_mib": ("mem_used_mib", None), "temp_c": ("temp_c", None), "sm_clock_mhz": ("sm_clock_mhz", None)}


_F64 = {np.dtype(np.float64)}


def _readings(gpus: list[Series], cuts: list[slice]) -> dict[str, list[list]]:
    """A request JSON's reading lists: name -> each GPU's list (its samples ``cuts``), as _each of
    _samples_list gives them; when every reading is a double and finite, all made by one tolist()."""
    parts = [g.values[column][m] for column, _ in _READINGS.values() for g, m in zip(gpus, cuts)]
    if parts and {p.dtype for p in parts} == _F64:
        joined = np.concatenate(parts)
        ends = list(itertools.accumulate([p.size for p in parts]))
        at = 0
        for k, (_, scale) in enumerate(_READINGS.values()):
            end = ends[(k + 1) * len(gpus) - 1]
            if scale is not None:
                joined[at:end] /= scale  # (a copy: the same division as _samples_list's)
            at = end
        if np.isfinite(joined).all():
            pieces = _cut(joined.tolist(), ends, True)
            return {name: pieces[k * len(gpus):(k + 1) * len(gpus)] for k, name in enumerate(_READINGS)}
    return {name: _each([g.values[column][m] for g, m in zip(gpus, cuts)],
                        functools.partial(_samples_list, scale=scale))
            for name, (column, scale) in _READINGS.items()}


def _samples_list(values: np.ndarray, scale: float | None = None) -> list:
    """_finite_list of a request's samples: floats all finite are marked so (FiniteFloats), for its
    JSON writer."""
    v = values / scale if scale is not None else values
    if v.dtype.kind == "f" and np.isfinite(v).all():
        return FiniteFloats(v.tolist())
    return _finite_list(v)


def _samples_offsets(t_s: np.ndarray, a_s: float) -> list:
    """_offsets of a request's sample times, marked as _samples_list marks its lists (finite
    differences round to finite values)."""
    out = _offsets(t_s, a_s)
    return FiniteFloats(out) if np.isfinite(t_s - a_s).all() else out


def _offsets(t_s: np.ndarray, a_s: float) -> list[float]:
    """``[round(t - a_s, 6) for t in t_s]``, vectorised. Python's round(x, 6) is the double nearest to
    x·10⁶ rounded to an integer k, over 10⁶; numpy's product x·1e6 is off by far less than 10⁻⁶ here, so
    its rint gives the same k except near a half, and k / 1e6 is that nearest double (IEEE division
    rounds correctly). Values near a half, or too large for that bound, take Python's round."""
    x = t_s - a_s
    p = x * 1e6
    k = np.rint(p)
    out = (k / 1e6).tolist()
    ap = np.abs(p)
    with np.errstate(invalid="ignore"):  # (inf or NaN: in doubt as not below the bound, so Python's round)
        doubt = np.abs(p - k) >= 0.5 - 1e-6 - ap * 2.0 ** -50  # p a hair from a half: |p - k| near 0.5
    doubt |= ~(ap < 1e13)  # |x| not below 1e7
    if doubt.any():
        for i in np.flatnonzero(doubt).tolist():
            out[i] = round(float(x[i]), 6)
    return out


@functools.lru_cache(maxsize=None)
def _in_summary(column: str) -> bool:
    """Whether a results column goes into a request JSON's system_metrics_summary."""
    return (column.startswith(("gpu_", "cpu_", "host_", "proc_"))
            or column in ("j_per_token", "tokens_per_j", "total_energy_j", "energy_basis"))


@functools.lru_cache(maxsize=64)
def _summary_keys(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The columns of a row (its keys, in order) that go into its JSON's summary: rows built alike share them."""
    return tuple(c for c in columns if _in_summary(c))


class _Stretch:
    """Telemetry that request JSONs read (``counted``: the GPUs kept, None: all), with each series'
    times in s from the origin, made once for every request reading it: series sampled at the same
    times (a host's GPUs) share one array, so a request works out their window and offsets once."""

    def __init__(self, batch: BatchData, counted: set[str] | None = None):
        if counted is not None:
            batch = dataclasses.replace(batch, gpus=[g for g in batch.gpus if g.key in counted])
        self.batch = batch
        self._t_s: dict[int, np.ndarray] = {}
        self._made: list[tuple[np.ndarray, np.ndarray]] = []  # (t_ns, its t_s) of each distinct times array

    def t_s(self, series: Series) -> np.ndarray:
        t_s = self._t_s.get(id(series))
        if t_s is None:
            t_ns = series.t_ns
            t_s = next((t_s for other, t_s in self._made if other is t_ns or np.array_equal(other, t_ns)), None)
            if t_s is None:
                t_s = (t_ns - self.batch.origin_ns) / 1e9
                self._made.append((t_ns, t_s))
            self._t_s[id(series)] = t_s
        return t_s


def _request_json(r: Request, events: tuple, row: dict, i: int | None, win: E.Window, tele: _Stretch,
                  quality: dict | None, simulated: bool) -> dict:
    """The seed's per-request JSON (raw/<rid>.json). ``events``: r.events(); ``tele``: its telemetry around
    the window at least."""
    batch = tele.batch
    s, e, _ = events
    text, thinking = answer(r)
    origin = batch.origin_ns
    full: dict[str, Any] = {}
    summary: dict[str, Any] = {k: row.get(k) for k in _summary_keys(tuple(row))}
    if i is not None:
        a_s, b_s = float(win.a_s[i]), float(win.b_s[i])
        full["window_start_s"], full["window_end_s"] = a_s, b_s
        full["gpus"] = {}
        ts = [tele.t_s(g) for g in batch.gpus]
        # each distinct times array's window and offsets once (GPUs sampled together share one list),
        # each list of every GPU at once: a GPU's lists are slices of the joined ones
        own = list({id(t_s): t_s for t_s in ts}.values())
        at = {id(t_s): k for k, t_s in enumerate(own)}
        own_cuts = [_in_window(t_s, a_s, b_s) for t_s in own]
        own_offsets = _each([t_s[m] for t_s, m in zip(own, own_cuts)], functools.partial(_samples_offsets, a_s=a_s))
        cuts = [own_cuts[at[id(t_s)]] for t_s in ts]
        lists = {"t_s": [own_offsets[at[id(t_s)]] for t_s in ts], **_readings(batch.gpus, cuts)}
        for n, g in enumerate(batch.gpus):
            full["gpus"][g.key] = {**{k: v[n] for k, v in lists.items()}, "simulated": g.simulated}
        if batch.host is not None:
            h = batch.host
            t_s = tele.t_s(h)
            m = _in_window(t_s, a_s, b_s)
            full["host"] = {"t_s": _samples_offsets(t_s[m], a_s),
                            "cpu_pct": _samples_list(h.values["cpu_pct"][m]),
                            "mem_used_mib": _samples_list(h.values["mem_used_mib"][m])}
    bs = batch.batch_start or M.BatchStart(batch="")
    client = e.client if e is not None else None
    case = (bs.cases or [])[s.case] if s.case is not None and 0 <= s.case < len(bs.cases or []) else {}
    return {
        "rid": r.rid, "model": s.model, "task": s.task, "task_type": case.get("task_type", s.task), "load": s.load,
        "run": s.run, "case": s.case, "prompt": s.prompt, "generated_text": text,
        "thinking_text": thinking, "status": row["status"], "ok": row["ok"],
        "error": row.get("error"), "error_kind": row.get("error_kind"),
        "latency_seconds": row.get("latency_s"), "first_token_seconds": row.get("first_token_s"),
        "first_thinking_seconds": row.get("first_thinking_s"), "first_chunk_seconds": row.get("first_chunk_s"),
        "throughput_tokens_per_sec": row.get("toks_per_s"), "throughput_method": row.get("toks_per_s_method"),
        "api_metrics": e.api if e else None, "client_metrics": _client_msg(client) if client else None,
        "system_metrics_summary": summary, "system_metrics_full": full,
        "quality": quality,
        "metadata": {"batch": bs.batch or None, "config": bs.config, "model": (bs.models or {}).get(s.model),
                     "case_hash": s.case_hash, "warmup": bool(s.warmup),
                     # what was finally sent (an out-of-memory retry may have lowered it)
                     "params": (e.params if e is not None and e.params else s.params),
                     "retries": client.retries if client else None, "degraded": client.degraded if client else None,
                     "cold": row.get("cold"), "gpu_simulated": simulated if batch.gpus else None,
                     "backend": bs.backend},
    }


# Options that a request JSON does not derive from: progress bars and logs; batch_dir only names the
# batch in a problem's resume command; assess only scores, and each request's scores are in its key.
_NOT_IN_REQUEST_JSON = frozenset({"progress", "log_skipped_quality", "batch_dir", "assess", "jobs"})


def _options_text(opts: Options) -> str:
    """Every other option, as text (a changed one changes every request JSON's key)."""
    return repr([(f.name, getattr(opts, f.name)) for f in dataclasses.fields(opts)
                 if f.name not in _NOT_IN_REQUEST_JSON])


def _request_inputs(options: str, quality: dict[str, dict], rid: str) -> str | None:
    """A request JSON's inputs beyond the recording and the code: the options, its rid and its quality
    scores (the scorers are outside the recording), pickled: every value exact, whatever its type.
    None (always built) for scores that cannot be pickled."""
    try:
        scores = hashlib.sha256(pickle.dumps(quality.get(rid), protocol=4)).hexdigest()
    except (pickle.PicklingError, TypeError, AttributeError, ValueError):
        return None
    return f"{options}\0{rid!r}\0{scores}"


def _client_msg(client: M.ClientMetrics) -> dict[str, Any]:
    """The req.end client map as received: chunk_t_ns (held as an array, analyzer.stream) a list again."""
    out = client.to_msg()
    if isinstance(out.get("chunk_t_ns"), array):
        out["chunk_t_ns"] = out["chunk_t_ns"].tolist()
    return out


class Samples(Mapping):
    """A long-format sample table kept as pieces (one per source and stretch of time), each built only
    while it is written (``pieces()``); ``table[column]`` joins the pieces (for readers that want the
    whole column). The pieces are grouped by the stretch they read (``stretches()``): tables written
    together, a stretch at a time, read each stretch once (outputs.SampleTables)."""

    def __init__(self, columns: list[str], stretches: list[list[Callable[[], dict[str, np.ndarray]]]], rows: int):
        self.columns, self._stretches, self.rows = columns, stretches, rows

    def stretches(self) -> Iterator[Iterator[dict[str, np.ndarray]]]:
        for builds in self._stretches:
            yield (build() for build in builds)

    def pieces(self) -> Iterator[dict[str, np.ndarray]]:
        for built in self.stretches():
            yield from built

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in self.columns:
            raise KeyError(column)
        parts = [p[column] for p in self.pieces()]
        parts = [p if isinstance(p, np.ndarray) else p.to_numpy(zero_copy_only=False) for p in parts]  # Arrow text
        return np.concatenate(parts) if parts else np.zeros(0)

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)


def _same(value: Any, n: int):
    """A text column holding one value n times, as Arrow dictionary indices into that one value
    (one byte a row; a column of n Python strings took ~60 bytes a row)."""
    import pyarrow as pa

    from analyzer import arrow_np  # (arrays from buffers: pa.array imports pandas)

    if value is None:
        return pa.DictionaryArray.from_arrays(pa.nulls(n, pa.int8()), pa.nulls(0, pa.string()))
    text = arrow_np.from_list([str(value)])
    return pa.DictionaryArray.from_arrays(arrow_np.from_numpy(np.zeros(n, dtype=np.int8)),
                                          pa.array([str(value)]) if text is None else text)


def _gpu_piece(g: Series) -> dict[str, np.ndarray]:
    n = g.t_ns.size
    cols = {"t_ns": g.t_ns, "src": _same(g.src, n), "gpu": _same(g.key, n), "seq": g.seq,
            "simulated": np.full(n, bool(g.simulated))}
    for f in M.GPU_SERIES:
        cols[f] = g.values[f]
    cols.update(host=_same(M.src_host(g.src), n), uuid=_same(g.meta.get("uuid"), n), name=_same(g.meta.get("name"), n))
    return cols


GPU_SAMPLE_COLUMNS = ["t_ns", "src", "gpu", "seq", "simulated", *M.GPU_SERIES, "host", "uuid", "name"]


def _samples(batch: BatchData, source: SL.Source, slabs: list[SL.Slab],
             held: dict[tuple[float, float], BatchData] | None = None) -> tuple[Samples, Samples]:
    """Long-format sample tables (for Parquet): one row per GPU sample, one per host sample; a piece
    per GPU (and one for the host) per slab, each slab's own stretch of time, read when written, and
    once for all its pieces when the tables are written together. ``held``: the last slab's stretch,
    for its other pieces (the caller empties it once the tables are written)."""
    gs = batch.gpus
    held = {} if held is None else held

    def own(s: SL.Slab) -> BatchData:
        span = (s.own_lo_s, s.own_hi_s)
        if span not in held:
            held.clear()  # (before the next is read: one stretch held at a time)
            held[span] = _own(batch, source, s)
        return held[span]

    def gpu_piece(s: SL.Slab, key: str) -> dict[str, np.ndarray]:
        return _gpu_piece(next(g for g in own(s).gpus if g.key == key))

    gpu = Samples(GPU_SAMPLE_COLUMNS if gs else [],
                  [[functools.partial(gpu_piece, s, g.key) for g in gs] for s in slabs], sum(_count(g) for g in gs))
    if batch.host is None:
        return gpu, Samples([], [], 0)
    h = batch.host
    names = ["t_ns", "src", "seq", *h.values, *(f"rapl_{zone}_uj" for zone in sorted(batch.rapl))]

    def host_piece(s: SL.Slab) -> dict[str, np.ndarray]:
        tele = own(s)
        hs = tele.host
        hcols = {"t_ns": hs.t_ns, "src": _same(hs.src, hs.t_ns.size), "seq": hs.seq}
        for f, v in hs.values.items():
            hcols[f] = v
        for zone, zs in sorted(tele.rapl.items()):
            hcols[f"rapl_{zone}_uj"] = zs.values["energy_uj"]
        return hcols
    return gpu, Samples(names, [[functools.partial(host_piece, s)] for s in slabs], _count(h))


def _own(batch: BatchData, source: SL.Source, s: SL.Slab) -> BatchData:
    """Slab ``s``'s own stretch of telemetry, [own_lo, own_hi): a sample on the cut is the next slab's."""
    tele = source.between(s.own_lo_s, s.own_hi_s)
    if s.own_hi_s == SL.INF:
        return tele
    hi = batch.origin_ns + s.own_hi_s * 1e9

    def cut(x: Series | None) -> Series | None:
        return None if x is None else SL.view(x, -SL.INF, np.nextafter(hi, -SL.INF))
    return dataclasses.replace(tele, gpus=[cut(g) for g in tele.gpus], host=cut(tele.host),
                               rapl={k: cut(v) for k, v in tele.rapl.items()})


def _count(series: Series) -> int:
    """Samples in a series: its arrays', or, read by slab from a source, the count the source gave."""
    return int(series.meta.get("samples", series.t_ns.size))
