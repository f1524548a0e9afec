"""A suite batch end to end: the collector sends GSM8K and multiple-choice items to the Ollama stub
(whose answer is always "The answer is 42. …"), the analyzer scores them: the accuracy is exactly the
share of items whose right answer is 42 (GSM8K) or that no letter can be read from it (choice: wrong,
counted); runs carry distinct seeds; config.json states the protocol."""
from __future__ import annotations

import csv
import json

import pytest

from shared.recording import read_recording
from tests.test_collector_cli import by_topic, run_collector, stub  # noqa: F401 - the stub fixture

GSM = [("How many?", "6 * 7 = 42\n#### 42"), ("And now?", "#### 7"), ("Total?", "40 + 2\n#### 42"),
       ("Cost?", "#### 1,042")]


async def test_gsm8k_and_choice_accuracy_end_to_end(stub, tmp_path):  # noqa: F811
    url, state = stub
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "gsm.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in GSM),
                                   encoding="utf-8")
    (exp / "mc.jsonl").write_text(json.dumps({"question": "6 × 7?", "options": ["41", "42", "43", "44"],
                                              "answer": 1}) + "\n", encoding="utf-8")
    (exp / "test_cases.json").write_text(json.dumps([{"suite": "gsm8k=gsm.jsonl"}, {"suite": "choice=mc.jsonl"}]),
                                         encoding="utf-8")
    rc, log = await run_collector("--exp-dir", str(exp), "--models", "ok", "--base-url", url, "--no-telemetry",
                                  "--no-progress", "--runs", "2", "--max-tokens", "11", timeout_s=180)
    assert rc == 0, log
    # the stub received each suite's stop sequences (Ollama: options.stop), as config.json records them
    from collector.suites import END_OF_TURN
    stops = {b["prompt"].startswith("Solve the math"): b["options"]["stop"] for b in state.requests if b.get("prompt")}
    assert stops == {True: ["Question:", *END_OF_TURN], False: ["\nAnswer the multiple choice question", *END_OF_TURN]}
    batch_cfg = json.loads((exp / "config.json").read_text(encoding="utf-8"))
    recorded = batch_cfg["suites"]["suites"]
    assert recorded["gsm8k:gsm"]["stop"] == {"chat": stops[True]} and "stop sequences" in batch_cfg["suites"]["stop_rule"]
    assert recorded["choice:mc"]["stop"] == {"chat (en)": stops[False]}
    with open(exp / "summary" / "results.csv", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    gsm = [r for r in rows if r["suite"] == "gsm8k:gsm"]
    assert len(gsm) == 8 and {r["quality_basis"] for r in gsm} == {"exact_match"}
    assert sorted(r["correct"] for r in gsm) == ["false"] * 4 + ["true"] * 4  # items 0 and 2, two runs each
    assert all(r["correct_strict"] == r["correct"] and r["extracted_answer"] == "42" for r in gsm)
    assert {r["quality_score"] for r in gsm if r["correct"] == "true"} == {"1"}
    mc = [r for r in rows if r["suite"] == "choice:mc"]
    assert [r["correct"] for r in mc] == ["false", "false"] and mc[0]["extracted_answer"] == ""
    with open(exp / "summary" / "stats.csv", encoding="utf-8-sig", newline="") as fh:
        stats = {(r["suite"], r["metric"]): r for r in csv.DictReader(fh) if r["suite"]}
    acc = stats[("gsm8k:gsm", "accuracy")]
    assert float(acc["mean"]) == 0.5 and int(acc["n"]) == 8 and acc["ci95_note"] == "wilson"
    assert float(stats[("gsm8k:gsm", "pass@2")]["mean"]) == 0.5  # identical runs: no item gained by a 2nd sample
    assert float(stats[("choice:mc", "accuracy")]["mean"]) == 0.0
    # distinct seeds per run, recorded; the temperature above 0 so samples can differ
    _, items, _ = read_recording(exp / "raw" / "stream.msgpack")
    starts = [p for p in by_topic(items)["req.start"] if not p.get("warmup")]
    assert sorted({p["params"]["seed"] for p in starts}) == [1, 2]
    assert {p["params"]["temperature"] for p in starts} == {0.8}
    cfg = json.loads((exp / "config.json").read_text(encoding="utf-8"))
    assert "NOT the 5-shot" in cfg["suites"]["protocol"] and "/api/generate" in cfg["suites"]["endpoint"]
    assert cfg["suites"]["suites"]["gsm8k:gsm"] == {"kind": "gsm8k", "items": 4, "basis": "exact_match",
                                                    "stop": {"chat": ["Question:", *END_OF_TURN]}}
    page = (exp / "summary" / "report.html").read_text(encoding="utf-8")
    assert "NOT the 5-shot log-likelihood protocol" in page and "gsm8k:gsm" in page
    assert "the answer ends at the suite" in page and "stop sequences: GSM8K at a new" in page


def _suite_batch(root, bid: str, answers: dict[str, list[str]], day: int = 0, runs: int = 1):
    """A recorded batch of GSM8K items (real stream.msgpack, real analyzer with the real scorer)."""
    from analyzer import cli, pipeline
    from tests import synth as S

    cases = [{"prompt": f"q{i}", "task": "suite", "task_type": "suite", "load": "all", "lang": "en",
              "suite": "gsm8k:g", "item_id": f"g/{i}", "suite_data": {"kind": "gsm8k", "target": "42"}}
             for i in range(4)]
    reqs, t = [], 1.0
    for model, texts in answers.items():
        for i, text in enumerate(texts):
            for run in range(1, runs + 1):
                answer = text if run == 1 else "The answer is 42."  # a second sample that is always right
                reqs.append(S.Req(t, t + 0.4, model=model, task="suite", load="all", run=run, case=i, text=answer,
                                  rid=f"{bid}/{model}/{i}/all/{run}", case_hash=f"h{i}", max_tokens=64, seed=run))
                t += 0.5
    spec = S.Spec(duration_s=t + 1.0, rate_hz=50.0, requests=reqs, batch_id=bid, cases=cases, rapl_w=20.0,
                  gpus=[S.Gpu(S.constant(150.0), simulated=False, name="RTX 4090", uuid="GPU-a")],
                  wall0_ns=S.WALL0_NS + day * 86_400_000_000_000)
    S.write_batch(root / bid, spec)
    bd, items, problem = cli.load_batch(root / bid)
    cli.analyse_messages(items, bd, pipeline.Options(quality_options={"enable_bart": False}), 120.0, False, problem,
                         "en")
    return root / bid


def test_suite_leaderboard_in_report_and_compare(tmp_path):
    from analyzer import compare as C

    right, wrong = "Step… The answer is 42.", "I think 7."
    b1 = _suite_batch(tmp_path, "b1", {"small:1b": [right, wrong, wrong, wrong], "big:7b": [right] * 3 + [wrong]})
    with open(b1 / "summary" / "suites.csv", encoding="utf-8-sig", newline="") as fh:
        board = {r["model"]: r for r in csv.DictReader(fh)}
    assert float(board["big:7b"]["accuracy"]) == 0.75 and float(board["small:1b"]["accuracy"]) == 0.25
    assert 0 < float(board["big:7b"]["accuracy_ci95_low"]) < 0.75 < float(board["big:7b"]["accuracy_ci95_high"]) <= 1
    assert float(board["big:7b"]["j_per_correct"]) == pytest.approx(4 * float(board["big:7b"]["j_per_item"]) / 3)
    page = (b1 / "summary" / "report.html").read_text(encoding="utf-8")
    assert "suite-scatter-0" in page and "NOT the 5-shot" in page
    c = C.compare([b1])
    rows = {r["model"]: r for r in c.leaderboard}
    assert {r["task"] for r in c.leaderboard} == {"suite gsm8k:g"}
    assert rows["big:7b"]["quality_score_mean"] == 0.75 and rows["big:7b"]["quality_basis"] == "exact_match"
    from analyzer.suite_stats import wilson
    assert (rows["big:7b"]["quality_score_ci95_low"], rows["big:7b"]["quality_score_ci95_high"]) == wilson(3, 4)
    assert rows["big:7b"]["rank"] is not None and rows["big:7b"]["pareto_optimal"] is not None
    assert rows["big:7b"]["pass_at_k"] is None  # one sample per item: no pass@k


def test_pass_at_k_from_distinct_samples(tmp_path):
    from analyzer import compare as C

    b = _suite_batch(tmp_path, "b1", {"m:1b": ["7", "7", "The answer is 42.", "7"]}, runs=2)
    with open(b / "summary" / "results.csv", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({r["seed"] for r in rows}) == ["1", "2"]
    with open(b / "summary" / "stats.csv", encoding="utf-8-sig", newline="") as fh:
        st = {r["metric"]: r for r in csv.DictReader(fh) if r["suite"]}
    # item 2 right twice, items 0, 1, 3 right once of 2: pass@1 = (1 + 3 × 0.5) / 4, pass@2 = 1
    assert float(st["accuracy"]["mean"]) == 5 / 8 and float(st["pass@1"]["mean"]) == pytest.approx(0.625)
    assert float(st["pass@2"]["mean"]) == 1.0
    [row] = C.compare([b]).leaderboard
    assert row["pass_at_k"] == 1.0 and row["k"] == 2


async def test_humaneval_on_ollama_generate_is_a_raw_completion(stub, tmp_path):  # noqa: F811
    url, state = stub
    rc, log = await run_collector("--out", str(tmp_path), "--models", "ok", "--base-url", url, "--no-telemetry",
                                  "--no-progress", "--no-analyze", "--suite", "humaneval", "--limit", "2",
                                  "--max-tokens", "8", timeout_s=120)
    assert rc == 0, log
    bodies = [b for b in state.requests if b.get("prompt")]
    assert len(bodies) == 2 and all(b["raw"] is True and "\ndef " in b["options"]["stop"] for b in bodies)
    assert bodies[0]["prompt"].startswith("from typing import List") and bodies[0]["options"]["temperature"] == 0.0
    [batch] = [d for d in tmp_path.iterdir() if d.is_dir()]
    cfg = json.loads((batch / "config.json").read_text(encoding="utf-8"))
    assert "raw completion" in cfg["suites"]["endpoint"]
    _, items, _ = read_recording(batch / "raw" / "stream.msgpack")
    starts = by_topic(items)["req.start"]
    assert starts[0]["prompt"] == bodies[0]["prompt"] and starts[0]["params"]["raw"] is True


async def test_openai_backend_answers_without_the_number_score_zero(tmp_path):
    """The OpenAI-compatible stub answers "Hello from the stub, 你好！": no number, no letter, so every
    GSM8K and choice item is wrong and counted (accuracy exactly 0, not missing)."""
    from tests.stubs import openai_stub, serve

    (tmp_path / "gsm.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in GSM),
                                        encoding="utf-8")
    (tmp_path / "mc.csv").write_text("question,A,B,C,D,answer\n天空是什么颜色？,红,蓝,绿,黑,B\n", encoding="utf-8")
    app = openai_stub.make_app("llamacpp")
    async with serve(app) as url:
        rc, log = await run_collector("--out", str(tmp_path / "out"), "--backend", "openai", "--base-url", url,
                                      "--models", "ok", "--no-telemetry", "--no-progress", "--suite",
                                      f"gsm8k={tmp_path / 'gsm.jsonl'}", "--suite", f"choice={tmp_path / 'mc.csv'}",
                                      "--stop", "\\n\\nQ:", "--stop", "###", timeout_s=180)
    assert rc == 0, log
    # --stop replaced every suite's own: the OpenAI stub got them as the top-level "stop" list
    sent = [b for b in app[openai_stub.STATE].requests if b.get("messages")]
    assert len(sent) == 5 and all(b["stop"] == ["\n\nQ:", "###"] for b in sent)
    [batch] = list((tmp_path / "out").iterdir())
    with open(batch / "summary" / "suites.csv", encoding="utf-8-sig", newline="") as fh:
        board = {r["suite"]: r for r in csv.DictReader(fh)}
    assert board["gsm8k:gsm"]["accuracy"] == "0" and board["gsm8k:gsm"]["n"] == "4"
    assert board["choice:mc"]["accuracy"] == "0" and board["choice:mc"]["n"] == "1"
