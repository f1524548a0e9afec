"""summary/report.html: the report a researcher reads in a browser (pure: text out).

Self-contained: the plots are inline SVG drawn here, the only script is the inline one below
(hover tooltips, sortable tables, a self-check), and a Content-Security-Policy forbids every
external load, so the page works offline and a stray link would show as an error. Every string
that came from a model, a server or a config (names, answers, errors) goes through ``esc``.
"""
from __future__ import annotations

import math
from itertools import chain, repeat
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from analyzer import mapped, shading
from analyzer.i18n import cell_value, label, t
from analyzer.report import (PARETO_COLUMNS, RESULT_COLUMNS, STAT_COLUMNS, fmt_num, note_list, problem_list,
                             report_stats, requests_line, table_cells)
from analyzer.tables import SUITE_BOARD_COLUMNS
from shared.escape import html_text
from shared.numbers import finite

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MAX_TIMELINE_POINTS = 3000  # min/max decimation beyond this: the page stays small, peaks stay visible
SCATTER_W, SCATTER_H = 800, 400
LEGEND_W = 170  # the scatter's right margin holds the model legend, clear of the points
LEGEND_CHARS = 24  # longer model names are cut in the legend (the full name shows on hover)
TIMELINE_W, TIMELINE_H = 1000, 300
MARGIN = {"l": 64, "r": 16, "t": 16, "b": 48}


def esc(v: Any) -> str:
    """Text or a quoted attribute value: & < > " ' as entities, control characters as visible escapes."""
    return html_text(v)



def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick(v: float) -> str:
    text = fmt_num(float(v))
    return text.rstrip("0").rstrip(".") if "." in text else text


class _Axes:
    """Data → pixel mapping with axes, ticks and labels for one SVG plot."""

    def __init__(self, w: int, h: int, x0: float, x1: float, y0: float, y1: float, right: int = MARGIN["r"]):
        self.w, self.h, self.x0, self.x1, self.y0, self.y1 = w, h, x0, x1, y0, y1
        self.pw, self.ph = w - MARGIN["l"] - right, h - MARGIN["t"] - MARGIN["b"]

    def x(self, v: float) -> float:
        return round(MARGIN["l"] + (v - self.x0) / (self.x1 - self.x0) * self.pw, 2)

    def y(self, v: float) -> float:
        return round(MARGIN["t"] + self.ph - (v - self.y0) / (self.y1 - self.y0) * self.ph, 2)

    # x() and y() of many values: the same float operations element-wise, then Python's round
    def xs(self, v: np.ndarray) -> list[float]:
        return list(map(round, (MARGIN["l"] + (v - self.x0) / (self.x1 - self.x0) * self.pw).tolist(), repeat(2)))

    def ys(self, v: np.ndarray) -> list[float]:
        return list(map(round, (MARGIN["t"] + self.ph - (v - self.y0) / (self.y1 - self.y0) * self.ph).tolist(),
                        repeat(2)))

    def frame(self, xlabel: str, ylabel: str) -> list[str]:
        out = [f'<rect x="{MARGIN["l"]}" y="{MARGIN["t"]}" width="{self.pw}" height="{self.ph}" class="frame"/>']
        for v in nice_ticks(self.x0, self.x1):
            px = self.x(v)
            out.append(f'<line x1="{px}" y1="{MARGIN["t"]}" x2="{px}" y2="{MARGIN["t"] + self.ph}" class="grid"/>'
                       f'<text x="{px}" y="{MARGIN["t"] + self.ph + 16}" class="tick" text-anchor="middle">'
                       f'{esc(_tick(v))}</text>')
        for v in nice_ticks(self.y0, self.y1):
            py = self.y(v)
            out.append(f'<line x1="{MARGIN["l"]}" y1="{py}" x2="{MARGIN["l"] + self.pw}" y2="{py}" class="grid"/>'
                       f'<text x="{MARGIN["l"] - 6}" y="{py + 4}" class="tick" text-anchor="end">'
                       f'{esc(_tick(v))}</text>')
        out.append(f'<text x="{MARGIN["l"] + self.pw / 2}" y="{self.h - 8}" class="axis" text-anchor="middle">'
                   f'{esc(xlabel)}</text>'
                   f'<text transform="translate(16 {MARGIN["t"] + self.ph / 2}) rotate(-90)" class="axis" '
                   f'text-anchor="middle">{esc(ylabel)}</text>')
        return out


