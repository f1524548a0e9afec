"""summary/report.md: the tables and plots of one analysis in one Markdown page (pure: text out),
and the parts report.html shares with it: readable numbers and the Problems list.

Every text that is not ours (model names, rids, tasks, error texts, problems quoting them) goes through
shared.escape.md_inline here: it shows as text and never becomes HTML, a link or an image."""
from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from analyzer import columns as COLS
from analyzer.i18n import cell_value, label, suffixed, t
from analyzer.i18n import render as in_lang
from analyzer.rows import columns_of
from analyzer.tables import SUITE_BOARD_COLUMNS
from shared.escape import md_inline
from shared.numbers import finite

SIM_BANNER = ("> **⚠ SIMULATED GPU DATA.** The GPU telemetry of this batch came from the simulated source "
              "(`simulated: true` on tel.gpu). GPU power, energy, memory, utilisation and temperature below are "
              "NOT measurements; rows carry `gpu_simulated = true`.")

RESULT_COLUMNS = COLS.REPORT  # the column registry's report columns, in order
STAT_COLUMNS = ("model", "task", "load", "metric", "quality_basis", "n", "n_failed", "mean", "std", "ci95_low",
                "ci95_high", "ci95_note")
PARETO_COLUMNS = ("task", "quality_basis", "model", "n", "total_energy_j_mean", "quality_score_mean",
                  "group_quality_per_kj", "group_j_per_quality", "quality_per_kj_mean", "pareto_optimal")
REPORT_METRICS = ("latency_s", "toks_per_s", "gpu_energy_j", "total_energy_j", "quality_score", "quality_per_kj",
                  "group_quality_per_kj", "group_j_per_quality")
CONTENTION_PCT = 90.0  # mean host CPU busy share above which a request window is called contended
MAX_FAILED_LISTED = 5
FAILED_COLUMNS = ("rid", "model", "task", "status", "error_kind", "error")


def fmt_num(v: Any) -> str:
    """A number as people read it: 3 significant digits, never an exponent (1234.5 → 1,234; 0.0000342 → 0.0000342)."""
    if type(v) is float:  # most cells: no other test first
        return _fmt_float(v)
    if v is None or isinstance(v, bool):
        return "" if v is None else ("true" if v else "false")
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if not isinstance(v, float):
        return str(v)
    return _fmt_float(v)


def _fmt_float(v: float) -> str:
    if not math.isfinite(v):
        return ""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return format(v, ",.0f")
    decimals = max(0, 2 - math.floor(math.log10(a)))
    return format(v, _FIXED[decimals] if decimals < len(_FIXED) else f".{decimals}f")


_FIXED = tuple(f".{d}f" for d in range(24))  # format specs of 0 to 23 decimals, made once


def _md_cell(v: Any) -> str:
    # numbers are ours; any text may be a model's or a server's
    return fmt_num(v) if v is None or isinstance(v, (bool, int, float)) else md_inline(v)


def md_table(columns, rows: list[dict[str, Any]], lang: str = "en") -> str:
    return "".join(md_table_parts(columns, rows, lang))


MD_BLOCK = 4096  # rows of a Markdown table made at a time: a day's results table is megabytes of text


def md_table_parts(columns, rows: list[dict[str, Any]], lang: str = "en") -> Iterator[str]:
    """md_table's text a block of rows at a time (the block's cells, then its lines, never the whole table's)."""
    if not rows:
        yield t("none", lang) + "\n"
        return
    yield "| " + " | ".join(label(c, lang) for c in columns) + " |\n|" + "---|" * len(columns) + "\n"
    for lo in range(0, len(rows), MD_BLOCK):
        block = rows[lo:lo + MD_BLOCK]
        cells = table_cells(columns, block, fmt_num, lambda c, v: _md_cell(cell_value(c, v, lang)))
        yield "\n".join(["| " + " | ".join(row) + " |" for row in zip(*cells)] if cells else ["|  |" for _ in block]) + "\n"


NUMBER_TYPES = {float, int, type(None)}  # a column of these: number() each, nothing to escape


def table_cells(columns, rows: list[dict[str, Any]], number: Callable[[Any], str],
                other: Callable[[str, Any], str]) -> list[list[str]]:
    """A table's cells, a column at a time: numbers (and None) as ``number(v)``, any other value as
    ``other(column, v)``, made once per column and value for text and flags (a model or a status
    repeats on every row)."""
    seen: dict[tuple, str] = {}

    def cell(c: str, v: Any) -> str:
        kind = type(v)
        if kind is float or kind is int or v is None:
            return number(v)
        try:
            return seen[(c, kind, v)]
        except (KeyError, TypeError):  # not seen yet, or not hashable
            got = other(c, v)
            if kind is str or kind is bool:
                seen[(c, kind, v)] = got
            return got

    return [list(map(number, values)) if set(map(type, values)) <= NUMBER_TYPES else [cell(c, v) for v in values]
            for c, values in zip(columns, columns_of(rows, list(columns)))]



