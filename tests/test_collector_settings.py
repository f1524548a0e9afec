"""config.py (read as data), test_cases.json (seed format), built-in tasks and the request matrix."""
import json

import pytest

from collector.plan import (case_models, finished_keys, make_rid, missing_models, model_id, params_for,
                            plan_jobs)
from collector.settings import (SettingsError, case_hash, load_test_cases, read_config_py, resolve_settings)
from collector.tasks import builtin_cases
from shared.tasks import TASK_ALIASES

SEED_CASES = [
    {"model": ["deepseek-r1:8b", "gemma3:4b"], "prompt": "请解释牛顿第一定律。", "task_type": "knowledge_qa",
     "reference_text": "牛顿第一定律，也称为惯性定律...", "max_tokens": 200, "temperature": 0.7},
    {"model": "all", "prompt": "写一段关于人工智能的短文。", "task_type": "creative_writing", "max_tokens": 300,
     "temperature": 0.8},
]

SEED_CONFIG = 'TEMPERATURE = 0.7\nTOP_P = 0.9\nNUM_CTX = 4096\nSEED = 1234\nKEEPALIVE = "0s"\nWARMUP = True\nRUNS = 1\n'


class TestConfigPy:
    def test_seed_example_is_read_with_lines(self, tmp_path):
        f = tmp_path / "config.py"
        f.write_text('"""batch overrides"""\n' + SEED_CONFIG, encoding="utf-8")
        cfg = read_config_py(f)
        assert cfg["temperature"] == (0.7, 2) and cfg["num_ctx"] == (4096, 4) and cfg["keep_alive"] == ("0s", 6)
        assert cfg["warmup"] == (True, 7) and cfg["runs"] == (1, 8)

    @pytest.mark.parametrize("src,needle", [
        ("import os\nRUNS = 1\n", ":1: Import statement is not allowed"),
        ("RUNS = int('3')\n", ":1: RUNS must be a literal"),
        ("RUNS = 0\n", ":1: runs = 0 is invalid; expected a positive integer"),
        ("TEMPERATURE = 'hot'\n", ":1: temperature = 'hot' is invalid"),
        ("A, B = 1, 2\n", ":1: only `NAME = literal` assignments"),
        ("RUNS = (\n", ":1: syntax error"),
        ("open('x', 'w').write('pwned')\n", ":1: Expr statement is not allowed"),
    ])
    def test_anything_but_literal_assignments_is_a_clear_error(self, tmp_path, src, needle):
        f = tmp_path / "config.py"
        f.write_text(src, encoding="utf-8")
        with pytest.raises(SettingsError) as exc:
            read_config_py(f)
        assert str(f) in str(exc.value) and needle in str(exc.value)
        assert not (tmp_path / "x").exists()

    def test_unknown_names_are_warned_not_fatal(self, tmp_path):
        f = tmp_path / "config.py"
        f.write_text("FOO = 1\nRUNS = 2\n", encoding="utf-8")
        seen = []
        cfg = read_config_py(f, warn=lambda event, **kw: seen.append((event, kw["name"])))
        assert cfg == {"runs": (2, 2)} and seen == [("config_py_unknown_name", "FOO")]


class TestResolve:
    def test_every_value_has_its_source(self, tmp_path):
        f = tmp_path / "config.py"
        f.write_text(SEED_CONFIG, encoding="utf-8")
        s = resolve_settings({"runs": 3, "max_tokens": None}, read_config_py(f))
        assert s["runs"] == {"value": 3, "source": "cli"}
        assert s["temperature"]["source"] == "config.py" and s["temperature"]["line"] == 1
        assert s["max_tokens"] == {"value": 256, "source": "default"}

    def test_bad_cli_value_names_the_flag(self):
        with pytest.raises(SettingsError, match="--max-tokens: max_tokens = -1"):
            resolve_settings({"max_tokens": -1}, None)


