"""The per-request scoring rules, each registered under its quality_basis name (pure).

A rule takes the request (task, expect, reference …) and its filled quality row and returns the
0..1 quality_score, or None when it cannot score that request. The names and their descriptions
are declared in analyzer/columns.py (BASES), so the report explains every basis that can appear.
"""
from __future__ import annotations

from typing import Callable

from analyzer import columns as COLS
from analyzer.quality import quality_score

Rule = Callable[[dict, dict], "float | None"]
SCORERS: dict[str, Rule] = {}


def register(name: str) -> Callable[[Rule], Rule]:
    if name not in COLS.BASIS_BY_NAME:
        raise ValueError(f"scorer {name!r} has no entry in analyzer.columns.BASES; declare it there first")
    if name in SCORERS:
        raise ValueError(f"scorer {name!r} is registered twice")

    def deco(fn: Rule) -> Rule:
        SCORERS[name] = fn
        return fn
    return deco


@register("bartscore")
def _bartscore(req: dict, row: dict) -> float | None:
    return quality_score.from_bartscore(row["bartscore_f"], answer_empty=False)


@register("chrf")
def _chrf(req: dict, row: dict) -> float | None:
    return quality_score.from_chrf(row["chrf"])


@register("code_checks")
def _code_checks(req: dict, row: dict) -> float | None:
    return quality_score.from_code_checks(row["code_found"], row["code_parses"], row["code_symbols_ok"],
                                          row["code_mentions_complexity"], row["code_tests_passed"])


@register("diversity")
def _diversity(req: dict, row: dict) -> float | None:
    expect = req.get("expect") or {}
    target = expect.get("min_tokens") or quality_score.CREATIVE_TARGET_TOKENS.get(row["text_lang"] or "en", 100)
    return quality_score.from_creative(row["distinct_2"], row["len_tokens"], int(target))


def score(name: str, req: dict, row: dict) -> tuple[float | None, str | None]:
    """(quality_score, basis) by the rule registered as ``name``; (None, None) when it gives none."""
    value = SCORERS[name](req, row)
    return (value, name) if value is not None else (None, None)


def _verdict(req: dict, row: dict) -> float | None:
    """1 for a right answer, 0 for a wrong one (an unanswerable one is wrong and counted)."""
    return None if row.get("correct") is None else float(bool(row["correct"]))


for _name in ("tests_passed", "exact_match", "choice_match"):
    register(_name)(_verdict)
