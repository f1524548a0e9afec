"""Load levels (pure): goodput against SLOs per request, and one row per model × level for
summary/load_curve.csv — throughput, latency, energy per token and goodput, the J/token vs
output tokens/s curve.

A level's window runs from its first request's start to its last request's end; its energy is
that whole window's (idle gaps between requests included, so J/token is what serving at that
load costs), and beside it the per-request split summed (idle gaps excluded).

Intervals: latency figures get the 95 % t-interval of their mean over the level's requests.
output_tokens_per_s and j_per_token are level totals over one window, so their interval comes from
how the level's requests differ, per request: the t-interval of the ratio estimator (delta method)
of output tokens per request-second and of GPU joules (the per-request split) per output token,
scaled to the level figure. A fixed output length therefore still gets the spread of the requests'
times and energies, never a zero-width interval from equal lengths alone. It is not a repeat of the
level (each level ran once: ``ci95_basis`` says so); rerun the sweep for that. Without per-request
energy, or under 3 requests, the interval is empty. goodput_share gets a Wilson interval.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from analyzer import tables
from analyzer.i18n import Msg
from shared.numbers import finite

SLO_COLUMNS = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2el": "e2el_ms"}
LATENCY = ("ttft_ms", "tpot_ms", "e2el_ms")
# A level whose median TTFT is this many times the lowest level's (and 50 ms more) is queueing.
QUEUE_FACTOR, QUEUE_MIN_MS = 3.0, 50.0

COLUMNS = ("model", "sweep", "sweep_level", "n", "n_failed", "level_window_s", "idle_s", "achieved_concurrency",
           "achieved_rate_rps", "late_starts", "request_throughput_rps", "output_tokens",
           "output_tokens_per_s", "output_tokens_per_s_ci95_low", "output_tokens_per_s_ci95_high",
           *(f"{m}_{s}" for m in LATENCY for s in ("mean", "median", "p99", "ci95_low", "ci95_high")),
           "gpu_power_avg_w", "gpu_energy_j", "gpu_energy_uncertainty_j", "cpu_energy_j",
           "j_per_token", "j_per_token_ci95_low", "j_per_token_ci95_high", "ci95_basis", "j_per_token_gpu_cpu",
           "gpu_energy_split_j", "j_per_token_split", "idle_gap_j",
           "slo", "goodput_n", "goodput_share", "goodput_share_ci95_low", "goodput_share_ci95_high", "goodput_rps",
           "j_per_good_request", "slo_met", "queueing", "gpu_sm_clock_avg_mhz", "gpu_power_limit_w", "gpu_driver",
           "server_parallel", "gpu_simulated", "energy_window")

# the level table in report.html and report.md (the CSV has every column)
PAGE_COLUMNS = ("model", "sweep", "sweep_level", "n", "request_throughput_rps", "output_tokens_per_s", "ttft_ms_median",
                "tpot_ms_median", "e2el_ms_p99", "gpu_power_avg_w", "j_per_token", "j_per_token_split",
                "goodput_share", "goodput_rps", "j_per_good_request", "queueing")
ENERGY_WINDOW_NOTE = "level window: first start to last end, idle gaps included"
CI_BASIS = "per-request spread (n={n}), level ran once"


def slo_text(slo: dict[str, float] | None) -> str | None:
    return " ".join(f"{k}:{v:g}" for k, v in slo.items()) if slo else None


def meets_slo(row: dict[str, Any], slo: dict[str, float] | None) -> bool | None:
    """Whether a request met every SLO (vLLM's goodput rule, ms, ≤ the limit); None without SLOs.
    A failed request, or one missing a measured figure an SLO needs, is not good."""
    if not slo:
        return None
    if not row.get("ok"):
        return False
    for key, limit in slo.items():
        v = finite(row.get(SLO_COLUMNS[key]))
        if key == "tpot" and v is None and (finite(row.get("output_tokens")) or 0) <= 1:
            continue  # one output token has no time per output token (vLLM counts it as met)
        if v is None or v > limit:
            return False
    return True


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    if n <= 0:
        return None, None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def _union_s(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def level_key(row: dict[str, Any]) -> tuple[str, Any]:
    return (str(row.get("model")), row.get("sweep_level"))


def groups(results: list[dict[str, Any]], spans: dict[str, tuple[float, float]]) -> dict[tuple, list[dict]]:
    """Requests with a window, by model × level (in the order the levels ran)."""
    out: dict[tuple, list[dict]] = {}
    for row in sorted((r for r in results if r.get("rid") in spans), key=lambda r: spans[r["rid"]][0]):
        out.setdefault(level_key(row), []).append(row)
    return out


def level_windows(grouped: dict[tuple, list[dict]], spans: dict[str, tuple[float, float]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    keys = list(grouped)
    a = np.array([min(spans[r["rid"]][0] for r in grouped[k]) for k in keys], dtype=np.float64)
    b = np.array([max(spans[r["rid"]][1] for r in grouped[k]) for k in keys], dtype=np.float64)
    return a, b


def curve(results: list[dict[str, Any]], spans: dict[str, tuple[float, float]],
          level_energy: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]], slo: dict[str, float] | None,
          simulated: bool, server_parallel: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(load_curve rows, problems). ``spans``: rid → (start_s, end_s) of every finished request;
    ``level_energy(a, b)``: {"gpu_j", "gpu_unc_j", "cpu_j"} arrays for the level windows [a, b]."""
    grouped = groups(results, spans)
    if not grouped:
        return [], []
    a, b = level_windows(grouped, spans)
    en = level_energy(a, b)
    rows = []
    for i, (key, members) in enumerate(grouped.items()):
        rows.append(_level_row(key, members, spans, float(a[i]), float(b[i]), _at(en.get("gpu_j"), i),
                               _at(en.get("gpu_unc_j"), i), _at(en.get("cpu_j"), i), slo, simulated, server_parallel))
    return rows, _queueing(rows)


def annotate(rows: list[dict[str, Any]], curve_rows: list[dict[str, Any]]) -> None:
    """Give each request row its level's achieved concurrency and rate (results.csv)."""
    by = {(r["model"], r["sweep_level"]): r for r in curve_rows}
    for row in rows:
        lv = by.get(level_key(row))
        if lv is not None and row.get("rid") is not None:
            row["level_concurrency"] = lv.get("achieved_concurrency")
            row["level_rate_rps"] = lv.get("achieved_rate_rps")


def _at(arr, i: int) -> float | None:
    return None if arr is None else finite(float(arr[i]))


def ratio_interval(x: list[float], y: list[float]) -> tuple[float, float] | None:
    """95 % t-interval of sum(x) / sum(y) over paired per-request values (the ratio estimator's
    delta-method standard error); None under tables.MIN_N_FOR_CI pairs or without a positive sum(y)."""
    n = len(x)
    if n < tables.MIN_N_FOR_CI or n != len(y):
        return None
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    my = float(ys.mean())
    if not my > 0:
        return None
    r = float(xs.mean()) / my
    se = float(np.std(xs - r * ys, ddof=1)) / (my * math.sqrt(n))
    half = tables.t95(n - 1) * se
    return max(0.0, r - half), r + half


def _scaled(value: float, ratio: float, iv: tuple[float, float]) -> tuple[float, float]:
    """The ratio's interval moved onto the level figure (same relative width)."""
    return value * iv[0] / ratio, value * iv[1] / ratio


def _stat(vals: list[float], metric: str) -> dict[str, Any]:
    d = tables.describe(vals, *tables.metric_range(metric))
    p = tables.percentiles_of(vals, (99.0,))
    return {"mean": d["mean"], "median": p["median"], "p99": p["p99"], "ci95_low": d["ci95_low"],
            "ci95_high": d["ci95_high"]}


def _level_row(key, members, spans, a_s, b_s, gpu_j, gpu_unc_j, cpu_j, slo, simulated, server_parallel) -> dict:
    model, level = key
    ok = [r for r in members if r.get("ok")]
    win = max(b_s - a_s, 1e-9)
    req_spans = [spans[r["rid"]] for r in members]
    starts = sorted(s for s, _ in req_spans)
    row: dict[str, Any] = {
        "model": model, "sweep": members[0].get("sweep"), "sweep_level": level, "n": len(ok),
        "n_failed": len(members) - len(ok), "level_window_s": win, "idle_s": win - _union_s(req_spans),
        "achieved_concurrency": math.fsum(e - s for s, e in req_spans) / win,
        "achieved_rate_rps": (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 and starts[-1] > starts[0]
        else None,
        "late_starts": sum(1 for r in members if r.get("start_late")),
        "request_throughput_rps": len(ok) / win, "gpu_simulated": simulated, "server_parallel": server_parallel,
        "energy_window": ENERGY_WINDOW_NOTE,
    }
    tokens = [v for v in (finite(r.get("output_tokens")) for r in ok) if v is not None]
    total_tokens = math.fsum(tokens)
    row["output_tokens"] = total_tokens if tokens else None
    if tokens:
        row["output_tokens_per_s"] = total_tokens / win
        # per request: output tokens against its own time (tokens per request-second)
        paired = [(t, spans[r["rid"]][1] - spans[r["rid"]][0]) for r in ok
                  if (t := finite(r.get("output_tokens"))) is not None]
        iv = ratio_interval([t for t, _ in paired], [d for _, d in paired])
        if iv is not None and len(paired) == len(ok):
            rate = math.fsum(t for t, _ in paired) / math.fsum(d for _, d in paired)
            row["output_tokens_per_s_ci95_low"], row["output_tokens_per_s_ci95_high"] = _scaled(
                row["output_tokens_per_s"], rate, iv)
            row["ci95_basis"] = CI_BASIS.format(n=len(paired))
    for metric in LATENCY:
        vals = [v for v in (finite(r.get(metric)) for r in ok) if v is not None]
        if vals:
            for k, v in _stat(vals, metric).items():
                row[f"{metric}_{k}"] = v
    clocks = [v for v in (finite(r.get("gpu_sm_clock_avg_mhz")) for r in ok) if v is not None]
    row["gpu_sm_clock_avg_mhz"] = math.fsum(clocks) / len(clocks) if clocks else None
    row["gpu_energy_j"], row["gpu_energy_uncertainty_j"], row["cpu_energy_j"] = gpu_j, gpu_unc_j, cpu_j
    if gpu_j is not None:
        row["gpu_power_avg_w"] = gpu_j / win
    split = [v for v in (finite(r.get("gpu_energy_j")) for r in ok) if v is not None]
    if gpu_j is not None and total_tokens > 0:
        row["j_per_token"] = gpu_j / total_tokens
        # per request: its GPU joules (the split) against its output tokens
        both = [(e, t) for r in ok if (e := finite(r.get("gpu_energy_j"))) is not None
                and (t := finite(r.get("output_tokens"))) is not None]
        iv = ratio_interval([e for e, _ in both], [t for _, t in both]) if len(both) == len(ok) else None
        ratio = math.fsum(e for e, _ in both) / total_tokens if both else 0.0
        if iv is not None and ratio > 0:
            row["j_per_token_ci95_low"], row["j_per_token_ci95_high"] = _scaled(row["j_per_token"], ratio, iv)
            row["ci95_basis"] = CI_BASIS.format(n=len(both))
        if cpu_j is not None:
            row["j_per_token_gpu_cpu"] = (gpu_j + cpu_j) / total_tokens
    if split and len(split) == len(ok):
        row["gpu_energy_split_j"] = math.fsum(split)
        if total_tokens > 0:
            row["j_per_token_split"] = row["gpu_energy_split_j"] / total_tokens
        if gpu_j is not None:
            row["idle_gap_j"] = gpu_j - row["gpu_energy_split_j"]
    if slo:
        good = sum(1 for r in members if r.get("slo_ok"))
        lo, hi = wilson(good, len(members))
        row.update(slo=slo_text(slo), goodput_n=good, goodput_share=good / len(members), goodput_share_ci95_low=lo,
                   goodput_share_ci95_high=hi, goodput_rps=good / win,
                   j_per_good_request=gpu_j / good if (gpu_j is not None and good) else None,
                   slo_met=good == len(members))
    return row


def _kind(sweep) -> Msg | str:
    """The sweep's kind as the report's reader says it (through the catalogue)."""
    return Msg(f"sweep_{sweep}") if sweep in ("concurrency", "rate") else str(sweep)


def _queueing(rows: list[dict[str, Any]]) -> list[str]:
    """Mark levels whose median TTFT grew like a queue against the model's lowest level."""
    problems = []
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("sweep_level") is not None:
            by_model.setdefault(r["model"], []).append(r)
    for model, lv in sorted(by_model.items()):
        lv = sorted(lv, key=lambda r: r["sweep_level"])
        base = finite(lv[0].get("ttft_ms_median"))
        if base is None or len(lv) < 2:
            continue
        for r in lv[1:]:
            t = finite(r.get("ttft_ms_median"))
            if t is None:
                continue
            r["queueing"] = t > QUEUE_FACTOR * base and t > base + QUEUE_MIN_MS
            if r["queueing"]:
                problems.append(Msg("p_queueing", model=model, sweep=_kind(r.get("sweep")),
                                    level=f"{r['sweep_level']:g}", ttft=f"{t:.0f}", base=f"{base:.0f}",
                                    base_level=f"{lv[0]['sweep_level']:g}"))
        lv[0]["queueing"] = False
    return problems