class TestTestCases:
    def test_seed_example_normalised(self, tmp_path):
        f = tmp_path / "test_cases.json"
        f.write_text(json.dumps(SEED_CASES, ensure_ascii=False), encoding="utf-8")
        cases = load_test_cases(f)
        assert [c["task"] for c in cases] == ["qa", "creative"]
        assert [c["task_type"] for c in cases] == ["knowledge_qa", "creative_writing"]
        assert cases[0]["models"] == ["deepseek-r1:8b", "gemma3:4b"] and cases[1]["models"] == "all"
        assert cases[0]["lang"] == "zh" and cases[0]["load"] == "short"
        assert cases[0]["max_tokens"] == 200 and cases[0]["sources"]["max_tokens"] == "test_cases.json"
        assert cases[0]["reference_text"].startswith("牛顿")

    @pytest.mark.parametrize("case,needle", [
        ({"task_type": "qa"}, 'case [1]: field "prompt"'),
        ({"prompt": "x", "task_type": "poetry / haiku"}, 'case [1]: field "task_type" = \'poetry / haiku\': give a name'),
        ({"prompt": "x"}, 'case [1]: field "task_type" = None'),
        ({"prompt": "x", "task_type": "qa", "max_tokens": "many"}, 'case [1]: field "max_tokens"'),
        ({"prompt": "x", "task_type": "qa", "model": 3}, 'case [1]: field "model"'),
        ({"prompt": "x", "task_type": "qa", "load": "huge"}, 'case [1]: field "load"'),
    ])
    def test_bad_field_names_file_index_and_field(self, tmp_path, case, needle):
        f = tmp_path / "test_cases.json"
        f.write_text(json.dumps([SEED_CASES[0], case], ensure_ascii=False), encoding="utf-8")
        with pytest.raises(SettingsError) as exc:
            load_test_cases(f)
        assert str(f) in str(exc.value) and needle in str(exc.value)

    def test_task_types_beyond_the_four_are_accepted(self, tmp_path):
        """Observed: rejected. Now any task name runs (quality: text statistics); seed names still map."""
        f = tmp_path / "test_cases.json"
        f.write_text(json.dumps([{"prompt": "Translate: hello", "task_type": "translation"},
                                 {"prompt": "x", "task_type": "Knowledge_QA"}]), encoding="utf-8")
        assert [c["task"] for c in load_test_cases(f)] == ["translation", "qa"]

    def test_invalid_json_names_line_and_column(self, tmp_path):
        f = tmp_path / "test_cases.json"
        f.write_text('[\n  {"prompt" "x"}\n]', encoding="utf-8")
        with pytest.raises(SettingsError, match=r"test_cases.json:2:\d+: not valid JSON"):
            load_test_cases(f)


