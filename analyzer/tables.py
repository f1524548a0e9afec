"""Summary tables (pure): stats per model × task × load, the Pareto front per task, and
deterministic CSV text (fixed column order, sorted rows, fixed float format)."""
from __future__ import annotations

import csv
import functools
import io
import itertools
import math
from array import array
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from analyzer import columns as COLS
from analyzer import mapped
from analyzer import rows as ROWS
from analyzer.i18n import Msg
from analyzer.pooled import PooledValues, kth
from analyzer.suite_stats import suite_figures
from shared.numbers import finite

# Two-sided 95 % Student-t quantiles by degrees of freedom (no scipy needed); 1.96 beyond 30.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042}

# stats.csv's metrics and the ones summarised per quality_basis: from the column registry.
STAT_METRICS = COLS.STATS
BASIS_METRICS = COLS.BASIS_METRICS
# Percentiles reported beside the median, as vLLM's --metric-percentiles (changed with the analyzer's flag).
DEFAULT_PERCENTILES = (90.0, 99.0)
STATS_COLUMNS = ("model", "task", "load", "metric", "n", "n_failed", "mean", "variance", "std", "ci95_low",
                 "ci95_high", "gpu_simulated", "quality_basis", "ci95_note", "median", "p90", "p99")
# Appended after the percentiles: the seed's grouping pools different cases (and English with Chinese),
# so ``std`` is the spread across cases and runs; ``run_to_run_std`` is the spread of repeated runs of the
# same case (pooled within-case standard deviation), ``n_cases`` how many cases the group holds and
# ``n_repeated_cases`` how many of them ran at least twice (the ones run_to_run_std comes from).
SPREAD_COLUMNS = ("n_cases", "n_repeated_cases", "run_to_run_std", "suite")
# A benchmark suite's figures per model × suite (stats.csv rows; "suite" is the key's fourth part there):
# accuracy with its Wilson 95 % interval, pass@k, energy per item and per correct answer.
SUITE_BOARD_COLUMNS = ("suite", "model", "quality_basis", "n", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high",
                       "accuracy_strict", "pass@1", "pass@k", "k", "j_per_item", "j_per_correct",
                       "group_quality_per_kj", "pareto_optimal")
# stats_per_case.csv: one row per model × case × metric over its runs (the run-to-run spread per case).
PER_CASE_COLUMNS = ("model", "task", "load", "case", "case_hash", "metric", "quality_basis", "n", "mean", "std",
                    "ci95_low", "ci95_high", "ci95_note", "gpu_simulated")
# pareto.csv: group_* are ratios of the group's means (mean quality / mean energy); quality_per_kj_mean is
# the mean of the per-request ratios (results.csv quality_per_kj). The two differ; they never share a name.
PARETO_COLUMNS = ("task", "model", "n", "total_energy_j_mean", "quality_score_mean", "group_quality_per_j",
                  "group_j_per_quality", "pareto_optimal", "gpu_simulated", "quality_basis", "group_quality_per_kj",
                  "quality_per_kj_mean", "total_energy_j_ci95_low", "total_energy_j_ci95_high",
                  "quality_score_ci95_low", "quality_score_ci95_high", "ci95_note")
MIN_N_FOR_CI = 3  # below this a 95 % interval of a mean says nothing useful: ci95_note = "n too small"
def metric_range(metric: str) -> tuple[float | None, float | None]:
    """The range a metric's values (so its mean) can take; intervals are clipped to it. Default: [0, ∞)."""
    return COLS.metric_range(metric)


def t95(df: int) -> float:
    return _T95.get(df, 1.96) if df >= 1 else float("nan")


