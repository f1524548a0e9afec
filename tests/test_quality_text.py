"""Text metrics: thinking removal, language guess, tokens, distinct-n, repetition (pure functions)."""
from __future__ import annotations

import pytest

from analyzer.quality import text as t


class TestStripThinking:
    @pytest.mark.parametrize("raw, answer", [
        ("<think>let me think</think>Paris.", "Paris."),
        ("<think>a</think> one <think>b</think> two", "one  two"),
        ("<THINKING>x\ny</THINKING>\nAnswer", "Answer"),
        ("reasoning that lost its opener</think>\nAnswer", "Answer"),
        ("Answer first <think>then a cut-off thought", "Answer first"),
        ("no tags at all", "no tags at all"),
        (None, ""),
    ], ids=["closed", "two_blocks", "upper_thinking", "dangling_close", "dangling_open", "plain", "none"])
    def test_removes_inline_reasoning(self, raw, answer):
        """Any <think> reasoning left in the answer text is removed before scoring."""
        assert t.strip_thinking(raw) == answer


class TestDetectLang:
    def test_chinese_text_is_zh(self):
        assert t.detect_lang("二分查找的时间复杂度是 O(log n)。") == "zh"

    def test_english_text_is_en(self):
        assert t.detect_lang("Binary search runs in logarithmic time.") == "en"

    def test_no_letters_is_unknown(self):
        """Digits and punctuation alone give no language rather than a guess."""
        assert t.detect_lang("123 + 456 = 579!") is None


class TestTokens:
    def test_english_is_split_into_lowercase_words(self):
        assert t.tokens("Don't STOP, it's fine.") == ["don't", "stop", "it's", "fine"]

    def test_chinese_is_split_into_characters(self):
        assert t.tokens("北京，首都。") == ["北", "京", "首", "都"]

    def test_mixed_text_keeps_words_and_characters(self):
        assert t.tokens("复杂度 O(log n)") == ["复", "杂", "度", "o", "log", "n"]


class TestDistinctN:
    def test_counts_unique_ngrams_over_all(self):
        toks = "a b a b c".split()
        assert t.distinct_n(toks, 1) == pytest.approx(3 / 5)
        assert t.distinct_n(toks, 2) == pytest.approx(3 / 4)  # ab ba ab bc
        assert t.distinct_n(toks, 3) == pytest.approx(3 / 3)

    def test_too_short_for_n_is_not_available(self):
        """Fewer tokens than n: None (absent), never a fake 0."""
        assert t.distinct_n(["only"], 2) is None
        assert t.distinct_n([], 1) is None


class TestRepetitionRate:
    def test_looping_text_counts_tokens_inside_repeated_ngrams(self):
        toks = "a b c d a b c d a b c d".split()
        assert t.repetition_rate(toks) == pytest.approx(8 / 12)

    def test_text_without_repeats_is_zero(self):
        assert t.repetition_rate("one two three four five six".split()) == 0.0

    def test_shorter_than_n_is_not_available(self):
        assert t.repetition_rate(["a", "b", "c"]) is None


class TestTextStats:
    def test_chinese_lengths_count_characters(self):
        stats = t.text_stats("春眠不觉晓，处处闻啼鸟。")
        assert stats["len_chars"] == 12
        assert stats["len_tokens"] == 10
        assert stats["distinct_1"] == pytest.approx(9 / 10)  # 处 twice

    def test_empty_text_has_zero_length_and_no_ratios(self):
        stats = t.text_stats("")
        assert (stats["len_chars"], stats["len_tokens"]) == (0, 0)
        assert stats["distinct_1"] is None and stats["repetition_rate"] is None
