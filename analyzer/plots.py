"""PNG plots (matplotlib, Agg backend): power timeline per GPU with request windows, and energy
vs quality per task with the Pareto front. Titles say SIMULATED when the GPU data was.

Model names, tasks and labels are not ours: they go through shared.escape.mpl_text (a "$" would start
mathtext) and, in file names, shared.escape.safe_filename (a task "../x" stays in plots/)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402

from analyzer import shading  # noqa: E402
from shared.escape import mpl_text, safe_filename  # noqa: E402

MAX_LABELS = 40  # more windows than this get shading without text, to stay legible
WINDOW_ALPHA = 0.2  # a request window's shading


def _sim(flag: bool) -> str:
    return " — SIMULATED GPU" if flag else ""


def merged_windows(windows: list[dict], t: np.ndarray, pixels: int) -> list[tuple[float, float, str, float]] | None:
    """(start, end, colour, opacity) of the shading when there are too many windows to tell apart at this
    width (analyzer.shading.SPAN_LIMIT): those that meet within a pixel as one, as opaque as the share of
    it they cover (a day of requests drawn as ~86,000 patches took minutes and most of the analyzer's
    memory); None: each window drawn."""
    arrays = shading.window_arrays(windows)
    if arrays.a_s.size <= shading.SPAN_LIMIT:
        return None
    lo = min(float(arrays.a_s.min()), float(t.min()) if t.size else np.inf)
    hi = max(float(arrays.b_s.max()), float(t.max()) if t.size else -np.inf)
    sp = shading.shading(arrays, lo, hi, pixels, limit=0, of=shading.whole)
    return [(s0, s1, "tab:gray" if k == shading.WARM else "tab:orange", WINDOW_ALPHA * share)
            for s0, s1, k, share in zip(sp.s0.tolist(), sp.s1.tolist(), sp.kind.tolist(), sp.share().tolist())]


def power_timeline(out_dir: Path, timeline: dict, windows: list[dict]) -> Path:
    """One PNG: the GPU's power (W) over time, each request window shaded and labelled."""
    fig, ax = plt.subplots(figsize=(12, 4), dpi=100)
    t, p = np.asarray(timeline["t_s"]), np.asarray(timeline["power_w"])
    ok = np.isfinite(p)
    ax.plot(t[ok], p[ok], lw=0.8, color="tab:blue", label="power (W)")
    merged = merged_windows(windows, t[ok], int(fig.get_figwidth() * fig.dpi))
    if merged is not None:
        for s0, s1, color, alpha in merged:
            ax.axvspan(s0, s1, color=color, alpha=alpha, lw=0)
    else:
        for i, w in enumerate(windows):
            color = "tab:gray" if w["warmup"] else ("tab:orange" if i % 2 == 0 else "tab:green")
            ax.axvspan(w["a_s"], w["b_s"], color=color, alpha=WINDOW_ALPHA, lw=0)
            if len(windows) <= MAX_LABELS:
                ax.text((w["a_s"] + w["b_s"]) / 2, 1.0, mpl_text(w["label"]) + (" (warm-up)" if w["warmup"] else ""),
                        transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="center", fontsize=6)
    ax.set_xlabel("time since batch origin (s)")
    ax.set_ylabel("GPU power (W)")
    gpu_id = f" ({mpl_text(timeline['gpu_id'])})" if timeline.get("gpu_id") else ""  # named by host and uuid
    ax.set_title(f"{mpl_text(timeline['key'])}{gpu_id} power with request windows{_sim(timeline['simulated'])}")
    fig.tight_layout()
    path = out_dir / f"power_timeline_{safe_filename(timeline['key'].replace('/', '_').replace('@', '_'))}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def energy_quality(out_dir: Path, task: str, results: list[dict], pareto: list[dict], simulated: bool,
                   basis: str | None = None, own_file: bool = False) -> Path | None:
    """One PNG per task (and quality basis): energy per request (J) vs quality_score, per model; model
    means and the front. ``own_file``: the task has several bases, so the basis goes into the name."""
    pts = [(r["model"], r["total_energy_j"], r["quality_score"]) for r in results
           if r.get("task") == task and r.get("ok") and isinstance(r.get("total_energy_j"), float)
           and (r.get("quality_basis") or None) == basis
           and isinstance(r.get("quality_score"), (int, float)) and not isinstance(r.get("quality_score"), bool)]
    front = sorted((p for p in pareto if p["task"] == task and p.get("quality_basis") == basis),
                   key=lambda p: p["total_energy_j_mean"])
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    for model in sorted({m for m, _, _ in pts}):
        xs = [e for m, e, _ in pts if m == model]
        ys = [q for m, _, q in pts if m == model]
        ax.scatter(xs, ys, s=18, alpha=0.6, label=mpl_text(model))
    opt = [p for p in front if p["pareto_optimal"]]
    ax.scatter([p["total_energy_j_mean"] for p in front], [p["quality_score_mean"] for p in front],
               marker="x", color="black", label="model mean")
    if opt:
        ax.plot([p["total_energy_j_mean"] for p in opt], [p["quality_score_mean"] for p in opt], "r--", lw=1,
                marker="*", markersize=12, label="Pareto-optimal (front)")
    for p in front:
        ax.annotate(mpl_text(p["model"]) + (" ★" if p["pareto_optimal"] else ""), (p["total_energy_j_mean"], p["quality_score_mean"]),
                    textcoords="offset points", xytext=(4, 6), fontsize=7)
    ax.set_xlabel("energy per request, GPU + CPU (J)")
    ax.set_ylabel("quality_score" + (f" ({mpl_text(basis)})" if basis else ""))
    ax.set_title(f"{mpl_text(task)}: energy vs quality{_sim(simulated)}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / (f"energy_vs_quality_{safe_filename(task)}_{safe_filename(basis)}.png" if own_file
                      else f"energy_vs_quality_{safe_filename(task)}.png")
    fig.savefig(path)
    plt.close(fig)
    return path
