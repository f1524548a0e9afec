"""Key figures of a finished batch, from its summary/results.csv rows (pure, no I/O but the CSV read).

Absent values stay absent: an empty cell is never averaged as 0, and shows as ``-``.
Each figure carries the report's name for it: ``group 效质比`` is stats.csv's group_quality_per_kj
(mean quality ÷ mean energy of the group), never the mean of per-request ratios; ``GPU J/tok`` is the
GPU's energy only (the CPU's is its own column).
"""
from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

from shared.escape import terminal_text
from shared.numbers import finite

GROUP_RATIO = "group_quality_per_kj"  # computed per group, as stats.csv: not a results.csv column
# (results.csv column or GROUP_RATIO, table heading, format)
COLUMNS: list[tuple[str, str, str]] = [
    ("latency_s", "latency s", ".2f"),
    ("first_token_s", "TTFT s", ".3f"),
    ("toks_per_s", "tok/s", ".1f"),
    ("output_tokens", "out tok", ".0f"),
    ("gpu_energy_j", "GPU J", ".1f"),
    ("cpu_energy_j", "CPU J", ".1f"),
    ("j_per_token", "GPU J/tok", ".2f"),
    ("quality_score", "quality", ".2f"),
    (GROUP_RATIO, "group 效质比 q/kJ", "sig3"),
    ("bartscore", "BARTScore", ".2f"),
]
GROUP = ("model", "task", "load")


def read_results(path: Path) -> list[dict[str, str]]:
    """Rows of results.csv (written UTF-8 with BOM by the analyzer)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _true(cell: str | None) -> bool:
    return (cell or "").strip().lower() == "true"


def key_figures(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One dict per model × task × load: ``n_ok``, ``n_failed``, and the mean of each COLUMNS value
    over the successful requests that have it (None when none has it)."""
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k, "") for k in GROUP), []).append(row)
    out = []
    for key, members in groups.items():
        ok = [r for r in members if r.get("status", "ok" if _true(r.get("ok")) else "failed") == "ok"]
        fig: dict[str, Any] = dict(zip(GROUP, key))
        fig["n_ok"], fig["n_failed"] = len(ok), len(members) - len(ok)
        for col, _, _ in COLUMNS:
            values = [v for r in ok if (v := finite(r.get(col))) is not None]
            fig[col] = statistics.fmean(values) if values else None
        fig[GROUP_RATIO] = group_ratio(ok)
        fig["gpu_simulated"] = any(_true(r.get("gpu_simulated")) for r in members)
        out.append(fig)
    return out


def group_ratio(ok: list[dict[str, str]]) -> float | None:
    """stats.csv's group_quality_per_kj: 1000 × mean quality_score ÷ mean total_energy_j; None when the
    group's scores come from more than one quality basis (never mixed) or a part is missing."""
    if len({r.get("quality_basis") or "" for r in ok if finite(r.get("quality_score")) is not None}) > 1:
        return None
    q = [v for r in ok if (v := finite(r.get("quality_score"))) is not None]
    e = [v for r in ok if (v := finite(r.get("total_energy_j"))) is not None]
    if not (q and e and sum(e) > 0):
        return None
    return 1000.0 * statistics.fmean(q) / statistics.fmean(e)


def _fmt(value: float, fmt: str) -> str:
    """``sig3``: three significant digits, never fewer than two decimals and no exponent, so a ratio of
    0.0853 reads as report.html has it (".2f" printed 0.09 beside the report's 0.0853)."""
    if fmt != "sig3":
        return format(value, fmt)
    if not value:
        return "0.00"
    return f"{value:.{min(6, max(2, 2 - math.floor(math.log10(abs(value)))))}f}"


def format_table(figures: list[dict[str, Any]]) -> str:
    """A Markdown table (readable as plain text too) of :func:`key_figures`."""
    heads = ["model", "task", "load", "ok/all"] + [h for _, h, _ in COLUMNS]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for f in figures:
        # model, task and load come from the server and the cases: control characters shown, not obeyed
        cells = [terminal_text(f[k]).replace("|", "\\|") for k in ("model", "task", "load")]
        cells.append(f"{f['n_ok']}/{f['n_ok'] + f['n_failed']}")
        cells += ["-" if f[col] is None else _fmt(f[col], fmt) for col, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bartscore_note(rows: list[dict[str, str]]) -> str | None:
    """Why BARTScore is empty (the quality module's message), or None when it was computed."""
    if any(finite(r.get("bartscore")) is not None for r in rows):
        return None
    for col in ("bartscore_error", "quality_error"):
        for r in rows:
            if (r.get(col) or "").strip():
                return r[col].strip()
    return None


SUITE_COLUMNS = [("suite", "suite", "s"), ("model", "model", "s"), ("n", "n", "s"), ("accuracy", "pass@1", ".3f"),
                 ("accuracy_ci95_low", "95% low (Wilson)", ".3f"), ("accuracy_ci95_high", "95% high", ".3f"),
                 ("pass@k", "pass@k", ".3f"), ("j_per_item", "J per problem (GPU+CPU)", ".1f"),
                 ("j_per_correct", "J per correct (GPU+CPU)", ".1f"), ("group_quality_per_kj", "group 效质比 q/kJ", ".3f")]


def format_suites(rows: list[dict[str, str]]) -> str:
    """summary/suites.csv as a Markdown table: pass@1 (accuracy) and energy per problem per model × suite."""
    lines = ["| " + " | ".join(h for _, h, _ in SUITE_COLUMNS) + " |", "|" + "---|" * len(SUITE_COLUMNS)]
    for r in rows:
        cells = []
        for col, _, fmt in SUITE_COLUMNS:
            v = r.get(col)
            num = finite(v) if fmt != "s" else None
            cells.append("-" if v in (None, "") else (format(num, fmt) if num is not None
                                                       else terminal_text(v).replace("|", "\\|")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
