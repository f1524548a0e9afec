"""Summary tables (pure): stats per model × task × load, the Pareto front per task, and
deterministic CSV text (fixed column order, sorted rows, fixed float format)."""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable

from shared.numbers import finite

# Two-sided 95 % Student-t quantiles by degrees of freedom (no scipy needed); 1.96 beyond 30.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042}

STAT_METRICS = ("latency_s", "first_token_s", "first_thinking_s", "first_chunk_s", "toks_per_s", "client_toks_per_s",
                "e2e_toks_per_s", "output_tokens", "gpu_energy_j", "gpu_energy_net_j", "gpu_energy_uncertainty_j",
                "j_per_token", "tokens_per_j", "gpu_mem_peak_mb", "gpu_util_avg", "gpu_temp_peak_c",
                "gpu_power_avg_w", "gpu_sm_clock_avg_mhz", "gpu_coverage", "cpu_util_avg", "cpu_energy_j_approx",
                "cpu_energy_j_rapl", "cpu_energy_j", "host_mem_peak_mib", "total_energy_j", "quality_score",
                "bartscore", "bartscore_f", "distinct_2", "quality_per_j", "j_per_quality",
                "ttft_ms", "tpot_ms", "e2el_ms", "gpu_energy_prefill_j", "gpu_energy_decode_j",
                "j_per_prompt_token", "j_per_output_token", "cpu_energy_j_server", "host_cpu_other_pct")
# Percentiles reported beside the median, as vLLM's --metric-percentiles (changed with the analyzer's flag).
DEFAULT_PERCENTILES = (90.0, 99.0)
STATS_COLUMNS = ("model", "task", "load", "metric", "n", "n_failed", "mean", "variance", "std", "ci95_low",
                 "ci95_high", "gpu_simulated", "median", "p90", "p99")
PARETO_COLUMNS = ("task", "model", "n", "total_energy_j_mean", "quality_score_mean", "quality_per_j",
                  "j_per_quality", "pareto_optimal", "gpu_simulated")


def t95(df: int) -> float:
    return _T95.get(df, 1.96) if df >= 1 else float("nan")


def describe(values: list[float]) -> dict[str, Any]:
    """n, mean, sample variance (n−1), std and the 95 % t-interval of the mean; None where undefined."""
    n = len(values)
    out: dict[str, Any] = {"n": n, "mean": None, "variance": None, "std": None, "ci95_low": None, "ci95_high": None}
    if n == 0:
        return out
    mean = math.fsum(values) / n
    out["mean"] = mean
    if n >= 2:
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
        std = math.sqrt(var)
        half = t95(n - 1) * std / math.sqrt(n)
        out.update(variance=var, std=std, ci95_low=mean - half, ci95_high=mean + half)
    return out


def pct_name(q: float) -> str:
    """Column name of a percentile: 90 → p90, 99.9 → p99.9."""
    return f"p{q:g}"


def stats_columns(percentiles=DEFAULT_PERCENTILES) -> tuple[str, ...]:
    """stats.csv columns for the chosen percentiles (the default gives STATS_COLUMNS)."""
    return STATS_COLUMNS[:STATS_COLUMNS.index("median") + 1] + tuple(pct_name(q) for q in percentiles)


def percentiles_of(values: list[float], percentiles=DEFAULT_PERCENTILES) -> dict[str, Any]:
    """median and each pXX, linearly interpolated between order statistics (numpy's default, as vLLM)."""
    out: dict[str, Any] = {"median": None, **{pct_name(q): None for q in percentiles}}
    if not values:
        return out
    v = sorted(values)

    def at(q: float) -> float:
        pos = (len(v) - 1) * q / 100.0
        lo = math.floor(pos)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    out["median"] = at(50.0)
    for q in percentiles:
        out[pct_name(q)] = at(q)
    return out


def _key(row) -> tuple:
    return tuple("" if row.get(k) is None else str(row.get(k)) for k in ("model", "task", "load"))


def stats(results: list[dict[str, Any]], simulated: bool, percentiles=DEFAULT_PERCENTILES,
          pooled: dict[str, dict[str, list[float]]] | None = None) -> list[dict[str, Any]]:
    """One row per model × task × load × metric over successful requests; failures counted in n_failed.

    ``pooled``: {metric: {rid: values}}: every value of the group's requests in one sample (ITL)."""
    groups: dict[tuple, list[dict]] = {}
    for row in results:
        groups.setdefault(_key(row), []).append(row)
    out = []
    for key in sorted(groups):
        rows = groups[key]
        good = [r for r in rows if r.get("ok")]
        failed = len(rows) - len(good)
        for metric in STAT_METRICS:
            vals = [v for v in (finite(r.get(metric)) for r in good) if v is not None]
            if not vals:
                continue
            d = describe(vals)
            out.append({"model": key[0], "task": key[1], "load": key[2], "metric": metric, "n_failed": failed,
                        "gpu_simulated": simulated, **d, **percentiles_of(vals, percentiles)})
        for metric, by_rid in (pooled or {}).items():
            vals = [v for r in good for v in (finite(x) for x in by_rid.get(r.get("rid"), [])) if v is not None]
            if vals:
                out.append({"model": key[0], "task": key[1], "load": key[2], "metric": metric, "n_failed": failed,
                            "gpu_simulated": simulated, **describe(vals), **percentiles_of(vals, percentiles)})
        # The group's ratio of means: mean quality over mean energy (robust to one tiny-energy request).
        q = [v for v in (finite(r.get("quality_score")) for r in good) if v is not None]
        e = [v for v in (finite(r.get("total_energy_j")) for r in good) if v is not None]
        if q and e and sum(e) > 0:
            out.append({"model": key[0], "task": key[1], "load": key[2], "metric": "group_quality_per_j",
                        "n": min(len(q), len(e)), "n_failed": failed, "mean": (sum(q) / len(q)) / (sum(e) / len(e)),
                        "variance": None, "std": None, "ci95_low": None, "ci95_high": None, "gpu_simulated": simulated})
    return out


def pareto_flags(points: list[tuple[float, float]]) -> list[bool]:
    """True for points no other point dominates (energy ≤ and quality ≥, one of them strictly)."""
    flags = []
    for i, (e_i, q_i) in enumerate(points):
        dominated = any((e_j <= e_i and q_j >= q_i) and (e_j < e_i or q_j > q_i)
                        for j, (e_j, q_j) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags


def pareto(results: list[dict[str, Any]], simulated: bool) -> list[dict[str, Any]]:
    """Per task: each model's mean total energy per request and mean quality_score; Pareto-optimal marked."""
    by: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in results:
        if not row.get("ok"):
            continue
        e, q = finite(row.get("total_energy_j")), finite(row.get("quality_score"))
        if e is None or q is None:
            continue
        by.setdefault((str(row.get("task")), str(row.get("model"))), []).append((e, q))
    out = []
    for task in sorted({t for t, _ in by}):
        models = sorted(m for t, m in by if t == task)
        pts = []
        for m in models:
            vals = by[(task, m)]
            pts.append((math.fsum(v[0] for v in vals) / len(vals), math.fsum(v[1] for v in vals) / len(vals)))
        for m, (e, q), flag in zip(models, pts, pareto_flags(pts)):
            out.append({"task": task, "model": m, "n": len(by[(task, m)]), "total_energy_j_mean": e,
                        "quality_score_mean": q, "quality_per_j": q / e if e > 0 else None,
                        "j_per_quality": e / q if q > 0 else None, "pareto_optimal": flag, "gpu_simulated": simulated})
    return out


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
    columns = list(columns)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([cell(row.get(c)) for c in columns])
    return buf.getvalue()
