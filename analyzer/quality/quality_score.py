"""The one quality number per request (0..1) that the analyzer puts on the quality axis (pure).

- qa / summary: exp(bartscore_f) where BARTScore ran. BARTScore is an average log-likelihood per
  token (≤ 0), so this is the geometric-mean probability BART gives a token across both directions:
  monotone, in (0, 1]. Without its checkpoint: chrF / 100 (character n-gram F-score, no weights).
  An empty answer scores 0; no reference → None.
- code: the share of checks passed; with tests, the tests weigh half and the static checks (code
  found, parses, expected symbols and stated complexity, each only when the case asks for it) share the
  other half.
- creative: mean of distinct-2 and length adequacy min(1, len_tokens / target), target = the case's
  expect.min_tokens, else 100 words (en) or 150 characters (zh). Fewer than 2 tokens → distinct-2 is
  taken as 0 (no text, no diversity).
- any other task: None.
"""
from __future__ import annotations

import math

CREATIVE_TARGET_TOKENS = {"en": 100, "zh": 150}
TEST_WEIGHT = 0.5


def from_bartscore(bartscore_f: float | None, answer_empty: bool) -> float | None:
    if answer_empty:
        return 0.0
    if bartscore_f is None:
        return None
    return min(1.0, math.exp(bartscore_f))


def from_chrf(chrf: float | None) -> float | None:
    """sacrebleu's chrF is 0..100; the quality axis is 0..1."""
    if chrf is None:
        return None
    return min(1.0, max(0.0, chrf / 100.0))


def from_code_checks(found: bool, parses: bool, symbols_ok: bool | None, mentions_complexity: bool | None,
                     tests_passed: bool | None) -> float:
    """None for symbols_ok / mentions_complexity = the case did not ask for that check: it does not count."""
    static = [found, parses] + [c for c in (symbols_ok, mentions_complexity) if c is not None]
    static_share = sum(bool(c) for c in static) / len(static)
    if tests_passed is None:
        return static_share
    return TEST_WEIGHT * float(bool(tests_passed)) + (1 - TEST_WEIGHT) * static_share


def length_adequacy(len_tokens: int, target_tokens: int) -> float:
    if target_tokens <= 0:
        raise ValueError(f"target_tokens must be > 0, got {target_tokens}; fix the case's expect.min_tokens")
    return min(1.0, len_tokens / target_tokens)


def from_creative(distinct_2: float | None, len_tokens: int, target_tokens: int) -> float:
    return (float(distinct_2 or 0.0) + length_adequacy(len_tokens, target_tokens)) / 2
