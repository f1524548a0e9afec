"""analyzer.compare ranks only like with like: rows that ran other cases or another max tokens are
ranked apart and the notes say so; stats.csv keeps the seed's grouping and adds the run-to-run spread."""
from __future__ import annotations

import math

import pytest

from analyzer import compare as C
from analyzer import cli, pipeline, tables
from tests import synth as S
from tests.test_analyzer_pipeline import run
from tests.test_compare import CASE, make_batch, scorer_for


def test_different_cases_or_max_tokens_are_ranked_apart(tmp_path):
    dirs = [make_batch(tmp_path, "b1", "h", "RTX 4090", 200.0, ["m:1b", "m:3b"], 0, case_hash="aaaa", max_tokens=256),
            make_batch(tmp_path, "b2", "h", "RTX 4090", 200.0, ["m:7b"], 1, case_hash="bbbb", max_tokens=32),
            make_batch(tmp_path, "b3", "h", "RTX 4090", 200.0, ["m:1b", "m:3b"], 2, basis="bartscore",
                       case_hash="aaaa", max_tokens=32)]
    c = C.compare(dirs)
    chrf = {r["model"]: r for r in c.leaderboard if r["quality_basis"] == "chrf"}
    assert chrf["m:1b"]["case_set"] == chrf["m:3b"]["case_set"] != chrf["m:7b"]["case_set"]
    assert chrf["m:7b"]["max_tokens"] == "32" and chrf["m:1b"]["max_tokens"] == "256"
    # m:7b ran other prompts: it is first of its own ranking, never ranked against m:1b / m:3b
    assert chrf["m:7b"]["rank"] == 1 and sorted((chrf["m:1b"]["rank"], chrf["m:3b"]["rank"])) == [1, 2]
    note = next(n for n in c.notes if "ranked apart" in n)
    assert "task qa (chrf)" in note and "2 different case sets" in note and "m:7b" in note
    # the same cases on another basis is another ranking already; no "ranked apart" note for it
    assert not any("bartscore" in n and "ranked apart" in n for n in c.notes)
    page = C.render_html(c)
    assert page.count("max tokens 32") >= 1 and page.count("max tokens 256") >= 1


def test_old_batches_without_case_hashes_are_unknown_not_pooled_with_known(tmp_path):
    dirs = [make_batch(tmp_path, "b1", "h", "RTX 4090", 200.0, ["m:1b"], 0),
            make_batch(tmp_path, "b2", "h", "RTX 4090", 200.0, ["m:3b"], 1, case_hash="aaaa", max_tokens=64)]
    rows = {r["model"]: r for r in C.compare(dirs).leaderboard}
    assert rows["m:1b"]["case_set"] == C.UNKNOWN and rows["m:1b"]["rank"] == 1 and rows["m:3b"]["rank"] == 1


class TestRunToRunSpread:
    def test_pooled_within_case_std_beside_the_seed_grouping(self):
        rows = [{"model": "m", "task": "qa", "load": "short", "ok": True, "case_hash": h, "latency_s": v, "rid": str(i)}
                for i, (h, v) in enumerate([("c1", 1.0), ("c1", 3.0), ("c2", 10.0), ("c2", 12.0), ("c3", 5.0)])]
        [st] = [s for s in tables.stats(rows, False) if s["metric"] == "latency_s"]
        assert st["n"] == 5 and st["std"] == pytest.approx(math.sqrt(sum((v - 6.2) ** 2 for v in (1, 3, 10, 12, 5)) / 4))
        assert (st["n_cases"], st["n_repeated_cases"]) == (3, 2)
        assert st["run_to_run_std"] == pytest.approx(math.sqrt((1 + 1 + 1 + 1) / 2))  # c3 ran once: no spread
        per = {(p["case_hash"], p["metric"]): p for p in tables.per_case(rows, False)}
        assert per[("c2", "latency_s")]["n"] == 2 and per[("c2", "latency_s")]["std"] == pytest.approx(math.sqrt(2))
        assert per[("c3", "latency_s")]["std"] is None

    def test_one_run_per_case_has_no_run_to_run_spread(self):
        rows = [{"model": "m", "task": "qa", "load": "short", "ok": True, "case_hash": f"c{i}", "latency_s": float(i)}
                for i in range(3)]
        [st] = [s for s in tables.stats(rows, False) if s["metric"] == "latency_s"]
        assert st["std"] == pytest.approx(1.0) and st["run_to_run_std"] is None and st["n_repeated_cases"] == 0


def test_unknown_task_is_in_the_reports_problems(tmp_path):
    reqs = [S.Req(1.0, 2.0, task="trivia"), S.Req(2.5, 3.0, task="qa")]
    a = run(tmp_path, S.Spec(duration_s=4.0, requests=reqs))
    notes = [p for p in a.problems if "not a known task" in p]
    assert len(notes) == 1 and "'trivia'" in notes[0] and "no quality_score" in notes[0]
    assert {"case_hash", "max_tokens"} <= set(pipeline.MAIN_COLUMNS)