def scatter_svg(plot_id: str, points: list[dict], front: list[dict], colors: dict[str, str], lang: str) -> str:
    """Energy (x) vs quality (y): one dot per request, model means with 95 % bars, the Pareto front."""
    highs = [p["e"] for p in points] + [finite(f.get("total_energy_j_ci95_high"), text=False) or 0.0
                                        for f in front]
    ax = _Axes(SCATTER_W, SCATTER_H, 0.0, max(highs) * 1.08 or 1.0, 0.0, 1.0, right=LEGEND_W)
    out = [f'<svg class="plot" id="{esc(plot_id)}" viewBox="0 0 {SCATTER_W} {SCATTER_H}" width="{SCATTER_W}" '
           f'height="{SCATTER_H}" role="img">'] + ax.frame(t("x_energy", lang), t("y_quality", lang))
    for p in points:
        tip = (f"{p['model']} · {label('load', lang)} {p['load']} · {label('run', lang)} {p['run']} · "
               f"{fmt_num(p['e'])} J · {label('quality_score', lang)} {fmt_num(p['q'])}")
        out.append(f'<circle class="mark pt" cx="{ax.x(p["e"])}" cy="{ax.y(p["q"])}" r="4" '
                   f'fill="{colors[p["model"]]}" data-tip="{esc(tip)}"/>')
    for f in front:
        e, q, c = f["total_energy_j_mean"], f["quality_score_mean"], colors[f["model"]]
        bars = []
        lo, hi = (finite(f.get(k), text=False) for k in ("total_energy_j_ci95_low", "total_energy_j_ci95_high"))
        if lo is not None and hi is not None:
            bars.append(f'<line x1="{ax.x(lo)}" y1="{ax.y(q)}" x2="{ax.x(hi)}" y2="{ax.y(q)}" stroke="{c}" class="bar"/>')
        lo, hi = (finite(f.get(k), text=False) for k in ("quality_score_ci95_low", "quality_score_ci95_high"))
        if lo is not None and hi is not None:
            bars.append(f'<line x1="{ax.x(e)}" y1="{ax.y(lo)}" x2="{ax.x(e)}" y2="{ax.y(hi)}" stroke="{c}" class="bar"/>')
        note = f" · {t('n_too_small', lang)}" if f.get("ci95_note") == "n too small" else ""
        tip = (f"{f['model']} · n {f['n']} · {label('total_energy_j_mean', lang)} {fmt_num(e)} J · "
               f"{label('quality_score_mean', lang)} {fmt_num(q)} · {label('group_quality_per_kj', lang)} "
               f"{fmt_num(f.get('group_quality_per_kj'))}{note}")
        x, y = ax.x(e), ax.y(q)
        out.append(f'<g class="mark mean" data-tip="{esc(tip)}">{"".join(bars)}'
                   f'<path d="M{x - 7} {y - 7}L{x + 7} {y + 7}M{x - 7} {y + 7}L{x + 7} {y - 7}" stroke="{c}" '
                   f'class="cross"/></g>')
    opt = sorted((f for f in front if f["pareto_optimal"]), key=lambda f: f["total_energy_j_mean"])
    if opt:
        pts = " ".join(f"{ax.x(f['total_energy_j_mean'])},{ax.y(f['quality_score_mean'])}" for f in opt)
        out.append(f'<polyline class="front" points="{pts}" data-tip="{esc(label("pareto_optimal", lang))}"/>')
    legend_y = MARGIN["t"] + 14
    for i, (model, c) in enumerate(colors.items()):
        if not any(p["model"] == model for p in points):
            continue
        lx = MARGIN["l"] + ax.pw + 14
        short = model if len(model) <= LEGEND_CHARS else model[:LEGEND_CHARS - 1] + "…"
        out.append(f'<g data-tip="{esc(model)}"><circle cx="{lx}" cy="{legend_y}" r="4" fill="{c}"/>'
                   f'<text x="{lx + 10}" y="{legend_y + 4}" class="legend">{esc(short)}</text></g>')
        legend_y += 16
    out.append("</svg>")
    return "".join(out)