class TestHandWritten:
    """Files written in Notepad: the message names file, line and fix, every problem at once."""

    def test_comments_and_trailing_commas_are_named_at_their_lines(self, tmp_path):
        f = tmp_path / "test_cases.json"
        f.write_text('[\n  // the first case\n  {"prompt": "x // not a comment", "task_type": "qa",},\n'
                     '  /* old */ {"prompt": "y", "task_type": "qa"},\n]\n', encoding="utf-8")
        with pytest.raises(SettingsError) as exc:
            load_test_cases(f)
        msg = str(exc.value)
        assert f"{f}: 4 problems" in msg
        assert f"{f}:2: JSON allows no comments" in msg and f"{f}:4: JSON allows no comments" in msg
        assert f"{f}:3: trailing comma before '}}'" in msg and f"{f}:4: trailing comma before ']'" in msg
        assert exc.value.file == f  # a file --use-default-on-error could replace

    def test_full_width_punctuation_from_a_chinese_keyboard(self, tmp_path):
        f = tmp_path / "test_cases.json"
        f.write_text('[{"prompt": "你好，世界", "task_type"： "qa"}]', encoding="utf-8")
        with pytest.raises(SettingsError, match=r"test_cases.json:1: full-width '：'.*ASCII ':'"):
            load_test_cases(f)

    def test_gbk_file_from_notepad_is_read_and_its_encoding_reported(self, tmp_path):
        f = tmp_path / "test_cases.json"
        f.write_bytes(json.dumps(SEED_CASES, ensure_ascii=False).encode("gbk"))
        info = {}
        cases = load_test_cases(f, info=info)
        assert info["encoding"] == "gbk" and cases[0]["prompt"] == "请解释牛顿第一定律。"
        assert info["sample"].startswith("line 1: [{\"model\"")  # a line with Chinese, to check by eye
        c = tmp_path / "config.py"
        c.write_bytes("# 温度\nTEMPERATURE = 0.5\n".encode("gbk"))
        assert read_config_py(c, info=info) == {"temperature": (0.5, 2)} and info["encoding"] == "gbk"

    def test_utf16_from_notepad_unicode_is_read(self, tmp_path):
        f = tmp_path / "test_cases.json"
        f.write_bytes(json.dumps(SEED_CASES, ensure_ascii=False).encode("utf-16"))
        info = {}
        assert load_test_cases(f, info=info)[1]["prompt"].startswith("写一段") and info["encoding"] == "utf-16"

    def test_bytes_neither_utf8_nor_gbk_name_the_line_and_how_to_save(self, tmp_path):
        f = tmp_path / "test_cases.json"
        f.write_bytes(b'[\n{"prompt": "\xff\xff", "task_type": "qa"}]')
        with pytest.raises(SettingsError) as exc:
            load_test_cases(f)
        assert f"{f}:2: not UTF-8 text (byte 0xff) and not GBK" in str(exc.value)
        assert 'Encoding "UTF-8"' in str(exc.value)

    def test_misspelled_keys_name_the_nearest_and_all_errors_come_at_once(self, tmp_path):
        f = tmp_path / "test_cases.json"
        f.write_text(json.dumps([
            {"prompt": "Why?", "task_type": "qa", "refrence_text": "Because."},
            {"promt": "How?", "task_type": "qa"},
            {"prompt": "x", "task_type": "qa", "max_tokens": 0, "tempreature": 0.5, "note": "mine", "owner": "li"},
        ], indent=1), encoding="utf-8")
        seen = []
        with pytest.raises(SettingsError) as exc:
            load_test_cases(f, warn=lambda event, **kw: seen.append((event, kw["field"])))
        msg = str(exc.value)
        lines = f.read_text(encoding="utf-8").splitlines()
        ref_line = next(i + 1 for i, x in enumerate(lines) if "refrence_text" in x)
        assert f'{f}:{ref_line}: case [0]: unknown field "refrence_text"; did you mean "reference_text"?' in msg
        assert 'case [1]: unknown field "promt"; did you mean "prompt"?' in msg
        assert 'field "prompt" must be' not in msg  # the typo is the problem, said once
        assert 'case [2]: unknown field "tempreature"; did you mean "temperature"?' in msg
        assert 'case [2]: field "max_tokens": max_tokens = 0 is invalid' in msg
        assert f"{f}: 4 problems" in msg
        assert seen == [("case_unknown_field", "owner")]  # far from every field: warned, not refused; notes are fine

    def test_config_py_typos_and_every_error_at_once(self, tmp_path):
        f = tmp_path / "config.py"
        f.write_text("TEMPERATUR = 0.5\nRUNS = 0\nimport os\nMY_NOTE = 1\n", encoding="utf-8")
        with pytest.raises(SettingsError) as exc:
            read_config_py(f, warn=lambda *a, **k: None)
        msg = str(exc.value)
        assert f"{f}:1: unknown name TEMPERATUR; did you mean TEMPERATURE?" in msg
        assert f"{f}:2: runs = 0 is invalid" in msg and f"{f}:3: Import statement" in msg and "3 problems" in msg

    def test_chinese_task_names_are_names(self, tmp_path):
        f = tmp_path / "test_cases.json"
        f.write_text(json.dumps([{"prompt": "把 hello 翻译成中文", "task_type": "翻译"},
                                 {"prompt": "x", "task_type": "日本語_要約-2"}], ensure_ascii=False), encoding="utf-8")
        cases = load_test_cases(f)
        assert [c["task"] for c in cases] == ["翻译", "日本語_要約-2"]
        rid = make_rid("B", "m:1b", 0, cases[0]["task"], cases[0]["load"], 1)
        from shared.batch import BatchDir
        assert BatchDir(tmp_path).text_file(rid).name == "B_m_1b_000-翻译_short_1.txt"  # legal on Windows too
        f.write_text(json.dumps([{"prompt": "x", "task_type": "翻译 / 中文"}], ensure_ascii=False), encoding="utf-8")
        with pytest.raises(SettingsError, match=r'letters \(any script, e\.g\. 翻译\), digits.*without spaces or "/"'):
            load_test_cases(f)

    def test_cpu_tdp_w_from_config_py_then_env(self, tmp_path):
        f = tmp_path / "config.py"
        f.write_text("CPU_TDP_W = 95\n", encoding="utf-8")
        s = resolve_settings({}, read_config_py(f), env={"CPU_TDP_W": "45"})
        assert s["cpu_tdp_w"] == {"value": 95.0, "source": "config.py", "line": 1}
        assert resolve_settings({}, None, env={"CPU_TDP_W": "45"})["cpu_tdp_w"] == {"value": 45.0,
                                                                                    "source": "env CPU_TDP_W"}
        assert resolve_settings({"cpu_tdp_w": 30}, read_config_py(f))["cpu_tdp_w"]["source"] == "cli"
        assert resolve_settings({}, None, env={})["cpu_tdp_w"]["value"] is None
        with pytest.raises(SettingsError, match="environment CPU_TDP_W: cpu_tdp_w = 'hot' is invalid"):
            resolve_settings({}, None, env={"CPU_TDP_W": "hot"})


