"""Plain-text metrics (pure): thinking removal, language guess, tokens, distinct-n, repetition.

Tokens: every CJK character is one token (Chinese is segmented by characters); any other run of
letters/digits (apostrophes inside words kept) is one word token; punctuation and spaces are not
tokens. So ``len_tokens`` counts words in English and characters in Chinese, and mixed text gets both.
"""
from __future__ import annotations

import re

# CJK unified ideographs (+ext A), compatibility ideographs, CJK symbols are not counted as text.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:['’][^\W_{_CJK}]+)*")
_CJK_RE = re.compile(rf"[{_CJK}]")
_LETTER_RE = re.compile(rf"[^\W\d_{_CJK}]")
# Closed <think>…</think> blocks, then a dangling opener (truncated output) to the end, then a stray
# closer whose opener the server already removed (everything before it was thinking).
_THINK_BLOCK_RE = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.S | re.I)
_THINK_OPEN_RE = re.compile(r"<think(?:ing)?>.*\Z", re.S | re.I)
_THINK_CLOSE_RE = re.compile(r"\A.*?</think(?:ing)?>", re.S | re.I)

REPETITION_N = 4  # n-gram size for repetition_rate: long enough that normal prose rarely repeats one


def strip_thinking(text: str | None) -> str:
    """The answer with any inline <think>…</think> (or <thinking>) reasoning removed, stripped."""
    if not text:
        return ""
    out = _THINK_BLOCK_RE.sub("", text)
    out = _THINK_OPEN_RE.sub("", out)
    out = _THINK_CLOSE_RE.sub("", out)
    return out.strip()


def detect_lang(text: str) -> str | None:
    """'zh' when CJK characters make up at least 30% of the letters, 'en' when there are letters, else None."""
    cjk = len(_CJK_RE.findall(text or ""))
    letters = cjk + len(_LETTER_RE.findall(text or ""))
    if letters == 0:
        return None
    return "zh" if cjk / letters >= 0.3 else "en"


def tokens(text: str) -> list[str]:
    """Lower-cased tokens: CJK characters one by one, other words whole, punctuation dropped."""
    return [t.lower() for t in _TOKEN_RE.findall(text or "")]


def ngrams(toks: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]


def distinct_n(toks: list[str], n: int) -> float | None:
    """Distinct-n (Li et al., 2016): unique n-grams / all n-grams; None when the text has no n-gram."""
    grams = ngrams(toks, n)
    if not grams:
        return None
    return len(set(grams)) / len(grams)


def repetition_rate(toks: list[str], n: int = REPETITION_N) -> float | None:
    """Share of tokens that lie inside an n-gram already seen earlier in the text (0 = no loop, →1 = looping).

    None when the text is shorter than n tokens (nothing could repeat)."""
    if len(toks) < n:
        return None
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(toks)
    for i, gram in enumerate(ngrams(toks, n)):
        if gram in seen:
            for j in range(i, i + n):
                covered[j] = True
        else:
            seen.add(gram)
    return sum(covered) / len(toks)


def text_stats(text: str) -> dict:
    """len_chars, len_tokens, distinct_1/2/3, repetition_rate for one answer (thinking already removed)."""
    toks = tokens(text)
    return {
        "len_chars": len(text),
        "len_tokens": len(toks),
        "distinct_1": distinct_n(toks, 1),
        "distinct_2": distinct_n(toks, 2),
        "distinct_3": distinct_n(toks, 3),
        "repetition_rate": repetition_rate(toks),
    }