def _decimate(ts: np.ndarray, ps: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest point (the first of equals) of each of limit // 2 runs of points as
    np.array_split cuts them: its first n % k runs one longer, so two blocks of equal runs, each a
    reshape whose rows are the runs."""
    n, k = ts.size, limit // 2
    if n <= limit:
        return ts, ps
    q, r = divmod(n, k)
    keep = []
    for lo, hi, size in ((0, r * (q + 1), q + 1), (r * (q + 1), n, q)):
        if hi > lo:
            runs = ps[lo:hi].reshape(-1, size)
            first = lo + np.arange(runs.shape[0]) * size
            keep += [first + runs.argmin(axis=1), first + runs.argmax(axis=1)]
    idx = np.unique(np.concatenate(keep))
    return ts[idx], ps[idx]


def _kind_word(kind: str, lang: str) -> str:
    """A shaded span's kind (shading.KINDS) in words."""
    return t("warmup" if kind == "warm" else kind, lang)


def _span_tips(windows: Sequence[dict], sp: shading.Spans, lang: str) -> list[str]:
    """Each drawn span's tooltip, escaped: a window's label, kind and length; a merged span's count of
    windows, kind and time range."""
    # esc works character by character: each kind's word escaped once, the number (digits, ',', '.',
    # '-') as it is, a window's label once
    names = [_kind_word(k, lang) for k in shading.KINDS]
    words = [esc(w) for w in names]
    tips, label, last = [], "", -1
    for s0, s1, k, i, n, share in zip(sp.s0.tolist(), sp.s1.tolist(), sp.kind.tolist(), sp.window.tolist(),
                                      sp.count.tolist(), sp.share().tolist()):
        if n > 1:
            tips.append(esc(t("spans_merged", lang, n=n, kind=names[k], a=fmt_num(s0), b=fmt_num(s1),
                              pct=fmt_num(100.0 * share))))
            continue
        if i != last:
            label, last = esc(f"{windows[i]['label']}"), i
        tips.append(f"{label} · {words[k]} · {fmt_num(s1 - s0)} s")
    return tips


def timeline_svg(plot_id: str, timeline: dict, windows: Sequence[dict], lang: str,
                 arrays: shading.WindowArrays | None = None,
                 drawn: dict[tuple[float, float], str] | None = None) -> str | None:
    """GPU power over time; request windows shaded, prefill darker than decode (analyzer.shading: merged
    within a pixel when there are very many). ``arrays``: shading.window_arrays(windows) when the
    caller has them already (they are the same for every GPU); ``drawn``: their shading by time axis,
    kept by the caller for the next GPU's (most share one axis)."""
    ts, ps = np.asarray(timeline["t_s"], dtype=float), np.asarray(timeline["power_w"], dtype=float)
    ok = np.isfinite(ts) & np.isfinite(ps)
    ts, ps = ts[ok], ps[ok]
    if ts.size < 2:
        return None
    w = shading.window_arrays(windows) if arrays is None else arrays
    x0 = min(float(ts[0]), float(w.a_s.min())) if w.a_s.size else float(ts[0])
    x1 = max(float(ts[-1]), float(w.b_s.max())) if w.b_s.size else float(ts[-1])
    ax = _Axes(TIMELINE_W, TIMELINE_H, x0, x1 if x1 > x0 else x0 + 1, 0.0, float(ps.max()) * 1.1 or 1.0)
    out = [f'<svg class="plot" id="{esc(plot_id)}" viewBox="0 0 {TIMELINE_W} {TIMELINE_H}" width="{TIMELINE_W}" '
           f'height="{TIMELINE_H}" role="img">'] + ax.frame(t("x_time", lang), t("y_power", lang))
    top, height = MARGIN["t"], ax.ph
    shade = None if drawn is None else drawn.get((ax.x0, ax.x1))
    if shade is None:
        sp = shading.shading(w, ax.x0, ax.x1, ax.pw, after_block=mapped.drop)  # (the windows' pages read so far)
        kinds = [shading.KINDS[k] for k in sp.kind.tolist()]
        # a merged span as light as the share of it its windows cover (one window: as the stylesheet says)
        fades = ["" if n == 1 else f' fill-opacity="{f:.2f}"' for n, f in zip(sp.count.tolist(), sp.share().tolist())]
        shade = "".join([f'<rect class="mark win {k}" x="{x0}" y="{top}" width="{max(0.5, x1 - x0)}" '
                         f'height="{height}"{fade} data-tip="{tip}"/>'
                         for k, fade, tip, x0, x1 in zip(kinds, fades, _span_tips(windows, sp, lang), ax.xs(sp.s0),
                                                         ax.xs(sp.s1))])
        if drawn is not None:
            drawn[(ax.x0, ax.x1)] = shade
    out.append(shade)
    dt, dp = _decimate(ts, ps, MAX_TIMELINE_POINTS)
    pts = " ".join(map("{},{}".format, ax.xs(dt), ax.ys(dp)))  # (f"{x},{y}" each, without a frame per point)
    out.append(f'<polyline class="mark power" points="{pts}"/>')
    lx = MARGIN["l"] + 10
    for k in shading.KINDS:
        out.append(f'<rect class="win {k}" x="{lx}" y="{MARGIN["t"] + 6}" width="14" height="10"/>'
                   f'<text x="{lx + 18}" y="{MARGIN["t"] + 15}" class="legend">{esc(_kind_word(k, lang))}</text>')
        lx += 90
    out.append("</svg>")
    return "".join(out)


def html_table(table_id: str, columns: Iterable[str], rows: list[dict[str, Any]], lang: str) -> str:
    """A sortable table; numbers carry data-v (the raw value) so sorting is numeric."""
    return "".join(html_table_parts(table_id, columns, rows, lang))


_TABLE_BLOCK = 2048  # rows whose cells are made at once: a day's results table is ~20 MB of text


def html_table_parts(table_id: str, columns: Iterable[str], rows: list[dict[str, Any]], lang: str) -> Iterator[str]:
    """html_table in parts, a block of rows each: only a block's cells are held at once."""
    columns = list(columns)
    head = "".join(f'<th title="{esc(c)}">{esc(label(c, lang))}</th>' for c in columns)
    yield f'<table class="data sortable" id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>'
    other = lambda c, v: _td(c, v, lang)  # noqa: E731
    for at in range(0, len(rows), _TABLE_BLOCK):
        block = rows[at:at + _TABLE_BLOCK]
        cells = table_cells(columns, block, _number_td, other)
        yield "".join(["<tr>" + "".join(row) + "</tr>" for row in zip(*cells)] if cells else ["<tr></tr>"] * len(block))
    yield "</tbody></table>"


def _number_td(v: float | int | None) -> str:
    """A number's cell (fmt_num's digits need no escaping), its value in data-v for sorting."""
    if v is None:
        return "<td></td>"
    n = float(v)
    return f'<td data-v="{n!r}">{fmt_num(v)}</td>' if math.isfinite(n) else "<td></td>"


def _td(column: str, v: Any, lang: str) -> str:
    n = finite(v, text=False)
    attr = f' data-v="{n!r}"' if n is not None else ""
    return f"<td{attr}>{esc(fmt_num(cell_value(column, v, lang)))}</td>"


def _section_table(table_id: str, columns, rows, lang: str) -> str:
    return "".join(_section_table_parts(table_id, columns, rows, lang))


def _section_table_parts(table_id: str, columns, rows, lang: str) -> Iterator[str]:
    if rows:
        yield from html_table_parts(table_id, columns, rows, lang)
    else:
        yield f"<p>{esc(t('none', lang))}</p>"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:24px;
color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
.def{background:#f3f7fb;border-left:4px solid #1f77b4;padding:8px 12px}
.sim{background:#fff3cd;border-left:4px solid #e0a800;padding:8px 12px;font-weight:bold}
.problems li{margin:4px 0}
table.data{border-collapse:collapse;font-size:12px;margin:8px 0}
table.data th,table.data td{border:1px solid #ddd;padding:3px 6px;text-align:left}
table.data td[data-v]{text-align:right}
table.data th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}
table.data th.asc::after{content:" \\25B2"}table.data th.desc::after{content:" \\25BC"}
.scroll{max-height:480px;overflow:auto}
svg.plot{background:#fff;display:block;margin:8px 0}
.frame{fill:none;stroke:#999}.grid{stroke:#eee}.tick{font-size:10px;fill:#555}.axis{font-size:12px;fill:#333}
.legend{font-size:11px;fill:#333}.pt{opacity:.75}.cross{stroke-width:2.5}.bar{stroke-width:1.5}
.front{fill:none;stroke:#d62728;stroke-width:1.5;stroke-dasharray:6 4}
.power{fill:none;stroke:#1f77b4;stroke-width:1}
.win.prefill{fill:#e6550d;opacity:.45}.win.decode{fill:#fdae6b;opacity:.3}.win.warm{fill:#999;opacity:.3}
#tip{position:absolute;display:none;background:#222;color:#fff;padding:4px 8px;border-radius:4px;font-size:12px;
pointer-events:none;max-width:480px;z-index:10}
.caption{color:#555;font-size:13px}
"""

# Errors of any kind (script errors, a blocked load, console.error) are recorded on <html data-errors>
# by JS_HEAD, which runs first; after load JS checks the page: every plot drew marks and has a size,
# every table has rows (data-report = ok | errors). Test and reader see the same page.
JS_HEAD = """
(function(){
var errs=[],root=document.documentElement;
window.__reportErrors=errs;
window.__reportNote=function(m){errs.push(String(m));root.setAttribute('data-errors',errs.join(' | '));};
window.addEventListener('error',function(e){window.__reportNote(e.message||('load failed: '+((e.target&&(e.target.src||e.target.href))||e.type)));},true);
window.addEventListener('unhandledrejection',function(e){window.__reportNote('unhandled rejection: '+e.reason);});
document.addEventListener('securitypolicyviolation',function(e){window.__reportNote('blocked '+e.blockedURI);});
var ce=console.error;console.error=function(){window.__reportNote(Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments);};
})();
"""
JS = """
(function(){
var root=document.documentElement,note=window.__reportNote,errs=window.__reportErrors;
var tip=document.getElementById('tip');
document.addEventListener('mouseover',function(e){var el=e.target.closest?e.target.closest('[data-tip]'):null;
 if(!el){tip.style.display='none';return;}tip.textContent=el.getAttribute('data-tip');tip.style.display='block';});
document.addEventListener('mousemove',function(e){tip.style.left=(e.pageX+14)+'px';tip.style.top=(e.pageY+14)+'px';});
function key(td){var v=td.getAttribute('data-v');return v===null?td.textContent:parseFloat(v);}
Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(tb){
 Array.prototype.forEach.call(tb.tHead.rows[0].cells,function(th,i){th.addEventListener('click',function(){
  var asc=!th.classList.contains('asc');Array.prototype.forEach.call(tb.tHead.rows[0].cells,function(h){h.classList.remove('asc','desc');});
  th.classList.add(asc?'asc':'desc');var rows=Array.prototype.slice.call(tb.tBodies[0].rows);
  rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);if(typeof x!==typeof y){x=String(x);y=String(y);}
   return (x<y?-1:x>y?1:0)*(asc?1:-1);});rows.forEach(function(r){tb.tBodies[0].appendChild(r);});});});});
function check(){
 var bad=[],plots=document.querySelectorAll('svg.plot'),tables=document.querySelectorAll('table.data');
 Array.prototype.forEach.call(plots,function(s){var r=s.getBoundingClientRect(),m=s.querySelectorAll('.mark');
  var drawn=Array.prototype.some.call(m,function(x){var b=x.getBBox();return b.width>0||b.height>0;});
  if(r.width<50||r.height<50||!drawn)bad.push('plot '+s.id+' not rendered');});
 Array.prototype.forEach.call(tables,function(tb){if(!tb.tBodies[0]||tb.tBodies[0].rows.length===0)bad.push('table '+tb.id+' has no rows');});
 bad.forEach(note);root.setAttribute('data-plots',plots.length);root.setAttribute('data-tables',tables.length);
 root.setAttribute('data-report',errs.length?'errors':'ok');}
if(document.readyState==='complete')check();else window.addEventListener('load',check);
})();
"""


def _groups(a) -> list[tuple[str, str | None]]:
    """(task, basis) pairs in the Pareto table, then tasks that have results but no quality at all."""
    seen = [(p["task"], p.get("quality_basis")) for p in a.pareto]
    out = list(dict.fromkeys(seen))
    for task in sorted({str(r.get("task")) for r in a.results if not r.get("suite")}):  # suites: own section
        if not any(g[0] == task for g in out):
            out.append((task, None))
    return out


def _load_section(a, colors: dict[str, str], lang: str) -> list[str]:
    """J/token vs output tokens/s over the load levels (a sweep or an open-loop batch only)."""
    rows = getattr(a, "load_curve", None)
    if not rows:
        return []
    from analyzer import load_curve
    from analyzer.report_load import load_curve_svg

    slo = load_curve.slo_text(getattr(a, "slo", None)) or t("no_slo", lang)
    out = [f'<h2 id="load-curve">{esc(t("load_curve", lang))}</h2>'
           f"<p class='caption'>{esc(t('load_curve_caption', lang, slo=slo))}</p>"]
    svg = load_curve_svg("load-curve-plot", rows, colors, lang)
    out.append(svg or f"<p>{esc(t('none', lang))}</p>")
    out.append(f"<div class='scroll'>{_section_table('load-curve-table', load_curve.PAGE_COLUMNS, rows, lang)}</div>")
    return out


def _suite_sections(a, colors: dict[str, str], lang: str) -> list[str]:
    """Per benchmark suite: accuracy against energy per item (dots: requests; crosses: models, Pareto
    front marked) and its leaderboard, with the protocol said next to the figures."""
    if not getattr(a, "suites", None):
        return []
    out = [f"<h2 id='suites'>{esc(t('suites', lang))}</h2><p class='caption'>{esc(t('suite_protocol', lang))}</p>"]
    for i, suite in enumerate(sorted({r["suite"] for r in a.suites})):
        board = [r for r in a.suites if r["suite"] == suite]
        out.append(f"<h3>{esc(t('suite', lang))}: {esc(suite)}</h3>")
        pts = [{"model": str(r.get("model")), "load": r.get("item_id"), "run": r.get("run"), "e": r["total_energy_j"],
                "q": float(bool(r.get("correct")))}
               for r in a.results if r.get("suite") == suite and r.get("ok") and r.get("correct") is not None
               and finite(r.get("total_energy_j"), text=False) is not None]
        front = [{**r, "total_energy_j_mean": r["j_per_item"], "quality_score_mean": r["accuracy"],
                  "quality_score_ci95_low": r.get("accuracy_ci95_low"),
                  "quality_score_ci95_high": r.get("accuracy_ci95_high")}
                 for r in board if r.get("j_per_item") is not None]
        if pts and front:
            out.append(scatter_svg(f"suite-scatter-{i}", pts, front, colors, lang))
        cols = [c for c in SUITE_BOARD_COLUMNS if c != "suite" and any(r.get(c) is not None for r in board)]
        out.append(html_table(f"suite-{i}", cols, board, lang))
    return out


def render_html(a, lang: str = "en", title: str | None = None) -> str:
    return "".join(html_parts(a, lang, title))


def html_parts(a, lang: str = "en", title: str | None = None) -> Iterator[str]:
    """render_html's page in parts, made as they are written: a page of a day of requests is a hundred
    MB (a timeline of each GPU, the results table), and twice that as one string once a character beyond
    Latin-1 (a dash, Chinese) is in it. Only the part being written is held."""
    models = sorted({str(r.get("model")) for r in a.results})
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    name = title or a.batch_id or "batch"
    body: list = [  # a part: its text, a function that makes it, or its pieces
                  f"<h1>{esc(t('title', lang))} — {esc(name)}</h1>",
                  f'<div class="def" id="ratio-def"><b>{esc(t("ratio_name", lang))}.</b> {t("ratio_def", lang)}'
                  f'<br><span class="caption">{esc(t("basis_def", lang))}</span></div>']
    if a.simulated:
        body.append(f'<p class="sim">⚠ {esc(t("sim_banner", lang))}</p>')
    elif not a.timelines:
        body.append(f"<p>{esc(t('no_gpu', lang))}</p>")
    body.append("<p>" + esc(requests_line(a, lang)) + "</p>")
    probs = problem_list(a, lang)
    body.append(f'<h2 id="problems">{esc(t("problems", lang))}</h2>')
    body.append('<ul class="problems">' + "".join(f"<li>{esc(p)}</li>" for p in probs) + "</ul>" if probs
                else f"<p>{esc(t('no_problems', lang))}</p>")
    notes = note_list(a, lang)
    if notes:
        body.append(f'<h2 id="notes">{esc(t("notes", lang))}</h2><ul class="notes">'
                    + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    body.extend(_suite_sections(a, colors, lang))
    task_groups = _groups(a)
    if task_groups:  # a suite-only batch has nothing here: its suites have their own section above
        body.append(f"<h2>{esc(t('per_task', lang))}</h2><p class='caption'>{esc(t('scatter_caption', lang))}</p>")
    for i, (task, basis) in enumerate(task_groups):
        head = f"{t('task', lang)}: {task}" + (f" — {t('basis', lang)}: {basis}" if basis else "")
        body.append(f"<h3>{esc(head)}</h3>")
        pts = [{"model": str(r.get("model")), "load": r.get("load"), "run": r.get("run"), "e": r["total_energy_j"],
                "q": r["quality_score"]}
               for r in a.results if str(r.get("task")) == task and r.get("ok")
               and (r.get("quality_basis") or None) == basis
               and finite(r.get("total_energy_j"), text=False) is not None
               and finite(r.get("quality_score"), text=False) is not None]
        front = [p for p in a.pareto if p["task"] == task and p.get("quality_basis") == basis]
        if pts and front:
            body.append(scatter_svg(f"scatter-{i}", pts, front, colors, lang))
            body.append(html_table(f"pareto-{i}", PARETO_COLUMNS, front, lang))
        else:
            body.append(f"<p>{esc(t('no_quality_plot', lang))}</p>")
    body.extend(_load_section(a, colors, lang))
    if a.timelines:
        body.append(f"<h2>{esc(t('timeline', lang))}{esc(t('simulated_suffix', lang)) if a.simulated else ''}</h2>"
                    f"<p class='caption'>{esc(t('timeline_caption', lang))}</p>")
        arrays = shading.window_arrays(a.windows)
        drawn: dict[tuple[float, float], str] = {}
        for i, tl in enumerate(a.timelines):
            body.append(f"<h3>{esc(tl['key'])}{' — ' + esc(tl.get('name')) if tl.get('name') else ''}"
                        f"{' (' + esc(tl['gpu_id']) + ')' if tl.get('gpu_id') else ''}</h3>")  # named by host and uuid
            # drawn when written (in order: spans and drawn are shared by the timelines)
            body.append(lambda i=i, tl=tl: timeline_svg(f"timeline-{i}", tl, a.windows, lang, arrays, drawn)
                        or f"<p>{esc(t('none', lang))}</p>")
    body.append(chain([f"<h2>{esc(t('results', lang))}</h2><p class='caption'>{esc(t('sort_hint', lang))}</p>"
                       "<div class='scroll'>"], _section_table_parts("results", RESULT_COLUMNS, a.results, lang),
                      ["</div>"]))
    body.append(f"<h2>{esc(t('stats', lang))}</h2>"
                f"<div class='scroll'>{_section_table('stats', STAT_COLUMNS, report_stats(a), lang)}</div>")
    if a.warmups:
        body.append(f"<h2>{esc(t('warmups', lang))}</h2>"
                    + _section_table("warmups", ("rid", "model", "status", "latency_s", "gpu_energy_j"), a.warmups, lang))
    csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
    yield (f'<!DOCTYPE html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
           f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{esc(t('title', lang))} — {esc(name)}</title><style>{CSS}</style><script>{JS_HEAD}</script>"
           "</head>\n<body>")
    for i, part in enumerate(body):
        if i:
            yield "\n"
        if isinstance(part, str):
            yield part
        elif callable(part):
            yield part()
        else:
            yield from part
    yield f'\n<div id="tip"></div><script>{JS}</script></body></html>\n'