class TestBuiltinTasks:
    def test_matrix_covers_tasks_loads_and_both_languages(self):
        cases = builtin_cases()
        assert len(cases) == 4 * 3 * 2
        assert {(c["task"], c["load"], c["lang"]) for c in cases} == {
            (t, l, g) for t in ("qa", "summary", "code", "creative") for l in ("short", "medium", "long")
            for g in ("en", "zh")}
        for c in cases:
            if c["task"] in ("qa", "summary"):
                assert c["reference_text"]
            if c["task"] == "code":
                assert c["expect"]["entry"] == "binary_search" and c["expect"]["complexity"] == "O(log n)"
                assert "assert binary_search(" in c["expect"]["tests"]

    def test_loads_grow(self):
        for lang in ("en", "zh"):
            for task in ("qa", "summary", "code"):
                lens = [len(c["prompt"]) for c in builtin_cases([task], ["short", "medium", "long"], [lang])]
                assert lens == sorted(lens) and lens[0] < lens[2]

    def test_code_tests_pass_on_a_correct_solution(self):
        """The shipped asserts are right: a reference binary search passes them all."""
        def binary_search(arr, target):
            lo, hi = 0, len(arr)
            while lo < hi:
                mid = (lo + hi) // 2
                if arr[mid] < target:
                    lo = mid + 1
                else:
                    hi = mid
            return lo if lo < len(arr) and arr[lo] == target else -1
        for c in builtin_cases(["code"]):
            exec(c["expect"]["tests"], {"binary_search": binary_search})

    def test_seed_task_names_map_to_canonical(self):
        assert TASK_ALIASES["knowledge_qa"] == "qa" and TASK_ALIASES["summarization"] == "summary"
        assert TASK_ALIASES["code_generation"] == "code" and TASK_ALIASES["creative_writing"] == "creative"

    def test_unknown_task_rejected(self):
        with pytest.raises(ValueError, match="unknown task"):
            builtin_cases(["poetry"])


