"""Static code checks: extraction, parsing, expected symbols, stated complexity."""
from __future__ import annotations

import pytest

from analyzer.quality import code_checks as cc

BINARY_SEARCH = """def binary_search(arr, target):
    low, high = 0, len(arr) - 1
    while low <= high:
        mid = (low + high) // 2
        if arr[mid] == target:
            return mid
        if arr[mid] < target:
            low = mid + 1
        else:
            high = mid - 1
    return -1"""


class TestExtractCode:
    def test_takes_the_python_fence(self):
        text = f"Here you go:\n```python\n{BINARY_SEARCH}\n```\nIt is O(log n)."
        assert cc.extract_code(text) == BINARY_SEARCH

    def test_takes_a_fence_without_language(self):
        assert cc.extract_code(f"```\n{BINARY_SEARCH}\n```") == BINARY_SEARCH

    def test_ignores_fences_in_other_languages(self):
        text = "```bash\npip install x\n```\n```py\nx = 1\n```"
        assert cc.extract_code(text) == "x = 1"

    def test_prefers_the_block_defining_the_entry(self):
        text = f"```python\n{BINARY_SEARCH}\n```\nUsage:\n```python\nprint(binary_search([1, 2, 3], 2)) + more + code\n```"
        assert cc.extract_code(text, entry="binary_search") == BINARY_SEARCH

    @pytest.mark.parametrize("text", ["```python\nx = 1```", "```python\nx = 1\n``` and that is it", "```python\nx = 1\n```"],
                             ids=["close_on_code_line", "prose_after_close", "own_line"])
    def test_closing_fence_anywhere(self, text):
        assert cc.extract_code(text) == "x = 1"

    def test_open_fence_cut_by_max_tokens_runs_to_the_end(self):
        text = "```python\ndef f(x):\n    return x"
        assert cc.extract_code(text) == "def f(x):\n    return x"

    def test_whole_text_when_it_is_code(self):
        assert cc.extract_code(BINARY_SEARCH + "\n") == BINARY_SEARCH

    def test_prose_is_not_code(self):
        """A single word parses as a Python expression but is not code."""
        assert cc.extract_code("Sorry") is None
        assert cc.extract_code("I cannot write that, it is O(n).") is None


class TestParses:
    def test_valid_and_invalid(self):
        assert cc.parses(BINARY_SEARCH)
        assert not cc.parses("def f(:\n  pass")
        assert not cc.parses("x = '\x00'\0")


class TestSymbols:
    def test_alternatives_any_one_suffices(self):
        code = "def bs(a, t):\n    left, right = 0, len(a)\n    mid = (left + right) // 2\n    return mid"
        assert cc.missing_symbols(code, ["mid", "low|left", "high|right"]) == []

    def test_reports_missing_specs_in_order(self):
        assert cc.missing_symbols("x = 1", ["mid", "low|left"]) == ["mid", "low|left"]

    def test_words_in_strings_and_comments_do_not_count(self):
        code = "# mid low high\ndef f():\n    return 'mid'"
        assert cc.missing_symbols(code, ["mid"]) == ["mid"]

    def test_unparsable_code_falls_back_to_words(self):
        assert cc.missing_symbols("mid = (low + high // 2", ["mid", "low", "high", "other"]) == ["other"]


class TestComplexity:
    @pytest.mark.parametrize("text", [
        "It runs in O(log n).", "Complexity: O(logn)", "O(log(n)) time", "时间复杂度为O（log n）。",
        "复杂度是 O(log_2 n)", "O(lg N) steps", "it takes logarithmic time", "时间复杂度是对数级的",
    ], ids=["spaced", "joined", "nested", "fullwidth_zh", "base2", "lg", "words_en", "words_zh"])
    def test_recognises_spellings_of_log_n(self, text):
        assert cc.mentions_complexity(text, "O(log n)")

    def test_other_complexity_is_not_log_n(self):
        assert not cc.mentions_complexity("This is O(n log n).", "O(log n)")
        assert not cc.mentions_complexity("This is O(n).", "O(log n)")

    def test_without_expectation_any_big_o_counts(self):
        assert cc.mentions_complexity("It is O(n^2).", None)
        assert not cc.mentions_complexity("It is fast.", None)


class TestResolveExpect:
    def test_binary_search_prompt_gets_the_defaults(self):
        expect = cc.resolve_expect(None, "请用 Python 实现二分查找")
        assert expect.symbols == cc.BINARY_SEARCH_EXPECT["symbols"] and expect.complexity == "O(log n)"

    def test_other_prompt_without_expect_expects_nothing(self):
        expect = cc.resolve_expect(None, "Write fizzbuzz")
        assert expect.symbols == [] and expect.complexity is None and expect.tests is None

    def test_case_fields_are_taken_as_given(self):
        expect = cc.resolve_expect({"symbols": "mid, lo|low", "entry": "bs", "tests": "assert bs([1], 1) == 0"}, "")
        assert expect.symbols == ["mid", "lo|low"] and expect.entry == "bs" and expect.tests.startswith("assert")

    @pytest.mark.parametrize("expect, field", [({"symbols": [1, 2]}, "expect.symbols"), ({"tests": 3}, "expect.tests"),
                                               (["mid"], "expect")])
    def test_bad_shape_names_the_field(self, expect, field):
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            cc.resolve_expect(expect, "")