def _why_no_quality(quality_error: Any, task: Any, lang: str) -> str:
    if quality_error:
        return str(quality_error)
    if task in ("qa", "summary"):
        return t("p_no_reference", lang)
    return t("p_no_reason", lang)


# the results' columns the Problems list reads (a column at a time: it is made for each report and language)
_PROBLEM_COLUMNS = ("status", "quality_basis", "bartscore_error", "bartscore_model", "quality_score", "task",
                    "quality_error", "total_energy_j", "cpu_util_avg", "prompt_cached_tokens")


_PROBLEM_BLOCK = 1 << 14  # rows read at once (a week's ten columns as Python values were ~50 MiB)


class _Tally:
    """What problem_list says of the results' rows, counted a block of rows at a time."""

    def __init__(self, quality_ran: bool, lang: str):
        self.quality_ran, self.lang = quality_ran, lang
        self.ok = self.fallback = self.missing_e = self.busy = self.failed = self.cached = self.tokens = 0
        self.fallback_why: Any = None
        self.checkpoints: set[str] = set()
        self.missing_q: Counter = Counter()
        self.failed_rows: list = []  # the first MAX_FAILED_LISTED

    def add(self, rows) -> None:
        col = dict(zip(_PROBLEM_COLUMNS, columns_of(rows, list(_PROBLEM_COLUMNS))))
        status, basis, task, score = col["status"], col["quality_basis"], col["task"], col["quality_score"]
        bart_error, bart_model, energy, cpu = col["bartscore_error"], col["bartscore_model"], \
            col["total_energy_j"], col["cpu_util_avg"]
        for i, s in enumerate(status):
            if s == "failed":
                self.failed += 1
                if len(self.failed_rows) < MAX_FAILED_LISTED:
                    self.failed_rows.append(rows[i])
            if s != "ok":
                continue
            self.ok += 1
            if basis[i] == "chrf" and bart_error[i]:
                self.fallback += 1
                if self.fallback == 1:  # (the first one's words stand for all)
                    self.fallback_why = bart_error[i]
                if bart_model[i]:
                    self.checkpoints.add(str(bart_model[i]))
            if self.quality_ran and finite(score[i], text=False) is None \
                    and task[i] in ("qa", "summary", "code", "creative"):
                self.missing_q[_why_no_quality(col["quality_error"][i], task[i], self.lang)] += 1
            if finite(energy[i], text=False) is None:
                self.missing_e += 1
            if (finite(cpu[i], text=False) or 0.0) >= CONTENTION_PCT:
                self.busy += 1
        cached = [v for v in col["prompt_cached_tokens"] if (finite(v, text=False) or 0) > 0]
        self.cached += len(cached)
        self.tokens = sum(cached, self.tokens)


def problem_list(a, lang: str = "en") -> list[str]:
    """Why a figure is missing or doubtful, one plain-text line each (the caller escapes for HTML)."""
    out: list[str] = []
    n = _Tally(a.quality_ran, lang)
    for lo in range(0, len(a.results), _PROBLEM_BLOCK):
        n.add(a.results[lo:lo + _PROBLEM_BLOCK])
    out += [in_lang(p, lang) for p in a.problems if getattr(p, "key", None) == "p_fallback"]  # first: what ran
    if n.fallback:
        out.append(t("p_bart_unavailable", lang, n=n.fallback, why=n.fallback_why,
                     checkpoints=", ".join(sorted(n.checkpoints)) or "?"))
    for why, k in n.missing_q.most_common():
        out.append(t("p_quality_missing", lang, n=k, why=why))
    if n.missing_e:
        out.append(t("p_energy_missing", lang, n=n.missing_e))
    skipped = a.batch_end.skipped if a.batch_end is not None else None
    if isinstance(skipped, int) and skipped > 0:
        out.append(t("p_skipped", lang, n=skipped))
    if n.failed:
        what = "; ".join(f"{r.get('model')}/{r.get('task')}/{r.get('load')}#{r.get('run')}: "
                         f"{str(r.get('error') or '')[:160]}" for r in n.failed_rows)
        out.append(t("p_failed", lang, n=n.failed, what=what + (" …" if n.failed > MAX_FAILED_LISTED else "")))
    if a.simulated:
        out.append(t("p_simulated", lang))
    if n.busy:
        out.append(t("p_contention", lang, n=n.busy, total=n.ok, pct=f"{CONTENTION_PCT:g}"))
    if n.cached:
        out.append(t("p_cache", lang, n=n.cached, tokens=int(n.tokens)))
    out += [in_lang(p, lang) for p in a.problems if getattr(p, "key", None) != "p_fallback"]
    return out


