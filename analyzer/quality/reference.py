"""Reference metrics that need no model weights: chrF (sacrebleu) and ROUGE-L (rouge-score).

chrF works on characters, so Chinese needs no segmenter. ROUGE-L needs words: English goes through
rouge-score's own tokenizer (lower-case, letters and digits); text with Chinese in it is segmented
with jieba (its built-in dictionary ships with the package, nothing is downloaded), punctuation
dropped. The libraries are imported on first use and the scorers kept for the life of the process.
"""
from __future__ import annotations

import logging
import re
import threading

INSTALL_FIX = "pip install -e '.[quality]' (sacrebleu, rouge-score and jieba are pinned there)"

_WORD_RE = re.compile(r"\w", re.UNICODE)
_lock = threading.Lock()
_state: dict[str, object] = {}


class ReferenceMetricsUnavailable(RuntimeError):
    """sacrebleu / rouge-score / jieba could not be imported; the message names the fix."""


def _load() -> dict[str, object]:
    with _lock:
        if _state:
            return _state
        try:
            import jieba
            from rouge_score import rouge_scorer
            from sacrebleu.metrics import CHRF
        except ImportError as exc:
            raise ReferenceMetricsUnavailable(
                f"chrF / ROUGE-L need {exc.name or 'a library'} which is not installed; fix: {INSTALL_FIX}") from exc
        jieba.setLogLevel(logging.WARNING)  # its dictionary load is chatty on stderr

        class _ZhTokenizer:
            """jieba words, lower-cased, punctuation-only tokens dropped."""

            def tokenize(self, text: str) -> list[str]:
                return [w.lower() for w in jieba.lcut(text or "") if _WORD_RE.search(w)]

        _state.update(chrf=CHRF(), rouge_en=rouge_scorer.RougeScorer(["rougeL"]),
                      rouge_zh=rouge_scorer.RougeScorer(["rougeL"], tokenizer=_ZhTokenizer()))
        return _state


def available() -> str | None:
    """None when the metrics can run, else why not (with the fix)."""
    try:
        _load()
    except ReferenceMetricsUnavailable as exc:
        return str(exc)
    return None


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF (sacrebleu defaults: character 6-grams, β = 2), 0..100."""
    return float(_load()["chrf"].sentence_score(hypothesis or "", [reference or ""]).score)


def rouge_l(hypothesis: str, reference: str, lang: str | None) -> float:
    """ROUGE-L F-measure, 0..1; ``lang == 'zh'`` segments with jieba."""
    scorer = _load()["rouge_zh" if lang == "zh" else "rouge_en"]
    return float(scorer.score(reference or "", hypothesis or "")["rougeL"].fmeasure)
