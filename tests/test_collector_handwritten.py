"""Hand-written test_cases.json / config.py through the real collector (subprocess, Ollama stub over
HTTP, the analyzer at the end): a fallback is said in the closing line and the reports, a GBK file is
read and recorded, a resume after an edited case names the case, and the fix lines only offer
--use-default-on-error where it helps."""
import json

import pytest

from shared.recording import read_recording
from tests.stubs import ollama_stub, serve
from tests.test_collector_cli import by_topic, run_collector

pytestmark = pytest.mark.slow  # starts processes

BASE = ["--models", "ok", "--max-tokens", "4", "--no-telemetry", "--no-progress", "--timeout", "5"]
CASES = [{"prompt": "Why is the sky blue?", "task_type": "knowledge_qa", "reference_text": "Rayleigh scattering."},
         {"prompt": "把 hello 翻译成中文。", "task_type": "翻译"}]


async def test_fallback_is_said_in_the_closing_line_config_and_both_reports(tmp_path):
    """Observed: a bad file with --use-default-on-error ran the built-in set and ended `batch complete
    (exit 0)` like any other batch."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "test_cases.json").write_text('[\n  {"prompt": "x", "task_type": "qa",},\n]\n', encoding="utf-8")
    async with serve(ollama_stub.make_app(load_s=0.0)) as url:
        rc, log = await run_collector("--exp-dir", str(exp), *BASE, "--base-url", url, "--tasks", "qa", "--loads",
                                      "short", "--langs", "en", "--use-default-on-error",
                                      "--analyzer-args", "--no-quality --no-plots", timeout_s=120)
    assert rc == 0, log  # the flag asked for it: still exit 0 ...
    closing = log[log.index("batch complete"):]
    assert closing.startswith("batch complete WITH FALLBACK: planned 1 / ok 1")  # ... but never a clean line
    assert "FALLBACK (--use-default-on-error): test_cases.json was bad, ran the built-in task set instead" in closing
    cfg = json.loads((exp / "config.json").read_text(encoding="utf-8"))
    why = cfg["fallback"]["files"][str(exp / "test_cases.json")]
    assert "test_cases.json:2: trailing comma before '}'" in why and cfg["cases_source"] == "builtin"
    _, items, _ = read_recording(exp / "raw" / "stream.msgpack")
    assert by_topic(items)["batch.start"][0]["config"]["fallback"]["files"]  # the analyzer reads it from here
    md = (exp / "summary" / "report.md").read_text(encoding="utf-8")
    problems = md.split("## Problems")[1].split("\n## ")[0].replace("\\_", "_")  # Markdown escapes
    assert f"FALLBACK: {exp / 'test_cases.json'} was bad, so --use-default-on-error ran the built-in task set" in problems
    page = (exp / "summary" / "report.html").read_text(encoding="utf-8")
    assert "FALLBACK: " in page.split('id="problems"')[1].split("</ul>")[0]
    assert "已回退：" in (exp / "summary" / "report.zh.md").read_text(encoding="utf-8")


async def test_gbk_cases_run_and_their_encoding_is_recorded(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "test_cases.json").write_bytes(json.dumps(CASES, ensure_ascii=False, indent=1).encode("gbk"))
    (exp / "config.py").write_bytes("# 每个用例跑一次\nRUNS = 1\nCPU_TDP_W = 95\n".encode("gbk"))
    async with serve(ollama_stub.make_app(load_s=0.0)) as url:
        rc, log = await run_collector("--exp-dir", str(exp), *BASE, "--base-url", url, "--no-analyze")
    assert rc == 0, log
    assert "file_not_utf8" in log and "GBK" in log  # said, with how to save as UTF-8
    cfg = json.loads((exp / "config.json").read_text(encoding="utf-8"))
    assert cfg["encodings"] == {str(exp / "test_cases.json"): "gbk", str(exp / "config.py"): "gbk"}
    assert cfg["settings"]["cpu_tdp_w"] == {"value": 95.0, "source": "config.py", "line": 3}
    _, items, _ = read_recording(exp / "raw" / "stream.msgpack")
    starts = by_topic(items)["req.start"]
    assert [s["task"] for s in starts] == ["qa", "翻译"] and starts[1]["prompt"] == "把 hello 翻译成中文。"
    assert (exp / "texts" / "exp_ok_latest_001-翻译_short_1.txt").is_file()


async def test_resume_after_an_edited_case_names_the_case_not_flags(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "test_cases.json").write_text(json.dumps(CASES, ensure_ascii=False), encoding="utf-8")
    async with serve(ollama_stub.make_app(load_s=0.0)) as url:
        rc, log = await run_collector("--exp-dir", str(exp), *BASE, "--base-url", url, "--no-analyze")
        assert rc == 0, log
        edited = [CASES[0], {**CASES[1], "prompt": "把 goodbye 翻译成中文。"}]
        (exp / "test_cases.json").write_text(json.dumps(edited, ensure_ascii=False), encoding="utf-8")
        rc, log = await run_collector("--exp-dir", str(exp), "--resume", "--base-url", url, "--no-telemetry",
                                      "--no-analyze")
    assert rc == 1
    assert f"{exp / 'test_cases.json'} was edited since: case [1] (翻译, short: '把 hello 翻译成中文。'): prompt changed" in log
    assert "Undo the edit to resume as started" in log
    assert "Drop those flags" not in log and "contradict" not in log  # no flag was given
    assert "--use-default-on-error" not in log  # it cannot help a resume


async def test_fix_line_offers_use_default_on_error_only_where_it_helps(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "test_cases.json").write_text(json.dumps([{"promt": "x", "task_type": "qa"}]), encoding="utf-8")
    rc, log = await run_collector("--exp-dir", str(exp), "--dry-run")
    assert rc == 1 and 'unknown field "promt"; did you mean "prompt"?' in log
    assert "or pass --use-default-on-error to run with the built-in task set instead" in log
    rc, log = await run_collector("--exp-dir", str(exp), "--dry-run", "--max-tokens", "0")  # a flag, not a file
    assert rc == 1 and "--max-tokens: max_tokens = 0 is invalid" in log and "--use-default-on-error" not in log