def note_list(a, lang: str = "en") -> list[str]:
    """What the analysis did (clock mapping, skipped steps), in ``lang``: shown apart from Problems."""
    return [in_lang(n, lang) for n in getattr(a, "notes", [])]


def report_stats(a) -> list[dict[str, Any]]:
    return [s for s in a.stats if s["metric"] in REPORT_METRICS]


def requests_line(a, lang: str = "en") -> str:
    """The line counting the requests by status and the warm-ups (report.md's and report.html's)."""
    by = Counter(r.get("status") for r in a.results)
    return t("requests_line", lang, n=len(a.results), ok=by["ok"], failed=by["failed"], inc=by["incomplete"],
             warm=len(a.warmups))


def render(analysis, plot_files: list[str], title: str | None = None, lang: str = "en") -> str:
    """Markdown text; ``plot_files`` are paths relative to the summary directory."""
    return "".join(render_parts(analysis, plot_files, title, lang))


def render_parts(analysis, plot_files: list[str], title: str | None = None, lang: str = "en") -> Iterator[str]:
    """render's text in pieces as they are written, the results table a block of rows at a time."""
    for k, part in enumerate(_sections(analysis, plot_files, title, lang)):
        if k:
            yield "\n"
        if isinstance(part, str):
            yield part
        else:
            yield from part


def _sections(analysis, plot_files: list[str], title: str | None, lang: str) -> list[str | Iterable[str]]:
    a = analysis
    parts: list[str | Iterable[str]] = [f"# {t('title', lang)} — {md_inline(title or a.batch_id or 'batch')}\n",
             f"**{t('ratio_name', lang)}.** " + t("ratio_def", lang).replace("<b>", "**").replace("</b>", "**")
             + "\n\n" + t("basis_def", lang) + "\n\n" + t("html_note", lang, file=suffixed("report.html", lang)) + "\n"]
    if a.simulated:
        parts.append((SIM_BANNER if lang == "en" else f"> **⚠ {t('sim_banner', lang)}**") + "\n")
    elif not a.timelines:
        parts.append(f"> {t('no_gpu', lang)}\n")
    parts.append(requests_line(a, lang) + "\n")
    probs = problem_list(a, lang)
    parts.append(f"## {t('problems', lang)}\n\n" + ("\n".join(f"- {md_inline(p)}" for p in probs) if probs
                                                     else t("no_problems", lang)) + "\n")
    notes = note_list(a, lang)
    if notes:
        parts.append(f"## {t('notes', lang)}\n\n" + "\n".join(f"- {md_inline(n)}" for n in notes) + "\n")
    low = [r for r in a.results if isinstance(r.get("gpu_coverage"), float) and r["gpu_coverage"] < 0.99]
    if low:
        parts.append(f"## {t('low_coverage', lang)}\n\n"
                     + md_table(("rid", "gpu_coverage", "gpu_seq_gaps", "gpu_energy_j"), low, lang))
    if getattr(a, "suites", None):
        parts.append(f"## {t('suites', lang)}\n\n{md_inline(t('suite_protocol', lang))}\n\n"
                     + md_table(SUITE_BOARD_COLUMNS, a.suites, lang))
    if a.pareto or any(not r.get("suite") for r in a.results):  # suite-only: the suites' section is all there is
        parts.append(f"## {t('pareto', lang)}\n\n" + md_table(PARETO_COLUMNS, a.pareto, lang))
    if getattr(a, "load_curve", None):
        from analyzer import load_curve
        slo = load_curve.slo_text(getattr(a, "slo", None)) or t("no_slo", lang)
        parts.append(f"## {t('load_curve', lang)}\n\n{t('load_curve_caption', lang, slo=md_inline(slo))}\n\n"
                     + md_table(load_curve.PAGE_COLUMNS, a.load_curve, lang))
    parts.append(itertools.chain([f"## {t('results', lang)}\n\n"], md_table_parts(RESULT_COLUMNS, a.results, lang)))
    failed = [r for r in a.results if r.get("status") != "ok"]
    if failed:  # the server's or the collector's own words, escaped like every other cell
        parts.append(f"## {t('failed_table', lang)}\n\n" + md_table(FAILED_COLUMNS, failed, lang))
    parts.append(f"## {t('stats', lang)}\n\n" + md_table(STAT_COLUMNS, report_stats(a), lang))
    if a.warmups:
        parts.append(f"## {t('warmups', lang)}\n\n"
                     + md_table(("rid", "model", "status", "latency_s", "gpu_energy_j"), a.warmups, lang))
    if plot_files:
        sim = t("simulated_suffix", lang) if a.simulated else ""
        # Plot names are ours (shared.escape.safe_filename); <…> keeps any odd character inside the link.
        parts.append(f"## {t('plots', lang)}{sim}\n\n" + "\n".join(f"![{md_inline(p)}](<{p}>)" for p in plot_files)
                     + "\n")
    return parts