class TestPlan:
    def test_rids_are_deterministic_and_unique(self):
        cases = builtin_cases(["qa"], ["short"])
        per_case = [["a", "b:7b"]] * len(cases)
        jobs = plan_jobs("B", cases, per_case, runs=2)
        assert len(jobs) == 2 * len(cases) * 2 and len({j.rid for j in jobs}) == len(jobs)
        assert jobs == plan_jobs("B", cases, per_case, runs=2)
        assert jobs[0].rid == make_rid("B", "a", 0, "qa", "short", 1) == "B/a/000-qa/short/1"
        assert [j.model for j in jobs[:4]] == ["a"] * 4  # model-major

    def test_case_models_all_and_cli_override(self):
        case = {"models": "all"}
        assert case_models(case, ["x"], False, ["m1:7b", "m2:latest"]) == ["m1:7b", "m2:latest"]
        assert case_models(case, ["x"], True, ["m1:7b", "m2:latest"]) == ["x:latest"]
        assert case_models({}, ["all", "m3"], False, ["m1:latest"]) == ["m1:latest", "m3:latest"]

    def test_one_identity_per_ollama_model(self):
        """Observed: ["ok"] plus "all" ran ok and ok:latest as two models. Now one, everywhere."""
        assert case_models({}, ["ok", "all"], False, ["ok:latest", "think:latest"]) == ["ok:latest", "think:latest"]
        assert model_id("library/qwen3", "ollama") == "library/qwen3:latest"
        assert model_id("qwen3:8b", "ollama-chat") == "qwen3:8b"
        assert model_id("gpt-4o", "openai") == "gpt-4o"  # OpenAI-compatible names are taken as they are
        assert missing_models(["ok:latest", "nope:latest"], ["ok"], "ollama") == ["nope:latest"]

    def test_finished_keys_only_ok_ends_by_content_not_directory(self):
        """A request is identified by (model, case content, load, run): renaming the batch changes nothing."""
        start = {"model": "m", "case_hash": "h1", "load": "short", "run": 1}
        msgs = [("req.start", {"rid": "old-name/m/000-qa/short/1", **start}),
                ("req.end", {"rid": "old-name/m/000-qa/short/1", "ok": True}),
                ("req.start", {"rid": "old-name/m/000-qa/short/2", **start, "run": 2}),
                ("req.end", {"rid": "old-name/m/000-qa/short/2", "ok": False}),
                ("req.start", {"rid": "old-name/m/warmup/-/0", **start, "run": 0, "warmup": True}),
                ("req.end", {"rid": "old-name/m/warmup/-/0", "ok": True})]
        assert finished_keys(msgs, "ollama") == {("m:latest", "h1", "short", 1, None)}

    def test_params_precedence_cli_case_config(self, tmp_path):
        f = tmp_path / "config.py"
        f.write_text("MAX_TOKENS = 100\nTEMPERATURE = 0.5\nKEEPALIVE = '5m'\n", encoding="utf-8")
        settings = resolve_settings({"temperature": 0.1}, read_config_py(f))
        p = params_for({"max_tokens": 50, "temperature": 0.9, "options": {"top_k": 5}}, settings)
        assert p.max_tokens == 50 and p.temperature == 0.1 and p.keep_alive == "5m" and p.options == {"top_k": 5}
        assert params_for({}, settings).max_tokens == 100

    def test_case_hash_stable_and_prompt_sensitive(self):
        a = {"task": "qa", "load": "short", "lang": "en", "prompt": "x"}
        assert case_hash(a) == case_hash(dict(a)) and case_hash(a) != case_hash({**a, "prompt": "y"})


