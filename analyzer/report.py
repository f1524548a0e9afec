"""summary/report.md: the tables and plots of one analysis in one Markdown page (pure: text out).

Every text that is not ours (model names, rids, tasks, error texts, problems quoting them) goes through
shared.escape.md_inline: it shows as text and never becomes HTML, a link or an image."""
from __future__ import annotations

from typing import Any

from analyzer.tables import cell
from shared.escape import md_inline

SIM_BANNER = ("> **⚠ SIMULATED GPU DATA.** The GPU telemetry of this batch came from the simulated source "
              "(`simulated: true` on tel.gpu). GPU power, energy, memory, utilisation and temperature below are "
              "NOT measurements; rows carry `gpu_simulated = true`.")

RESULT_COLUMNS = ("model", "task", "load", "run", "status", "latency_s", "first_token_s", "toks_per_s", "gpu_energy_j",
                  "gpu_energy_method", "gpu_coverage", "cpu_energy_j", "quality_score", "quality_per_j")
STAT_COLUMNS = ("model", "task", "load", "metric", "n", "n_failed", "mean", "std", "ci95_low", "ci95_high")
PARETO_COLUMNS = ("task", "model", "n", "total_energy_j_mean", "quality_score_mean", "quality_per_j", "pareto_optimal")
FAILED_COLUMNS = ("rid", "model", "task", "status", "error_kind", "error")
REPORT_METRICS = ("latency_s", "toks_per_s", "gpu_energy_j", "total_energy_j", "quality_score", "quality_per_j")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if v != v else format(v, ".4g")
    return md_inline(cell(v))


def md_table(columns, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_(none)_\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render(analysis, plot_files: list[str], title: str | None = None) -> str:
    """Markdown text; ``plot_files`` are paths relative to the summary directory."""
    a = analysis
    parts = [f"# Analysis report — {md_inline(title or a.batch_id or 'batch')}\n"]
    if a.simulated:
        parts.append(SIM_BANNER + "\n")
    elif not a.timelines:
        parts.append("> No GPU telemetry in this batch: GPU columns are empty (not available), not zero.\n")
    n_ok = sum(1 for r in a.results if r.get("status") == "ok")
    n_failed = sum(1 for r in a.results if r.get("status") == "failed")
    n_inc = sum(1 for r in a.results if r.get("status") == "incomplete")
    parts.append(f"Requests: {len(a.results)} measured ({n_ok} ok, {n_failed} failed, {n_inc} incomplete), "
                 f"{len(a.warmups)} warm-up (excluded from results and stats).\n")
    if a.problems:
        parts.append("## Problems\n\n" + "\n".join(f"- {md_inline(p)}" for p in a.problems) + "\n")
    low = [r for r in a.results if isinstance(r.get("gpu_coverage"), float) and r["gpu_coverage"] < 0.99]
    if low:
        parts.append("## Low sample coverage\n\n" + md_table(("rid", "gpu_coverage", "gpu_seq_gaps", "gpu_energy_j"), low))
    parts.append("## Pareto front per task (min energy, max quality)\n\n"
                 "Quality per joule = quality_score / (GPU + CPU energy in J); `pareto_optimal` = no other model "
                 "of the task uses less energy for at least the same quality.\n\n" + md_table(PARETO_COLUMNS, a.pareto))
    parts.append("## Results\n\n" + md_table(RESULT_COLUMNS, a.results))
    failed = [r for r in a.results if r.get("status") != "ok"]
    if failed:  # the server's or the collector's own words, escaped like every other cell
        parts.append("## Failed and incomplete requests\n\n" + md_table(FAILED_COLUMNS, failed))
    stats = [s for s in a.stats if s["metric"] in REPORT_METRICS]
    parts.append("## Stats (mean, std, 95% CI over runs; full table in stats.csv)\n\n" + md_table(STAT_COLUMNS, stats))
    if a.warmups:
        parts.append("## Warm-up requests (not in results)\n\n" + md_table(("rid", "model", "status", "latency_s",
                                                                            "gpu_energy_j"), a.warmups))
    if plot_files:
        sim = " (SIMULATED GPU)" if a.simulated else ""
        # Plot names are ours (shared.escape.safe_filename); <…> keeps any odd character inside the link.
        parts.append("## Plots" + sim + "\n\n" + "\n".join(f"![{md_inline(p)}](<{p}>)" for p in plot_files) + "\n")
    return "\n".join(parts)
