"""The load curve in report.html (pure: SVG text): J per output token against output tokens/s, one
line per model through its levels in level order, each level labelled, levels where every request
met the SLOs marked (analyzer.load_curve gives the rows)."""
from __future__ import annotations

from typing import Any

from analyzer.i18n import cell_value, label, t
from analyzer.report import fmt_num
from analyzer.report_html import MARGIN, SCATTER_H, SCATTER_W, _Axes, esc
from shared.numbers import finite

LEGEND_W = 170


def _points(rows: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    pts = [r for r in rows if r.get("model") == model and finite(r.get("output_tokens_per_s"), text=False) is not None
           and finite(r.get("j_per_token"), text=False) is not None]
    return sorted(pts, key=lambda r: (finite(r.get("sweep_level"), text=False) or 0.0))


def level_text(r: dict[str, Any], lang: str = "en") -> str:
    lv = finite(r.get("sweep_level"), text=False)
    if lv is None:
        return cell_value("sweep", "rate", lang) if r.get("sweep") == "rate" else "-"
    return f"{'c' if r.get('sweep') == 'concurrency' else 'r'}{lv:g}"


def load_curve_svg(plot_id: str, rows: list[dict[str, Any]], colors: dict[str, str], lang: str) -> str | None:
    models = [m for m in colors if _points(rows, m)]
    if not models:
        return None
    pts = [p for m in models for p in _points(rows, m)]
    xs = [float(p["output_tokens_per_s"]) for p in pts]
    ys = [float(finite(p.get("j_per_token_ci95_high"), text=False) or p["j_per_token"]) for p in pts]
    ax = _Axes(SCATTER_W, SCATTER_H, 0.0, max(xs) * 1.1 or 1.0, 0.0, max(ys) * 1.1 or 1.0, right=LEGEND_W)
    out = [f'<svg class="plot" id="{esc(plot_id)}" viewBox="0 0 {SCATTER_W} {SCATTER_H}" width="{SCATTER_W}" '
           f'height="{SCATTER_H}" role="img">'] + ax.frame(t("x_tokens_per_s", lang), t("y_j_per_token", lang))
    legend_y = MARGIN["t"] + 14
    for model in models:
        c = colors[model]
        mp = _points(rows, model)
        line = " ".join(f"{ax.x(float(p['output_tokens_per_s']))},{ax.y(float(p['j_per_token']))}" for p in mp)
        out.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        for k, p in enumerate(mp):
            x, y = ax.x(float(p["output_tokens_per_s"])), ax.y(float(p["j_per_token"]))
            lo, hi = (finite(p.get(k), text=False) for k in ("j_per_token_ci95_low", "j_per_token_ci95_high"))
            bar = (f'<line x1="{x}" y1="{ax.y(lo)}" x2="{x}" y2="{ax.y(hi)}" stroke="{c}" class="bar"/>'
                   if lo is not None and hi is not None else "")
            met = p.get("slo_met") is True
            tip = (f"{model} · {level_text(p, lang)} · {fmt_num(float(p['output_tokens_per_s']))} tok/s · "
                   f"{fmt_num(float(p['j_per_token']))} J/tok · {label('request_throughput_rps', lang)} "
                   f"{fmt_num(p.get('request_throughput_rps'))}"
                   + (f" · {t('tip_goodput', lang)} {fmt_num(p.get('goodput_share'))}" if p.get("slo") else ""))
            ty = y - 7 if k % 2 == 0 else y + 16  # alternate above/below: close levels stay legible
            out.append(f'<g class="mark lvl{" slo-met" if met else ""}" data-tip="{esc(tip)}">{bar}'
                       f'<circle cx="{x}" cy="{y}" r="{6 if met else 4}" fill="{c if met else "#fff"}" stroke="{c}" '
                       f'stroke-width="2"/><text x="{x + 7}" y="{ty}" class="legend">{esc(level_text(p, lang))}</text></g>')
        lx = MARGIN["l"] + ax.pw + 14
        short = model if len(model) <= 24 else model[:23] + "…"
        out.append(f'<g data-tip="{esc(model)}"><circle cx="{lx}" cy="{legend_y}" r="4" fill="{c}"/>'
                   f'<text x="{lx + 10}" y="{legend_y + 4}" class="legend">{esc(short)}</text></g>')
        legend_y += 16
    out.append("</svg>")
    return "".join(out)