def describe(values: list[float], lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    """n, mean, sample variance (n−1), std and the 95 % t-interval of the mean; None where undefined.

    Under MIN_N_FOR_CI values there is no interval (``ci95_note = "n too small"``): with n = 2 the
    t quantile is 12.7 and the interval of an energy reached below zero. The interval is clipped to
    [lo, hi], the range the metric can take (``ci95_note = "clipped"`` when that cut it)."""
    n = len(values)
    out: dict[str, Any] = {"n": n, "mean": None, "variance": None, "std": None, "ci95_low": None, "ci95_high": None,
                           "ci95_note": None}
    if n == 0:
        return out
    mean = math.fsum(_python_floats(values)) / n
    out["mean"] = mean
    if n >= 2:
        var = math.fsum((v - mean) ** 2 for v in _python_floats(values)) / (n - 1)
        out.update(variance=var, std=math.sqrt(var))
    if n < MIN_N_FOR_CI:
        out["ci95_note"] = "n too small"
        return out
    half = t95(n - 1) * out["std"] / math.sqrt(n)
    low, high = mean - half, mean + half
    if (lo is not None and low < lo) or (hi is not None and high > hi):
        out["ci95_note"] = "clipped"
        low = max(low, lo) if lo is not None else low
        high = min(high, hi) if hi is not None else high
    out.update(ci95_low=low, ci95_high=high)
    return out


def _python_floats(values: Iterable[float]) -> Iterable[float]:
    """The values as Python floats (an array's a block at a time): describe's arithmetic is Python's on
    any input, so a mean or variance is the same to the bit from a list or an array."""
    if isinstance(values, np.ndarray):
        return itertools.chain.from_iterable(values[k:k + _BLOCK].tolist() for k in range(0, values.size, _BLOCK))
    return values


_BLOCK = 1 << 14


def pct_name(q: float) -> str:
    """Column name of a percentile: 90 → p90, 99.9 → p99.9."""
    return f"p{q:g}"


def stats_columns(percentiles=DEFAULT_PERCENTILES, leveled: bool = False) -> tuple[str, ...]:
    """stats.csv columns for the chosen percentiles (the default gives STATS_COLUMNS + SPREAD_COLUMNS); a
    batch of load levels (--sweep) gets ``sweep_level`` after ``load``: its key is model × task × load × level."""
    cols = STATS_COLUMNS[:STATS_COLUMNS.index("median") + 1] + tuple(pct_name(q) for q in percentiles) \
        + SPREAD_COLUMNS
    return cols[:3] + ("sweep_level",) + cols[3:] if leveled else cols


def _case_of(row) -> str:
    """What makes two requests the same case: its content hash (else its index in the batch)."""
    return _case_key(row.get("case_hash"), row.get("case"))


def _case_key(case_hash, case) -> str:
    """_case_of of a row's case_hash and case values (as read a column at a time)."""
    return str(case_hash or case or "")


def run_to_run(members: list[dict], metric: str) -> dict[str, Any]:
    """n_cases, n_repeated_cases and the pooled within-case std of ``metric`` (None under 2 runs of any case)."""
    return _run_to_run([_case_of(r) for r in members], [finite(r.get(metric)) for r in members])


def _run_to_run(cases: Sequence[str] | np.ndarray | _CaseOrder,
                values: Sequence[float | None] | np.ndarray) -> dict[str, Any]:
    """run_to_run of the members' cases (their codes, ints, or their _CaseOrder) and finite() values
    (None, or NaN in an array: no value). As arrays, a case's values are read through the cases' order
    a block of rows at a time (a case longer than a block, its own blocks twice: its mean first), not
    gathered whole nor into a list of Python floats each: fsum rounds the exact sum once, so the order
    the values come in is no matter, and the memory is a block's, not the group's."""
    if not isinstance(cases, _CaseOrder):
        if not isinstance(cases, np.ndarray):
            codes: dict[str, int] = {}
            cases = np.array([codes.setdefault(c, len(codes)) for c in cases], dtype=np.int64)
        cases = _CaseOrder(cases)
    if not isinstance(values, np.ndarray):
        values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    tally = [0, 0, 0]  # cases with a value, cases with two or more, their values less one each
    ss = math.fsum(_squares(cases, values, tally))
    mapped.written(cases.order)  # (its pages read in this pass let go: the next metric's reads them again)
    n_cases, repeated, df = tally
    return {"n_cases": n_cases, "n_repeated_cases": repeated, "run_to_run_std": math.sqrt(ss / df) if df else None}


def _squares(cases: _CaseOrder, values: np.ndarray, tally: list[int]) -> Iterator[float]:
    """Each value's squared distance from its case's mean (Python floats, the case's values in their
    order), for the cases with two or more values; counts them into ``tally`` on the way."""
    order, starts, sizes = cases.order, cases.starts, cases.sizes
    ends = starts + sizes
    c, n = 0, starts.size
    while c < n:
        lo = int(starts[c])
        if sizes[c] > _BLOCK:  # one long case: its blocks read twice
            hi = int(ends[c])
            blocks = functools.partial(_present_blocks, values, order, lo, hi)
            k = sum(v.size for v in blocks())
            tally[0] += k > 0
            if k >= 2:
                tally[1] += 1
                tally[2] += k - 1
                m = math.fsum(itertools.chain.from_iterable(v.tolist() for v in blocks())) / k
                for v in blocks():
                    yield from ((x - m) ** 2 for x in v.tolist())
            c += 1
            continue
        # the cases that fit in a block of rows from here, gathered at once
        d = int(np.searchsorted(ends, lo + _BLOCK, side="right"))
        d = max(d, c + 1)
        hi = int(ends[d - 1])
        vals = values[order[lo:hi]]
        have = ~np.isnan(vals)
        counts = np.add.reduceat(have, starts[c:d] - lo) if hi > lo else np.zeros(d - c, dtype=np.int64)
        vals = vals[have]
        tally[0] += int(np.count_nonzero(counts))
        a = 0
        for k in counts.tolist():
            if k >= 2:
                tally[1] += 1
                tally[2] += k - 1
                v = vals[a:a + k].tolist()
                m = math.fsum(v) / k
                yield from ((x - m) ** 2 for x in v)
            a += k
        c = d


def _present_blocks(values: np.ndarray, order: np.ndarray, lo: int, hi: int) -> Iterator[np.ndarray]:
    """The values there (not NaN) at ``order[lo:hi]``, a block at a time."""
    for a in range(lo, hi, _BLOCK):
        v = values[order[a:min(a + _BLOCK, hi)]]
        yield v[~np.isnan(v)]


class _CaseOrder:
    """Rows' case codes (ints from 0) ordered once for every metric of a group: ``order`` (the rows by
    case, stable; 32-bit row numbers where they fit, in a mapped file where long), and each case's first
    place in it and count. Placed a block of rows at a time by each case's count (a counting sort): no
    64-bit sort of the whole group's codes, nor its codes gathered in order (~13 bytes a row)."""

    def __init__(self, codes: np.ndarray):
        n = codes.size
        counts = np.bincount(codes) if n else np.zeros(0, dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if counts.size else counts
        order = self.order = mapped.empty(n, np.int32 if n < 1 << 31 else np.int64)
        free = starts.copy()  # each case's next place in order
        for lo in range(0, n, _BLOCK):
            block = codes[lo:lo + _BLOCK]
            by = np.argsort(block, kind="stable")
            code = block[by]
            first = np.flatnonzero(np.concatenate(([True], code[1:] != code[:-1])))
            within = np.arange(code.size) - np.repeat(first, np.diff(np.append(first, code.size)))
            order[free[code] + within] = by + lo
            free += np.bincount(block, minlength=counts.size)
        mapped.written(order)
        there = counts > 0
        self.starts, self.sizes = starts[there], counts[there]


def _finites(values: list) -> list:
    """``[finite(v) for v in values]``: a column of floats or of ints (and None) without a call per value."""
    types = set(map(type, values))
    if types <= _FLOATS:
        fin = math.isfinite
        return [v if v is None or fin(v) else None for v in values]
    if types <= _INTS:
        return [None if v is None else float(v) for v in values]
    return list(map(finite, values))


def _present(values: np.ndarray) -> np.ndarray:
    """The values that are there (not NaN), in order."""
    return values[~np.isnan(values)]


_FLOATS = {float, type(None)}
_INTS = {int, type(None)}


class _Members:
    """A group's rows read a column at a time: finite() values of each metric (an array, NaN for none),
    the rows of each quality basis (positions), their cases (a metric of a group is a column, not a get
    per row). The metrics are read in the order given, each as it is first asked for and let go after (a
    day's ~40 metrics as Python lists at once were ~80 MiB; a week's, as arrays kept, 8 bytes a request
    each)."""

    def __init__(self, rows: list, metrics: tuple[str, ...]):
        # each row's case as a code (the cases' keys once each) and the rows of each basis, read a block of
        # rows at a time: a week's three columns and keys as Python values were ~15 MiB
        codes: dict[str, int] = {}
        cases = mapped.empty(len(rows), dtype=np.int32)
        at: dict[str, array] = {}
        for lo in range(0, len(rows), _BLOCK):
            basis, case_hash, case = ROWS.columns_of(rows[lo:lo + _BLOCK], ["quality_basis", "case_hash", "case"])
            cases[lo:lo + len(basis)] = [codes.setdefault(_case_key(h, c), len(codes))
                                         for h, c in zip(case_hash, case)]
            for b, key in enumerate(map(_basis_key, basis), lo):
                got = at.get(key)
                if got is None:
                    got = at[key] = array("q")
                got.append(b)
        mapped.written(cases)
        # the usual, one basis: every row (a range, not a copy of the rows' numbers)
        self.bases: dict[str, Sequence[int] | np.ndarray] = \
            {k: range(len(rows)) for k in at} if len(at) == 1 else \
            {k: np.frombuffer(v, dtype=np.int64) for k, v in at.items()}
        self.cases = cases
        self._by_case: _CaseOrder | None = None
        self._ahead = zip(metrics, ROWS.iter_floats(rows, list(metrics)))

    def finite(self, metric: str) -> np.ndarray:
        for name, values in self._ahead:  # (a metric skipped over is let go)
            if name == metric:
                return values
        raise KeyError(f"{metric!r}: not among the metrics still to read, in their order")

    def by_case(self, at: Sequence[int] | np.ndarray | None = None) -> _CaseOrder:
        """The cases' order of every row (``at`` None) or of the rows at ``at``."""
        if at is not None:
            return _CaseOrder(_at(self.cases, at))
        if self._by_case is None:
            self._by_case = _CaseOrder(self.cases)
        return self._by_case

    def parts(self, metric: str) -> list[tuple[str | None, np.ndarray, Callable[[], _CaseOrder]]]:
        """(basis, finite values, their cases' order when asked): one part (basis None) or, for a basis
        metric, one per basis."""
        got = self.finite(metric)
        if metric not in BASIS_METRICS:
            return [(None, got, self.by_case)]
        if len(self.bases) == 1:  # (one basis: every row, not a copy of the arrays)
            return [(basis, got, self.by_case) for basis in self.bases]
        return [(basis, got[at], functools.partial(self.by_case, at)) for basis, at in sorted(self.bases.items())]


def _at(values: np.ndarray, at: Sequence[int] | np.ndarray) -> np.ndarray:
    """``values`` at the positions ``at`` (a basis's rows: a range is a slice, not an int object a row)."""
    if isinstance(at, range):
        return values[at.start:at.stop:at.step]
    return values[np.asarray(at, dtype=np.int64)]


def per_case(results: list[dict[str, Any]], simulated: bool) -> list[dict[str, Any]]:
    """stats_per_case.csv: each model × case × metric over its successful runs (quality per basis)."""
    groups = ROWS.group_by(results, ["ok", "model", "case_hash", "case"], lambda ok, model, case_hash, case: (
        (str(model or ""), _case_key(case_hash, case)) if ok else None))
    out = []
    for (model, _case), rows in sorted(groups.items()):
        first = rows[0]
        base = {"model": model, "task": first.get("task"), "load": first.get("load"), "case": first.get("case"),
                "case_hash": first.get("case_hash"), "gpu_simulated": simulated}
        members = _Members(rows, STAT_METRICS)
        for metric in STAT_METRICS:
            for basis, got, _cases in members.parts(metric):
                vals = _present(got)
                if vals.size:
                    d = describe(vals, *metric_range(metric))
                    out.append({**base, "metric": metric, "quality_basis": basis or None,
                                **{k: d[k] for k in ("n", "mean", "std", "ci95_low", "ci95_high", "ci95_note")}})
    return out


def percentiles_of(values: list[float], percentiles=DEFAULT_PERCENTILES) -> dict[str, Any]:
    """median and each pXX, linearly interpolated between order statistics (numpy's default, as vLLM).
    An array of doubles (a day's pooled gaps: millions) is sorted in place: no Python float each, no copy;
    pooled values in their file (analyzer.pooled) have each order statistic found, not all sorted."""
    out: dict[str, Any] = {"median": None, **{pct_name(q): None for q in percentiles}}
    if not len(values):
        return out
    if isinstance(values, PooledValues) and values.held() is None:  # in its file: each rank found (pooled.kth)
        v, get = values, functools.lru_cache(maxsize=None)(functools.partial(kth, values))
    elif isinstance(values, np.ndarray):  # (a stable sort: sorted()'s order, -0.0 and 0.0 as they came)
        v = np.sort(values, kind="stable")
        get = v.item
    elif isinstance(values, (array, PooledValues)):
        v = np.frombuffer(values if isinstance(values, array) else values.held(), dtype=np.float64)
        v.sort(kind="stable")
        get = v.item
    else:
        v = sorted(values)
        get = v.__getitem__

    return _percentiles(len(v), get, percentiles)


def _percentiles(n: int, get: Callable[[int], float], percentiles) -> dict[str, Any]:
    """percentiles_of n sorted values, the k-th of them ``get(k)``."""
    def at(q: float) -> float:
        pos = (n - 1) * q / 100.0
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        a, b = get(lo), get(hi)
        return a + (b - a) * (pos - lo)

    return {"median": at(50.0), **{pct_name(q): at(q) for q in percentiles}}


_KEY = ["model", "task", "load", "suite", "sweep_level"]


def _key_of(*values) -> tuple:
    """A stats group's key of a row's values of _KEY: model, task, load, suite, then the sweep level
    (numeric order; none first)."""
    lv = finite(values[4])
    return tuple("" if v is None else str(v) for v in values[:4]) + ((0, 0.0) if lv is None else (1, lv),)


def _basis(row) -> str:
    return _basis_key(row.get("quality_basis"))


def _basis_key(basis) -> str:
    """_basis of a row's quality_basis value (as read a column at a time)."""
    return str(basis or "")


def stats(results: list[dict[str, Any]], simulated: bool, percentiles=DEFAULT_PERCENTILES,
          pooled: dict[str, dict[str, list[float]]] | None = None) -> list[dict[str, Any]]:
    """One row per model × task × load × metric over successful requests; failures counted in n_failed.

    Quality metrics (BASIS_METRICS) get one row per quality_basis, so two bases are never averaged.
    ``pooled``: {metric: {rid: values}}: every value of the group's requests in one sample (ITL); a
    mapping with ``of_rows(rows)`` gives the rows' values itself."""
    groups = ROWS.group_by(results, _KEY, _key_of)
    out = []
    for key in sorted(groups):
        rows = groups[key]
        good = ROWS.truthy(rows, "ok")
        failed = len(rows) - len(good)
        base = {"model": key[0], "task": key[1], "load": key[2], "suite": key[3] or None, "n_failed": failed,
                "gpu_simulated": simulated}
        if key[4][0]:
            base["sweep_level"] = rows[0].get("sweep_level")
        members = _Members(good, STAT_METRICS)
        for metric in STAT_METRICS:
            for basis, got, cases in members.parts(metric):
                n = int(np.count_nonzero(~np.isnan(got)))
                if not n:
                    continue
                spread = _run_to_run(cases(), got)
                # then the values sorted where they are (NaN last: the n there first; describe's sums are
                # exact, so in any order), not a copy of those there
                got.sort(kind="stable")
                vals = got[:n]
                out.append({**base, "metric": metric, "quality_basis": basis or None,
                            **describe(vals, *metric_range(metric)), **_percentiles(n, vals.item, percentiles),
                            **spread})
                del got, vals
        for metric, by_rid in (pooled or {}).items():
            of_rows = getattr(by_rid, "of_rows", None)  # (the analysis's: found by row, not rid)
            vals = _pooled(of_rows(good) if of_rows else (by_rid.get(r.get("rid"), []) for r in good))
            if vals:
                out.append({**base, "metric": metric, **describe(vals, *metric_range(metric)),
                            **percentiles_of(vals, percentiles)})
            vals.close()
        if key[3]:  # a benchmark suite: accuracy (Wilson), pass@k, J per item and per correct answer
            basis = next((_basis(r) for r in good if _basis(r)), "") or None
            for metric, vals in suite_figures(good):
                out.append({**base, "metric": metric, "quality_basis": basis, "variance": None, "std": None,
                            "ci95_low": None, "ci95_high": None, "ci95_note": None, **vals})
        # The group's ratio of means: mean quality over mean energy (robust to one tiny-energy request).
        # Each basis's sums of the values there, one column read at a time.
        bases = sorted(members.bases.items())
        del members
        (quality,) = ROWS.iter_floats(good, ["quality_score"])
        q_sums = [_sums(_at(quality, at)) for _, at in bases]
        del quality
        (energy,) = ROWS.iter_floats(good, ["total_energy_j"])
        e_sums = [_sums(_at(energy, at)) for _, at in bases]
        del energy
        for (basis, _), (nq, q_sum, _), (ne, e_sum, e_plain) in zip(bases, q_sums, e_sums):
            if not (nq and ne and e_plain > 0):  # (Python's sum, in order, as on a list)
                continue
            qm, em = q_sum / nq, e_sum / ne
            for metric, value in (("group_quality_per_j", qm / em), ("group_quality_per_kj", 1000.0 * qm / em),
                                  ("group_j_per_quality", em / qm if qm > 0 else None)):
                if value is None:
                    continue
                out.append({**base, "metric": metric, "quality_basis": basis or None, "n": min(nq, ne),
                            "mean": value, "variance": None, "std": None, "ci95_low": None, "ci95_high": None,
                            "ci95_note": None})
    return out


def _sums(values: np.ndarray) -> tuple[int, float, float]:
    """(how many are there (not NaN), their exact sum (fsum), Python's sum of them in order), read a block
    at a time: no copy of the values there."""
    def there() -> Iterator[float]:
        for k in range(0, values.size, _BLOCK):
            v = values[k:k + _BLOCK]
            yield from v[~np.isnan(v)].tolist()

    return int(np.count_nonzero(~np.isnan(values))), math.fsum(there()), sum(there())


def _pooled(parts: Iterable[list]) -> PooledValues:
    """Every finite() value of the parts (one per request, made in order and dropped), as doubles: a day's
    inter-token gaps are millions, 8 bytes each here (~32 as Python floats in lists), and beyond a
    hundred thousand in a temporary file (analyzer.pooled.HELD: a week's were ~120 MB)."""
    out = PooledValues()
    for p in parts:
        out.extend(v for v in _finites(p) if v is not None)
    return out


def suite_board(stats_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leaderboard of each suite: one row per model × suite from stats.csv's suite rows, accuracy
    against energy per item with the Pareto front marked (per suite and basis)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for st in stats_rows:
        if not st.get("suite"):
            continue
        key = (st["suite"], st["model"])
        r = rows.setdefault(key, {"suite": st["suite"], "model": st["model"], "quality_basis": None})
        metric = st["metric"]
        if metric == "accuracy":
            r.update(n=st["n"], accuracy=st["mean"], accuracy_ci95_low=st["ci95_low"],
                     accuracy_ci95_high=st["ci95_high"], quality_basis=st.get("quality_basis"))
        elif metric in ("accuracy_strict", "j_per_item", "j_per_correct", "pass@1"):
            r[metric] = st["mean"]
        elif metric.startswith("pass@"):
            r["pass@k"], r["k"] = st["mean"], int(metric[5:])
        elif metric == "group_quality_per_kj" and st.get("quality_basis") == r["quality_basis"]:
            r["group_quality_per_kj"] = st["mean"]
    out = [r for r in rows.values() if r.get("accuracy") is not None]
    for suite in sorted({r["suite"] for r in out}):
        members = [r for r in out if r["suite"] == suite and r.get("j_per_item") is not None]
        for r, flag in zip(members, pareto_flags([(r["j_per_item"], r["accuracy"]) for r in members])):
            r["pareto_optimal"] = flag
    return sorted(out, key=lambda r: (r["suite"], -(r["accuracy"] or 0.0), r["model"]))


def pareto_flags(points: list[tuple[float, float]]) -> list[bool]:
    """True for points no other point dominates (energy ≤ and quality ≥, one of them strictly)."""
    flags = []
    for i, (e_i, q_i) in enumerate(points):
        dominated = any((e_j <= e_i and q_j >= q_i) and (e_j < e_i or q_j > q_i)
                        for j, (e_j, q_j) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags


def pareto(results: list[dict[str, Any]], simulated: bool) -> list[dict[str, Any]]:
    """Per task and quality basis: each model's mean energy per request and mean quality_score, with
    their 95 % intervals; Pareto-optimal marked. Bases are never mixed on one front."""
    def key(ok, suite, e, q, task, basis, model):
        # suites have their own board (suite_board), one per suite
        if not ok or suite or finite(e) is None or finite(q) is None:
            return None
        return str(task), _basis_key(basis), str(model)
    by = ROWS.group_by(results, ["ok", "suite", "total_energy_j", "quality_score", "task", "quality_basis", "model"],
                       key)
    out = []
    for task, basis in sorted({(t, b) for t, b, _ in by}):
        models = sorted(m for t, b, m in by if (t, b) == (task, basis))
        pts, extra = [], []
        for m in models:
            rows = by[(task, basis, m)]
            de = describe([float(r["total_energy_j"]) for r in rows], *metric_range("total_energy_j"))
            dq = describe([float(r["quality_score"]) for r in rows], *metric_range("quality_score"))
            ratios = [v for v in (finite(r.get("quality_per_kj")) for r in rows) if v is not None]
            pts.append((de["mean"], dq["mean"]))
            extra.append((de, dq, math.fsum(ratios) / len(ratios) if ratios else None))
        for m, (e, q), flag, (de, dq, ratio_mean) in zip(models, pts, pareto_flags(pts), extra):
            out.append({"task": task, "quality_basis": basis or None, "model": m, "n": de["n"],
                        "total_energy_j_mean": e, "quality_score_mean": q,
                        "group_quality_per_j": q / e if e > 0 else None,
                        "group_quality_per_kj": 1000.0 * q / e if e > 0 else None,
                        "group_j_per_quality": e / q if q > 0 else None, "quality_per_kj_mean": ratio_mean,
                        "total_energy_j_ci95_low": de["ci95_low"], "total_energy_j_ci95_high": de["ci95_high"],
                        "quality_score_ci95_low": dq["ci95_low"], "quality_score_ci95_high": dq["ci95_high"],
                        "ci95_note": de["ci95_note"] or dq["ci95_note"],
                        "pareto_optimal": flag, "gpu_simulated": simulated})
    return out


def basis_problems(results: list[dict[str, Any]]) -> list[str]:
    """One line per task whose quality scores come from more than one basis (then stats and the
    Pareto front are split by basis, never mixed)."""
    per: dict[str, dict[str, int]] = {}
    for r in results:
        if r.get("ok") and finite(r.get("quality_score")) is not None:
            counts = per.setdefault(str(r.get("task")), {})
            counts[_basis(r)] = counts.get(_basis(r), 0) + 1
    return [Msg("p_mixed_bases", task=task, n=len(c),
                which=", ".join(f"{b or 'unknown'}: {n}" for b, n in sorted(c.items())))
            for task, c in sorted(per.items()) if len(c) > 1]


def cell(v: Any) -> str:
    """One CSV cell: blank for absent/NaN, true/false, ints as ints, floats with 10 significant digits."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "" if not math.isfinite(v) else format(v, ".10g")
    if isinstance(v, (list, dict, tuple)):
        return str(v)
    return str(v)


def csv_text(columns: Iterable[str], rows: list[dict[str, Any]]) -> str:
    """CSV with ``\\n`` line ends; the caller writes it as utf-8-sig (Excel on Windows reads the BOM)."""
    return "".join(csv_parts(columns, rows))


def csv_parts(columns: Iterable[str], rows: list[dict[str, Any]]) -> Iterator[str]:
    """csv_text in parts, made as they are asked for: the header, then a block of rows at a time (a day's
    results.csv is ~50 MB of text; outputs.write_text encodes and writes each part as it comes)."""
    columns = list(columns)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    if not columns:
        w.writerows([[] for _ in rows])
    yield _taken(buf)
    # column by column: the cells of a column mostly share one type, converted without cell()'s checks;
    # a block of rows at a time, so the cells of a long batch are never all held at once (every fast
    # path of _cells writes what cell() writes, so the block's own types change no byte)
    for lo in range(0, len(rows), _CSV_BLOCK) if columns else ():
        block = rows[lo:lo + _CSV_BLOCK]
        w.writerows(zip(*[_cells(values) for values in ROWS.columns_of(block, columns)]))
        yield _taken(buf)


def _taken(buf: io.StringIO) -> str:
    """The text written to ``buf`` so far, ``buf`` emptied."""
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text


_CSV_BLOCK = 512


_NONE = type(None)
_G10 = "{:.10g}".format
_NOT_FINITE = frozenset(_G10(v) for v in (math.nan, math.inf, -math.inf))


def _cells(values: list) -> list[str]:
    """``[cell(v) for v in values]``, by the column's set of types."""
    types = set(map(type, values))
    if types <= {str}:
        return values
    if types <= {str, _NONE}:
        return ["" if v is None else v for v in values]
    if types <= {float, _NONE}:
        g10 = _G10  # format(v, ".10g"), as cell()
        out = list(map(g10, values)) if _NONE not in types else ["" if v is None else g10(v) for v in values]
        # NaN and inf (blank, as cell()) are the only floats whose text is a word
        return out if _NOT_FINITE.isdisjoint(out) else ["" if x in _NOT_FINITE else x for x in out]
    if types <= {int, _NONE}:
        return ["" if v is None else int.__repr__(v) for v in values]
    return list(map(cell, values))