@pytest.mark.parametrize("backend, flagged", [("ollama", True), ("proxy", False)])
def test_a_proxy_task_label_is_no_unknown_task_in_its_rows(tmp_path, backend, flagged):
    """X-GenAI-Power-Task: 翻译 through the proxy is the user's label: its row has no "not a known task"
    quality_error (a batch's own unknown task still has one)."""
    reqs = [S.Req(1.0, 2.0, task="翻译")]
    a = run(tmp_path, S.Spec(duration_s=3.0, requests=reqs, backend=backend), quality=True,
            quality_options={"enable_bart": False})
    [row] = a.results
    assert row["task"] == "翻译" and row["len_chars"] is not None  # still scored: text statistics
    assert ("not a known task" in (row["quality_error"] or "")) is flagged
    assert any("not a known task" in p for p in a.problems) is flagged


def test_a_row_pooled_over_different_max_tokens_says_so():
    """Two batches of the same model and task with max tokens 12 and 32 pool into one row (max_tokens
    "12,32"): the note names the mix instead of only "same GPU and quality basis"."""
    row = {"task": "qa", "model": "m", "host": "h", "gpu_name": "g", "gpu_simulated": False, "quality_basis": "chrf",
           "case_set": "abc", "n_batches": 2, "batches": "b1,b2", "max_tokens": "12,32"}
    [note] = [n for n in C.notes_for([row], []) if "pooled" in n]
    assert "different max tokens (12,32)" in note
    [note] = [n for n in C.notes_for([{**row, "max_tokens": "32"}], []) if "pooled" in n]
    assert "max tokens" not in note and note.endswith("same GPU and quality basis")


def test_a_batch_without_scores_is_not_blamed_on_no_quality_alone():
    """A proxy batch analysed with quality has no scores because nothing can be scored: the note must not
    say only "analysed with --no-quality?"."""
    [note] = C.notes_for([], [{"batch": "proxy_1_x", "gpu_named": True, "quality_bases": None, "path": "p"}])
    assert "--no-quality" in note and "proxy traffic" in note and "no 效质比" in note


def sweep_batch(root, bid: str, models: list[str], levels: list[float]):
    """A --sweep concurrency batch (real stream.msgpack, real pipeline): every model runs 3 requests per
    level; a higher level makes each request slower, so pooling levels would blur the latency."""
    reqs, t = [], 1.0
    for lv in levels:
        for m in models:
            for run in range(1, 4):
                reqs.append(S.Req(t, t + 0.2 * lv + 0.01 * run, model=m, run=run, rid=f"{bid}/{m}/c{lv:g}/{run}",
                                  eval_count=50, text="Paris.", case_hash="aaaa", max_tokens=64,
                                  sweep="concurrency", sweep_level=lv))
                t += 1.0
    spec = S.Spec(duration_s=t + 1.0, rate_hz=50.0, requests=reqs, batch_id=bid, tel_src="telemetry@h",
                  gpus=[S.Gpu(S.constant(200.0), simulated=False, name="RTX 4090", uuid="GPU-h-0")],
                  cases=[CASE], wall0_ns=S.WALL0_NS, rapl_w=20.0, load={"swept": True})
    S.write_batch(root / bid, spec)
    bd, items, problem = cli.load_batch(root / bid)
    cli.analyse_messages(items, bd, pipeline.Options(assess=scorer_for("chrf")), 120.0, False, problem, "en")
    return root / bid


def test_load_levels_are_rows_of_their_own_ranked_per_level(tmp_path):
    """A sweep's levels are never pooled: one row per model × level with that level's latency, ranked only
    against the other models at the same level; a batch without levels keeps its one row per model."""
    dirs = [sweep_batch(tmp_path, "s1", ["m:1b", "m:3b"], [1.0, 4.0]),
            make_batch(tmp_path, "b1", "h", "RTX 4090", 200.0, ["m:1b"], 0, case_hash="aaaa", max_tokens=64)]
    c = C.compare(dirs)
    rows = {(r["model"], r["sweep_level"]): r for r in c.leaderboard}
    assert set(rows) == {("m:1b", 1.0), ("m:1b", 4.0), ("m:3b", 1.0), ("m:3b", 4.0), ("m:1b", None)}
    assert rows[("m:1b", 4.0)]["sweep"] == "concurrency" and rows[("m:1b", None)]["sweep"] is None
    for m in ("m:1b", "m:3b"):
        assert rows[(m, 1.0)]["n"] == rows[(m, 4.0)]["n"] == 3
        assert rows[(m, 1.0)]["latency_s_mean"] == pytest.approx(0.22, abs=0.03)
        assert rows[(m, 4.0)]["latency_s_mean"] == pytest.approx(0.82, abs=0.03)
    # like with like: each level ranks its two models 1 and 2; the level-less batch is a ranking of its own
    for lv in (1.0, 4.0):
        assert sorted(rows[(m, lv)]["rank"] for m in ("m:1b", "m:3b")) == [1, 2]
    assert rows[("m:1b", None)]["rank"] == 1
    assert any("2 load levels (concurrency 1, concurrency 4)" in n for n in c.notes)
    assert not any("ranked apart" in n for n in c.notes)  # same cases and max tokens at every level
    page = C.render_html(c)
    assert "— concurrency 1</h3>" in page and "— concurrency 4</h3>" in page
    assert "sweep_level" in C.LEADERBOARD_COLUMNS
