"""The scoring fixes: keywords and `def NAME` in expect.symbols, bad symbol specs refused when the
cases are loaded, no complexity mark unless the case asks, unknown tasks said as such (dry run,
assess, report Problems)."""
from __future__ import annotations

import asyncio
import json

import pytest

from analyzer.quality import QualityOptions, assess, code_checks as cc
from collector.settings import SettingsError, load_test_cases
from collector.tasks import builtin_cases
from shared.tasks import canonical_task, is_known_task, symbol_spec_problem, unknown_task_notes
from tests.conftest import free_port
from tests.test_collector_cli import run_collector
from tests.test_quality_assess import ANSWER, req

NO_BART = QualityOptions(enable_bart=False, code_timeout_s=5)
# the shared rule (tests/conftest.py): skip with the install line without bubblewrap, fail under CI=true
needs_sandbox = pytest.mark.usefixtures("sandbox_choice")

RECURSIVE = '''```python
def binary_search(arr, target, lo=0, hi=None):
    """while loops are for the weak"""  # while
    hi = len(arr) - 1 if hi is None else hi
    if lo > hi:
        return -1
    mid = (lo + hi) // 2
    return mid if arr[mid] == target else binary_search(arr, target, mid + 1, hi)
```'''


class TestSymbols:
    def test_keywords_and_def_name_are_checkable(self):
        code = cc.extract_code(ANSWER)
        assert cc.missing_symbols(code, ["def binary_search", "mid", "while"]) == []
        assert cc.missing_symbols(code, ["def is_prime", "for", "class Node|def node"]) == [
            "def is_prime", "for", "class Node|def node"]

    def test_keyword_in_a_string_or_comment_does_not_count(self):
        assert cc.missing_symbols(cc.extract_code(RECURSIVE), ["while", "def binary_search", "if"]) == ["while"]

    def test_builtin_code_expect_is_met_by_a_correct_answer(self):
        expect = cc.resolve_expect(builtin_cases(["code"], ["short"], ["en"])[0]["expect"], "")
        assert cc.missing_symbols(cc.extract_code(ANSWER, expect.entry), expect.symbols) == []

    @pytest.mark.parametrize("spec", ["O(log n)", "def 1x", "a b", "low||left", ""])
    def test_unmatchable_specs_are_refused_with_the_reason(self, spec):
        assert symbol_spec_problem(spec)
        with pytest.raises(ValueError, match="expect.symbols"):
            cc.resolve_expect({"symbols": [spec]}, "")

    def test_string_symbols_keep_def_name_whole(self):
        assert cc.resolve_expect({"symbols": "def is_prime, while, lo|low"}, "").symbols == [
            "def is_prime", "while", "lo|low"]

    def test_bad_spec_refused_at_load_time_naming_file_and_case(self, tmp_path):
        path = tmp_path / "test_cases.json"
        path.write_text(json.dumps([{"prompt": "p", "task_type": "code", "expect": {"symbols": ["def is_prime"]}},
                                    {"prompt": "q", "task_type": "code", "expect": {"symbols": ["O(n)"]}}]),
                        encoding="utf-8")
        with pytest.raises(SettingsError) as err:
            load_test_cases(path)
        assert str(path) in str(err.value) and "case [1]" in str(err.value) and "'O(n)'" in str(err.value)


@needs_sandbox
class TestCodeScore:
    def test_builtin_case_answered_right_scores_one(self):
        case = builtin_cases(["code"], ["short"], ["en"])[0]
        row = assess([req("a", "code", ANSWER, expect=case["expect"], prompt=case["prompt"])], NO_BART)["a"]
        assert row["code_symbols_missing"] == "" and row["code_tests_passed"] is True
        assert row["quality_score"] == 1.0

    def test_no_complexity_asked_no_complexity_counted(self):
        expect = {"symbols": ["def binary_search"], "entry": "binary_search",
                  "tests": "assert binary_search([1, 2], 2) == 1\n"}
        text = ANSWER.split("时间复杂度")[0]  # no complexity stated at all
        row = assess([req("a", "code", text, expect=expect)], NO_BART)["a"]
        assert row["code_mentions_complexity"] is None and row["quality_score"] == 1.0


class TestUnknownTask:
    def test_spelling_variants_are_known(self):
        assert canonical_task("knowledge-qa") == "qa" and canonical_task("Code Generation") == "code"
        assert is_known_task("suite") and is_known_task("proxy") and not is_known_task("trivia")

    def test_note_says_unknown_closest_name_and_scoring(self):
        (note,) = unknown_task_notes(["qa", "knowlege_q", "suite", "knowlege_q"])
        assert "not a known task" in note and "'knowledge_qa'" in note and "no quality_score" in note

    def test_assess_says_unknown_not_bartscore(self):
        row = assess([req("a", "trivia", "Paris.", reference="Paris is the capital.")],
                     QualityOptions(enable_bart=True, code_timeout_s=5))["a"]
        assert row["quality_score"] is None and row["bartscore_error"] is None
        assert "not a known task" in row["quality_error"]

    def test_dry_run_says_unknown_task(self, tmp_path):
        exp = tmp_path / "exp"
        exp.mkdir()
        (exp / "test_cases.json").write_text(json.dumps([{"prompt": "Capital of France?", "task_type": "trivia_qa"},
                                                         {"prompt": "Why?", "task_type": "qa"}]), encoding="utf-8")
        rc, out = asyncio.run(run_collector("--exp-dir", str(exp), "--dry-run", "--models", "m",
                                            "--base-url", f"127.0.0.1:{free_port()}"))
        assert rc == 0, out
        assert out.count("UNKNOWN TASK:") == 1 and "'trivia_qa' is not a known task" in out
