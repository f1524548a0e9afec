"""The call into analyzer.quality (written separately): inputs built here, failures contained.

The quality package imports torch/transformers lazily; it is imported here only inside
``run_quality`` so that an analysis without quality never pays for it. If the import fails or
``assess`` raises, a warning is logged and the quality columns stay empty — the rest of the
analysis still completes.
"""
from __future__ import annotations

from typing import Any, Callable

from analyzer import columns as COLS
from analyzer.i18n import Msg
from shared.logs import get_logger
from shared.tasks import canonical_task

log = get_logger("analyzer.quality_call")

# Columns the quality module may return (docs/quality.md); always present in results.csv, empty when
# absent. Declared in the column registry (source "quality").
QUALITY_COLUMNS = COLS.QUALITY
# analyzer.quality.sandbox.UNSAFE, repeated so that an analysis without quality never imports the
# package (tests/test_analyzer_cli.py runs the unsafe path end to end, so the two cannot drift apart).
UNSAFE_SANDBOX = "none (unsafe opt-in)"


def quality_inputs(requests: list[dict[str, Any]], cases: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """One input dict per finished request, as analyzer.quality.assess expects.

    ``requests`` items carry rid, task, text, thinking, prompt and case (index into
    batch.start.cases, where reference_text, lang and expect live).
    """
    cases = cases or []
    out = []
    for r in requests:
        case = r.get("case")
        c = cases[case] if isinstance(case, int) and 0 <= case < len(cases) and isinstance(cases[case], dict) else {}
        task = str(r.get("task") or c.get("task") or c.get("task_type") or "")
        out.append({
            "rid": r["rid"],
            "task": canonical_task(task),
            "text": r.get("text") or "",
            "thinking": r.get("thinking"),
            "reference": c.get("reference_text") or c.get("reference"),
            "lang": c.get("lang"),
            "expect": c.get("expect"),
            "prompt": r.get("prompt") or c.get("prompt") or "",
            # a benchmark suite's item: how it is scored (analyzer/quality/suite_answers.py)
            "suite": c.get("suite"), "item_id": c.get("item_id"), "suite_data": c.get("suite_data"),
        })
    return out


def _default_assess() -> tuple[Callable, type]:
    from analyzer.quality import QualityOptions, assess  # lazy: the heavy part lives behind it
    return assess, QualityOptions


def run_quality(inputs: list[dict[str, Any]], options: dict[str, Any] | None = None, progress: bool = False,
                assess: Callable | None = None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """``({rid: {column: value}}, problem_or_None)``. Never raises."""
    if not inputs:
        return {}, None
    try:
        if assess is None:
            assess, options_cls = _default_assess()
            opts = options_cls(**(options or {}))
        else:
            opts = options
        result = assess(inputs, opts, progress=progress)
        if not isinstance(result, dict):
            raise TypeError(f"assess returned {type(result).__name__}, expected dict[rid, dict]")
        return {str(k): dict(v) for k, v in result.items() if isinstance(v, dict)}, None
    except Exception as exc:  # the quality step must never sink the efficiency analysis
        problem = Msg("p_quality_failed", error=f"{type(exc).__name__}: {exc}")
        log.warning("quality_failed", error=str(exc), kind=type(exc).__name__,
                    fix="check analyzer.quality is installed (pip install -e '.[quality]'), or pass --no-quality")
        return {}, problem