class TestLoadSettings:
    """--sweep, --request-rate, --goodput (collector.settings / collector.load)."""

    def test_sweep_and_goodput_are_parsed_and_checked(self):
        from collector import load as L
        s = resolve_settings({"sweep": "concurrency=1,2,4", "goodput": ["ttft:500", "e2el:10000"]}, None)
        assert s["sweep"]["value"] == {"kind": "concurrency", "levels": [1, 2, 4]}
        assert s["goodput"]["value"] == {"ttft": 500.0, "e2el": 10000.0}
        assert [lv.label for lv in L.levels(s)] == ["c1", "c2", "c4"]
        rate = resolve_settings({"sweep": "rate=0.5,2"}, None)["sweep"]["value"]
        assert rate == {"kind": "rate", "levels": [0.5, 2.0]}
        for bad, why in (("concurrency=1.5", "whole numbers"), ("qps=1,2", "concurrency or rate"),
                         ("rate=1,1", "each level once"), ("rate=0", "> 0"), ("rate", "KIND=")):
            with pytest.raises(SettingsError, match=why):
                resolve_settings({"sweep": bad}, None)
        with pytest.raises(SettingsError, match=r"--goodput.*unknown: itl"):
            resolve_settings({"goodput": ["itl:5"]}, None)
        with pytest.raises(SettingsError, match=r"--cooldown-s"):
            resolve_settings({"cooldown_s": -1}, None)

    def test_config_py_sets_a_sweep(self, tmp_path):
        f = tmp_path / "config.py"
        f.write_text('SWEEP = "rate=1,2"\nMAX_CONCURRENCY = 8\nGOODPUT = {"ttft": 300}\n', encoding="utf-8")
        s = resolve_settings({}, read_config_py(f))
        assert s["sweep"] == {"value": {"kind": "rate", "levels": [1.0, 2.0]}, "source": "config.py", "line": 1}
        assert s["max_concurrency"]["value"] == 8 and s["goodput"]["value"] == {"ttft": 300.0}

    def test_default_is_the_seed_serial_run(self):
        from collector import load as L
        s = resolve_settings({}, None)
        assert L.levels(s) == [L.Level("concurrency", 1)] and L.sweep_defaults(s) == [] and L.conflicts(s) == []
        jobs = plan_jobs("B", builtin_cases(["qa"], ["short"], ["en"]), [["m"]], 1, L.levels(s))
        assert jobs[0].rid == "B/m/000-qa/short/1" and jobs[0].sweep_level is None

    def test_a_sweep_keeps_the_model_loaded_and_warm_unless_told(self):
        from collector import load as L
        s = resolve_settings({"sweep": "concurrency=1,2"}, None)
        assert L.sweep_defaults(s) and s["keep_alive"]["value"] == L.SWEEP_KEEP_ALIVE and s["warmup"]["value"] is True
        s = resolve_settings({"sweep": "concurrency=1,2", "keep_alive": "0s", "warmup": False}, None)
        assert L.sweep_defaults(s) == [] and s["keep_alive"]["value"] == "0s" and s["warmup"]["value"] is False

    def test_conflicting_load_flags_are_named(self):
        from collector import load as L
        s = resolve_settings({"sweep": "rate=1", "concurrency": 2}, None)
        assert L.conflicts(s) == [] and "the sweep sets each level's load instead" in L.overridden(s)[0]
        assert "drop one of them" in L.conflicts(resolve_settings({"sweep": "rate=1", "request_rate": 2}, None))[0]
        assert "--max-concurrency bounds open-loop" in L.conflicts(resolve_settings({"max_concurrency": 2}, None))[0]
        assert L.conflicts(resolve_settings({"sweep": "rate=1", "max_concurrency": 2}, None)) == []

    def test_sweep_plan_runs_the_matrix_once_per_level_with_level_in_rid_and_key(self):
        from collector import load as L
        s = resolve_settings({"sweep": "concurrency=4,1", "runs": 2}, None)
        cases = builtin_cases(["qa"], ["short"], ["en"])
        jobs = plan_jobs("B", cases, [["m", "n"]] * len(cases), 2, L.levels(s))
        assert len(jobs) == 2 * 2 * 2 * len(cases) and len({j.rid for j in jobs}) == len(jobs)
        assert [j.sweep_level for j in jobs if j.model == "m"] == [4, 4, 1, 1]  # the order given, model-major
        assert jobs[0].rid == "B/m/000-qa/short/c4/1"
        msgs = [("req.start", {"rid": "x", "model": "m", "case_hash": "h", "load": "short", "run": 1,
                               "sweep_level": 4}), ("req.end", {"rid": "x", "ok": True})]
        assert finished_keys(msgs, "openai") == {("m", "h", "short", 1, 4)}

    def test_random_order_is_reproducible_by_seed(self):
        from collector import load as L
        orders = {tuple(lv.value for lv in L.levels(resolve_settings(
            {"sweep": "concurrency=1,2,4,8,16,32", "sweep_order": "random", "arrival_seed": seed}, None)))
            for seed in (1, 1, 2, 3)}
        assert all(sorted(o) == [1, 2, 4, 8, 16, 32] for o in orders) and len(orders) >= 2
        a = L.levels(resolve_settings({"sweep": "concurrency=1,2,4,8,16,32", "sweep_order": "random"}, None))
        assert a == L.levels(resolve_settings({"sweep": "concurrency=1,2,4,8,16,32", "sweep_order": "random"}, None))
