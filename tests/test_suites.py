"""Benchmark suites: HumanEval scored by the package's own problems and check() in the sandbox
(canonical solutions pass, broken ones fail), GSM8K and multiple-choice extraction in English and
Chinese (never raising), Wilson and pass@k against hand-computed values, the suite loaders' errors."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from analyzer.quality import QualityOptions, assess
from analyzer.quality import suite_answers as SA
from analyzer.suite_stats import pass_at_k, suite_figures, wilson
from collector.suites import SuiteError, SuiteSpec, build_cases, load_items, parse_spec, select

# the shared rule (tests/conftest.py): skip with the install line without bubblewrap, fail under CI=true
needs_sandbox = pytest.mark.usefixtures("sandbox_choice")
OPTS = QualityOptions(enable_bart=False, code_timeout_s=10)
HUMANEVAL = load_items(SuiteSpec("humaneval"))
N_CHECKED = 12  # the full 164 run in `python -m bench --only suites` (the positive control)


class TestStatistics:
    def test_wilson_hand_computed(self):
        # 8/10: centre (0.8 + 1.96²/20) / (1 + 1.96²/10) = 0.7167, half-width 0.2266
        low, high = wilson(8, 10)
        assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
        assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))  # never below 0, unlike the normal interval
        assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(0, 0) == (None, None)

    def test_pass_at_k_hand_computed(self):
        assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
        assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))  # 1 − 21/252
        assert pass_at_k(5, 0, 2) == 0.0 and pass_at_k(5, 4, 2) == 1.0
        with pytest.raises(ValueError):
            pass_at_k(3, 1, 4)

    def test_suite_figures(self):
        rows = [{"item_id": i, "correct": c, "total_energy_j": 10.0}
                for i, c in (("a", True), ("a", False), ("b", False), ("b", False))]
        figs = dict(suite_figures(rows))
        assert figs["accuracy"]["mean"] == 0.25 and figs["accuracy"]["ci95_note"] == "wilson"
        assert figs["pass@1"]["mean"] == pytest.approx(0.25) and figs["pass@2"]["mean"] == pytest.approx(0.5)
        assert figs["j_per_item"]["mean"] == 10.0 and figs["j_per_correct"]["mean"] == 40.0


class TestGsm8k:
    @pytest.mark.parametrize("text, strict, flexible", [
        ("She has 3 + 4 = 7 apples.\n#### 7", "7", "7"),
        ("The answer is $1,234.", "1234", "1234"),
        ("So the final answer is 18.00 dollars.", "18", "18"),
        ("一共是 3 + 5 = 8 个。答案是 8。", "8", "8"),
        ("答案：12 元", "12", "12"),
        ("We get 5, then 6 more makes 11.", None, "11"),
        ("No number here.", None, None),
        ("#### -3.5", "-3.5", "-3.5"),
    ])
    def test_strict_and_flexible(self, text, strict, flexible):
        assert SA.gsm8k_strict(text) == strict and SA.gsm8k_flexible(text) == flexible

    def test_target_from_the_dataset_answer(self):
        assert SA.gsm8k_target("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
        assert SA.gsm8k_target("#### 1,000") == "1000" and SA.gsm8k_target("no marker") is None


class TestChoice:
    @pytest.mark.parametrize("text, letter", [
        ("The answer is B.", "B"), ("Answer: (C)", "C"), ("answer is d", "D"), ("B", "B"), ("(A)", "A"),
        ("C. Paris is the capital.", "C"), ("答案：C", "C"), ("答案是 B。", "B"), ("选 D", "D"), ("故选A。", "A"),
        ("正确答案为（B）", "B"), ("Ｂ", "B"), ("I think option B is correct", "B"),
        ("I am not sure.", None), ("Both A and B look plausible.", None), ("E", None),
    ])
    def test_letters_in_english_and_chinese(self, text, letter):
        assert SA.extract_choice(text, 4) == letter

    def test_file_answers_as_letter_or_index(self):
        assert SA.choice_letter("b", 4) == "B" and SA.choice_letter(2, 4) == "C" and SA.choice_letter("3", 4) == "D"
        assert SA.choice_letter(4, 4) is None and SA.choice_letter(True, 4) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300), st.integers(-3, 14))
def test_extraction_never_raises(text, n_options):
    SA.gsm8k_strict(text), SA.gsm8k_flexible(text), SA.extract_choice(text, n_options)
    SA.humaneval_program("def f(x):\n    \"\"\"doc\"\"\"\n", text, "f")
    SA.choice_letter(text, n_options)


def _req(rid: str, item: dict, text: str) -> dict:
    return {"rid": rid, "task": "suite", "text": text, "thinking": None, "reference": None, "lang": "en",
            "expect": None, "prompt": "", "suite": "humaneval", "item_id": item["item_id"],
            "suite_data": {"kind": "humaneval", **item["suite_data"]}}


@needs_sandbox
class TestHumanEval:
    def test_canonical_solutions_pass_as_body_and_as_full_function(self):
        items = HUMANEVAL[:N_CHECKED]
        reqs = [_req(f"b{i}", it, it["canonical_solution"]) for i, it in enumerate(items)]
        # the same solution as a full function in a fenced block, with prose around it
        reqs += [_req(f"f{i}", it, "Here it is:\n```python\n" + it["suite_data"]["prompt"] + it["canonical_solution"]
                      + "```\nDone.") for i, it in enumerate(items)]
        rows = assess(reqs, OPTS)
        failed = {rid: r["code_tests_error"] for rid, r in rows.items() if r["correct"] is not True}
        assert not failed
        assert all(r["quality_score"] == 1.0 and r["quality_basis"] == "tests_passed" for r in rows.values())

    def test_broken_solutions_fail(self):
        items = HUMANEVAL[:N_CHECKED]
        reqs = [_req(f"n{i}", it, "    return None\n") for i, it in enumerate(items)]
        reqs += [_req("syntax", items[0], "```python\ndef has_close_elements(:\n```"),
                 _req("loop", items[1], "    while True:\n        pass\n")]
        rows = assess(reqs, QualityOptions(enable_bart=False, code_timeout_s=3))
        assert all(r["correct"] is False and r["quality_score"] == 0.0 for r in rows.values()), rows
        assert "timeout" in rows["loop"]["code_tests_error"]

    def test_thinking_is_not_scored(self):
        it = HUMANEVAL[0]
        row = assess([_req("t", it, "<think>maybe return None</think>" + it["canonical_solution"])], OPTS)["t"]
        assert row["correct"] is True


class TestLoaders:
    def test_gsm8k_choice_reference_files(self, tmp_path):
        g = tmp_path / "gsm.jsonl"
        g.write_text('{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n\n{"question": "2+2?", "answer": "#### 4"}\n',
                     encoding="utf-8")
        c = tmp_path / "mmlu.csv"
        c.write_text("question,A,B,C,D,answer\n天空是什么颜色？,红,蓝,绿,黑,B\nWhich is prime?,4,6,7,8,2\n",
                     encoding="utf-8")
        cases, record = build_cases([parse_spec(f"gsm8k={g}"), parse_spec(f"choice={c}")])
        assert [c_["suite_data"] for c_ in cases] == [
            {"kind": "gsm8k", "target": "2"}, {"kind": "gsm8k", "target": "4"},
            {"kind": "choice", "answer": "B", "n_options": 4}, {"kind": "choice", "answer": "C", "n_options": 4}]
        assert cases[2]["lang"] == "zh" and "答案" in cases[2]["prompt"] and "B. 蓝" in cases[2]["prompt"]
        assert all(c_["task"] == "suite" and c_["load"] == "all" for c_ in cases)
        assert "NOT the 5-shot log-likelihood" in record["protocol"] and record["suites"]["gsm8k:gsm"]["items"] == 2

    @pytest.mark.parametrize("content, message", [
        ('{"question": "q", "answer": "no marker"}\n', ":1: field \"answer\" must end with"),
        ('{"question": "q", "answer": "#### 1"}\nnot json\n', ":2: not a JSON object"),
        ('{"answer": "#### 1"}\n', ':1: field "question"'),
    ])
    def test_bad_rows_name_file_and_line(self, tmp_path, content, message):
        f = tmp_path / "g.jsonl"
        f.write_text(content, encoding="utf-8")
        with pytest.raises(SuiteError) as err:
            load_items(SuiteSpec("gsm8k", f))
        assert str(f) in str(err.value) and message in str(err.value)

    def test_line_numbers_are_the_files_own(self, tmp_path):
        """A raw U+2028 inside a JSON string is part of its row (not a line break), and a CSV record
        with a quoted multi-line field or after a blank line is named by the line an editor shows."""
        g = tmp_path / "g.jsonl"
        g.write_text('{"question": "a\u2028b 中文", "answer": "#### 1"}\n{"question": "q", "answer": "x"}\n',
                     encoding="utf-8")
        with pytest.raises(SuiteError) as err:
            load_items(SuiteSpec("gsm8k", g))
        assert f"{g}:2: field \"answer\" must end with" in str(err.value)
        g.write_text('{"question": "a\u2028b", "answer": "#### 1"}\n', encoding="utf-8")
        assert load_items(SuiteSpec("gsm8k", g))[0]["question"] == "a\u2028b"
        c = tmp_path / "c.csv"
        c.write_text('question,A,B,C,D,answer\n"two\nlines",1,2,3,4,B\n\n"1+1=?",1,2,3,4,E\n', encoding="utf-8")
        with pytest.raises(SuiteError) as err:
            load_items(SuiteSpec("choice", c))
        assert f"{c}:5: field \"answer\" = 'E'" in str(err.value)

    def test_unknown_suite_and_missing_file(self, tmp_path):
        with pytest.raises(SuiteError, match="unknown suite"):
            parse_spec("mmlu")
        with pytest.raises(SuiteError, match="needs its file"):
            parse_spec("gsm8k")
        with pytest.raises(SuiteError, match="cannot read"):
            load_items(parse_spec(f"gsm8k={tmp_path / 'nope.jsonl'}"))

    def test_limit_and_stable_sample(self):
        assert [x["item_id"] for x in select(HUMANEVAL, 3, None, 0)] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
        a = [x["item_id"] for x in select(HUMANEVAL, None, 5, 7)]
        assert a == [x["item_id"] for x in select(HUMANEVAL, None, 5, 7)] and len(a) == 5
        assert a != [x["item_id"] for x in select(HUMANEVAL, None, 5, 8)]
        assert a == sorted(a, key=lambda s: int(s.split("/")[1]))  # kept in file order
        assert len(HUMANEVAL) == 164

    def test_suite_entries_in_test_cases_json(self, tmp_path):
        from collector.settings import SettingsError, load_test_cases

        (tmp_path / "gsm.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n', encoding="utf-8")
        tc = tmp_path / "test_cases.json"
        tc.write_text(json.dumps([{"prompt": "Why?", "task_type": "qa"}, {"suite": "gsm8k=gsm.jsonl"},
                                  {"suite": "humaneval", "limit": 2}]), encoding="utf-8")
        cases = load_test_cases(tc)
        assert [c.get("suite") for c in cases] == [None, "gsm8k:gsm", "humaneval", "humaneval"]
        tc.write_text(json.dumps([{"suite": "gsm8k=missing.jsonl"}]), encoding="utf-8")
        with pytest.raises(SettingsError, match=r"case \[0\].*missing.jsonl"):
            load_test_cases(tc)


class TestCli:
    def test_dry_run_records_selection_and_protocol(self):
        import asyncio

        from tests.conftest import free_port
        from tests.test_collector_cli import run_collector

        rc, out = asyncio.run(run_collector("--dry-run", "--models", "m", "--base-url", f"127.0.0.1:{free_port()}",
                                            "--suite", "humaneval", "--limit", "10", "--sample", "3",
                                            "--sample-seed", "5"))
        assert rc == 0, out
        assert "plan: 3 request(s)" in out and "\ncases: suites\n" in out
        rec = json.loads(next(line for line in out.splitlines() if line.startswith("suites: "))[len("suites: "):])
        assert (rec["limit"], rec["sample"], rec["sample_seed"]) == (10, 3, 5) and "NOT the 5-shot" in rec["protocol"]
        assert rec["suites"]["humaneval"]["items"] == 3 and "raw completion" in rec["endpoint"]

    def test_dry_run_records_the_stop_sequences_and_their_override(self):
        import asyncio

        from tests.conftest import free_port
        from tests.test_collector_cli import run_collector

        def suites(*flags):
            rc, out = asyncio.run(run_collector("--dry-run", "--models", "m", "--base-url", f"127.0.0.1:{free_port()}",
                                                "--suite", "humaneval", "--limit", "1", *flags))
            assert rc == 0, out
            return json.loads(next(line for line in out.splitlines() if line.startswith("suites: "))[len("suites: "):])

        he = suites("--stop", "\\nEND")["suites"]["humaneval"]
        assert he["stop"] == {"raw completion": ["\nEND"]} and he["stop_source"] == "user"
        he = suites("--no-stop")["suites"]["humaneval"]
        assert he["stop"] == {"raw completion": []} and he["stop_source"] == "none"
        rec = suites("--backend", "openai")
        assert rec["suites"]["humaneval"]["stop"] == {"chat": ["</s>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>"]}

    def test_unknown_suite_or_bad_file_stops_before_sending(self, tmp_path):
        import asyncio

        from tests.conftest import free_port
        from tests.test_collector_cli import run_collector

        rc, out = asyncio.run(run_collector("--dry-run", "--models", "m", "--base-url", f"127.0.0.1:{free_port()}",
                                            "--suite", "mmlu"))
        assert rc != 0 and "unknown suite" in out and "plan:" not in out
        bad = tmp_path / "g.jsonl"
        bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n', encoding="utf-8")
        rc, out = asyncio.run(run_collector("--dry-run", "--models", "m", "--base-url", f"127.0.0.1:{free_port()}",
                                            "--suite", f"gsm8k={bad}"))
        assert rc != 0 and f"{bad}:2" in out and '"answer"' in out


def test_few_shot_examples_come_first(tmp_path):
    shots = tmp_path / "train.jsonl"
    shots.write_text('{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n{"question": "2+3?", "answer": "#### 5"}\n',
                     encoding="utf-8")
    test = tmp_path / "test.jsonl"
    test.write_text('{"question": "6*7?", "answer": "#### 42"}\n', encoding="utf-8")
    [case], record = build_cases([parse_spec(f"gsm8k={test}")], shots=1, shots_file=shots)
    prompt = case["prompt"]
    assert prompt.index("Question: 1+1?\nAnswer: 1+1=2\n#### 2") < prompt.index("Question: 6*7?")
    assert "2+3?" not in prompt and record["shots"] == 1
    with pytest.raises(SuiteError, match="--shots-file"):
        build_cases([parse_spec(f"gsm8k={test}")], shots=1)


def test_reference_suite_is_scored_like_qa_and_has_no_verdict(tmp_path):
    f = tmp_path / "xsum.jsonl"
    f.write_text(json.dumps({"prompt": "Summarise: the cat sat on the mat all day.", "reference": "A cat sat on a mat."})
                 + "\n", encoding="utf-8")
    [case], _ = build_cases([parse_spec(f"reference={f}")])
    req = {"rid": "r", "task": "suite", "text": "A cat sat on the mat.", "thinking": None,
           "reference": case["reference_text"], "lang": case["lang"], "expect": None, "prompt": case["prompt"],
           "suite": case["suite"], "item_id": case["item_id"], "suite_data": case["suite_data"]}
    row = assess([req], OPTS)["r"]
    assert row["quality_basis"] == "chrf" and 0 < row["quality_score"] <= 1 and row["correct"] is None
    assert row["quality_error"] is None


class TestStopSequences:
    """Each suite's stop sequences (the standard harnesses' generative conventions) never cut the text
    its scorer needs; the user can replace them or send none."""

    @staticmethod
    def _cases(tmp_path, stop=None):
        (tmp_path / "gsm.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n', encoding="utf-8")
        (tmp_path / "mc.csv").write_text("question,A,B,answer\nsky?,red,blue,B\n天空？,红,蓝,B\n", encoding="utf-8")
        specs = [parse_spec(s) for s in ("humaneval", f"gsm8k={tmp_path / 'gsm.jsonl'}", f"choice={tmp_path / 'mc.csv'}")]
        return build_cases(specs, limit=2, stop=stop)

    def test_defaults_per_suite(self, tmp_path):
        from collector.suites import END_OF_TURN, HUMANEVAL_STOP

        cases, record = self._cases(tmp_path)
        by = {(c["suite_kind"], c["lang"]): c for c in cases}
        assert by[("gsm8k", "en")]["stop"] == ["Question:", *END_OF_TURN]
        assert by[("choice", "en")]["stop"][0] == "\nAnswer the multiple choice question"
        assert by[("choice", "zh")]["stop"][0] == "\n以下是单项选择题"
        he = by[("humaneval", "en")]
        # chat-mode HumanEval: end-of-turn text only (its code block holds the def, imports, helpers)
        assert he["stop"] == list(END_OF_TURN) and he["raw_stop"] == list(HUMANEVAL_STOP)
        assert {s["stop_source"] for s in record["suites"].values()} == {"suite"}

    def test_a_stop_never_cuts_what_the_scorer_reads(self, tmp_path):
        """The answers each prompt asks for, and answers that reason first, contain no stop sequence."""
        answers = {
            "gsm8k": ["First, 1 + 1 = 2.\n\nSo the answer is 2.\n#### 2", "答案是 2"],
            "choice": ["Let me think.\n\nA. red is wrong\nB. blue\n\nThe answer is B", "答案：B", "B"],
            "humaneval": ["```python\nimport math\n\n# helper\ndef helper(x):\n    return x\n\n\n"
                          "def has_close_elements(numbers, threshold):\n    print(1)\n    return False\n```"],
        }
        cases, _ = self._cases(tmp_path)
        for case in cases:
            for answer in answers[case["suite_kind"]]:
                assert not [s for s in case["stop"] if s in answer], (case["suite"], answer)

    def test_user_stop_replaces_and_no_stop_sends_none(self, tmp_path):
        from collector.suites import parse_stop

        assert parse_stop(["\\n\\nQ:", "Z"]) == ["\n\nQ:", "Z"] and parse_stop(None) is None
        assert parse_stop(["x"], off=True) == []
        with pytest.raises(SuiteError, match="--no-stop"):
            parse_stop([""])
        cases, record = self._cases(tmp_path, stop=["\n\nQ:"])
        assert all(c["stop"] == ["\n\nQ:"] for c in cases)
        assert [c["raw_stop"] for c in cases if c.get("raw_stop")] == [["\n\nQ:"]] * 2
        assert {s["stop_source"] for s in record["suites"].values()} == {"user"}
        cases, record = self._cases(tmp_path, stop=[])
        assert all(c["stop"] == [] for c in cases) and {s["stop_source"] for s in record["suites"].values()} == {"none"}

    def test_stop_in_a_test_cases_json_suite_entry(self, tmp_path):
        from collector.settings import SettingsError, load_test_cases

        (tmp_path / "gsm.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n', encoding="utf-8")
        tc = tmp_path / "test_cases.json"
        tc.write_text(json.dumps([{"suite": "gsm8k=gsm.jsonl", "stop": ["\n\n"]}, {"suite": "gsm8k=gsm.jsonl",
                                                                                  "stop": []}]), encoding="utf-8")
        assert [c["stop"] for c in load_test_cases(tc)] == [["\n\n"], []]
        tc.write_text(json.dumps([{"suite": "gsm8k=gsm.jsonl", "stop": "Question:"}]), encoding="utf-8")
        with pytest.raises(SettingsError, match=r'case \[0\].*"stop" must be a list'):
            load_test_cases(tc)

    def test_params_send_the_chat_or_the_raw_list(self, tmp_path):
        from collector.backends import build_payload
        from collector.plan import params_for
        from collector.settings import resolve_settings

        cases, _ = self._cases(tmp_path)
        he = next(c for c in cases if c["suite_kind"] == "humaneval")
        gsm = next(c for c in cases if c["suite_kind"] == "gsm8k")
        for backend in ("ollama", "ollama-chat", "openai"):
            settings = resolve_settings({"backend": backend}, None, env={})
            p_he, p_gsm = params_for(he, settings, 1), params_for(gsm, settings, 1)
            assert p_gsm.stop == gsm["stop"]
            assert p_he.stop == (he["raw_stop"] if backend == "ollama" else he["stop"])
            body = build_payload(backend, "m", "x", p_gsm)
            assert (body["options"]["stop"] if backend.startswith("ollama") else body["stop"]) == gsm["stop"]
