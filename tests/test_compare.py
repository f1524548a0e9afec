"""python -m analyzer.compare on real analysed batches: three batches from two "hosts" (synthetic
recordings with known power, analysed by the real pipeline), the leaderboard checked against each
batch's own results.csv, the hive-partitioned dataset read back with DuckDB and pyarrow.dataset."""
from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from analyzer import cli, pipeline, tables
from analyzer import compare as C
from tests import synth as S

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "evil<img src=x onerror=alert(1)>:1b"  # a model name is foreign text: escaped in the page, safe on disk
QUALITY = {"m:1b": 0.60, "m:3b": 0.75, "m:7b": 0.85, HOSTILE: 0.5}
CASE = {"prompt": "capital?", "task": "qa", "load": "short", "lang": "en", "reference_text": "Paris."}


def scorer_for(basis: str):
    """Fixed scores per model (+0.01 per run so intervals are not degenerate) on one quality basis."""
    def scorer(requests, options, progress=False):
        return {r["rid"]: {"quality_score": QUALITY[r["rid"].split("/")[1]] + 0.01 * int(r["rid"].rsplit("/", 1)[1]),
                           "quality_basis": basis} for r in requests}
    return scorer


def make_batch(root: Path, bid: str, host: str, gpu: str, watts: float, models: list[str], day: int,
               basis: str = "chrf", fail: str | None = None, runs: int = 4, case_hash: str | None = None,
               max_tokens: int | None = None, slow: str | None = None) -> Path:
    """A recorded batch (real stream.msgpack) analysed by the real pipeline into root/bid; ``slow``: the rid
    of a request that takes 6× as long as its twins (a latency outlier)."""
    reqs, t = [], 1.0
    for run in range(1, runs + 1):
        for mi, m in enumerate(models):
            rid = f"{bid}/{m}/0/short/{run}"
            dur = (0.5 + 0.1 * mi + 0.02 * run) * (6 if rid == slow else 1)
            reqs.append(S.Req(t, t + dur, model=m, run=run, rid=rid, ok=rid != fail,
                              eval_count=50 + 10 * mi, text="Paris.", case_hash=case_hash, max_tokens=max_tokens))
            t += max(1.0, dur + 0.5)
    spec = S.Spec(duration_s=t + 1.0, rate_hz=50.0, requests=reqs, batch_id=bid, tel_src=f"telemetry@{host}",
                  gpus=[S.Gpu(S.constant(watts), simulated=False, name=gpu, uuid=f"GPU-{host}-0")], cases=[CASE],
                  wall0_ns=S.WALL0_NS + day * 86_400_000_000_000, rapl_w=20.0)
    S.write_batch(root / bid, spec)
    bd, items, problem = cli.load_batch(root / bid)
    cli.analyse_messages(items, bd, pipeline.Options(assess=scorer_for(basis)), 120.0, False, problem, "en")
    return root / bid


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("campaign")
    return [make_batch(root, "b1", "hostA", "RTX 4090", 200.0, ["m:1b", "m:3b"], 0),
            make_batch(root, "b2", "hostA", "RTX 4090", 210.0, ["m:1b", "m:7b", HOSTILE], 1, slow="b2/m:7b/0/short/3"),
            make_batch(root, "b3", "hostB", "A100 80GB", 300.0, ["m:1b"], 2, fail="b3/m:1b/0/short/2")]


def results_csv(batch: Path) -> list[dict[str, str]]:
    with open(batch / "summary" / "results.csv", encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def floats(rows, col) -> list[float]:
    return [float(r[col]) for r in rows if r[col] != ""]


def mean(xs):
    return math.fsum(xs) / len(xs)


def test_leaderboard_matches_each_batch_results_csv(campaign):
    """Every figure of every row equals what the batches' own results.csv give for that row's requests."""
    c = C.compare(campaign)
    by_name = {b.name: results_csv(b) for b in campaign}
    assert len(c.leaderboard) == 5  # m:1b on hostA (b1+b2), m:3b, m:7b, the hostile one, m:1b on hostB
    # the slow twin is flagged per request and counted in its row; the compare notes say where
    assert [r["model"] for r in c.leaderboard if r["n_outliers"]] == ["m:7b"]
    assert any("1 request(s) in 1 row(s) took more than 3×" in n and "qa/m:7b: 1" in n for n in c.notes)
    for row in c.leaderboard:
        mine = [r for b in row["batches"].split(",") for r in by_name[b]
                if r["model"] == row["model"] and r["task"] == row["task"] and r["gpu_hosts"] == row["host"]
                and r["gpu_names"] == row["gpu_name"]]
        # a failed request has no quality basis: it counts in n_failed of each row of its model and GPU
        ok = [r for r in mine if r["status"] == "ok" and (r["quality_basis"] or None) == row["quality_basis"]]
        failed = [r for r in mine if r["status"] != "ok"]
        assert ok and row["n"] == len(ok) and row["n_failed"] == len(failed)
        assert row["n_outliers"] == sum(r["latency_outlier"] == "true" for r in ok)
        for metric in ("quality_per_kj", "quality_score", "total_energy_j", "j_per_token", "first_token_s",
                       "toks_per_s", "gpu_energy_j"):
            assert row[f"{metric}_mean"] == pytest.approx(mean(floats(ok, metric)), rel=1e-9), metric
        want = tables.describe(floats(ok, "quality_per_kj"), *tables.metric_range("quality_per_kj"))
        assert row["quality_per_kj_ci95_low"] == pytest.approx(want["ci95_low"], rel=1e-9)
        assert row["quality_per_kj_ci95_high"] == pytest.approx(want["ci95_high"], rel=1e-9)
        assert row["quality_per_kj_ci95_low"] < row["quality_per_kj_mean"] < row["quality_per_kj_ci95_high"]
        assert row["group_quality_per_kj"] == pytest.approx(
            1000 * mean(floats(ok, "quality_score")) / mean(floats(ok, "total_energy_j")), rel=1e-9)
    # ranks follow the group ratio within the task and basis
    ranked = sorted(c.leaderboard, key=lambda r: r["rank"])
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4, 5]
    assert all(a["group_quality_per_kj"] >= b["group_quality_per_kj"] for a, b in zip(ranked, ranked[1:]))
    assert {b["batch"]: (b["hosts"], b["gpu_names"], b["date"]) for b in c.batches} == {
        "b1": ("hostA", "RTX 4090", "2026-09-21"), "b2": ("hostA", "RTX 4090", "2026-09-22"),
        "b3": ("hostB", "A100 80GB", "2026-09-23")}


def test_same_gpu_pooled_other_gpu_or_basis_never(campaign, tmp_path):
    """m:1b on hostA's RTX 4090 in b1 and b2 is one row naming both batches (positive control); on
    hostB's A100 it is its own row; re-scored on another quality basis it is its own row too."""
    c = C.compare(campaign)
    rows = {(r["model"], r["host"], r["quality_basis"]): r for r in c.leaderboard}
    pooled = rows[("m:1b", "hostA", "chrf")]
    assert pooled["batches"] == "b1,b2" and pooled["n_batches"] == 2 and pooled["n"] == 8
    other = rows[("m:1b", "hostB", "chrf")]
    assert other["batches"] == "b3" and other["gpu_name"] == "A100 80GB" and other["n"] == 3 and other["n_failed"] == 1
    assert any("m:1b" in n and "never pooled" in n for n in c.notes)
    assert any("pooled from 2 batches (b1,b2)" in n for n in c.notes)
    # the same GPU, another quality basis: never pooled with b1
    b4 = make_batch(tmp_path, "b4", "hostA", "RTX 4090", 200.0, ["m:1b"], 3, basis="bartscore")
    c2 = C.compare([campaign[0], b4])
    keys = sorted((r["model"], r["quality_basis"], r["batches"]) for r in c2.leaderboard if r["model"] == "m:1b")
    assert keys == [("m:1b", "bartscore", "b4"), ("m:1b", "chrf", "b1")]
    assert any("2 quality basis/bases (bartscore, chrf)" in n for n in c2.notes)


def test_dataset_read_back_with_duckdb_and_pyarrow(campaign, tmp_path):
    """The hive dataset holds every request and GPU sample; DuckDB and pyarrow.dataset read it unchanged and
    its figures equal the batches' results.csv and samples_gpu.parquet."""
    lake = tmp_path / "lake"
    counts = C.write_dataset(campaign, lake)
    want = {b.name: results_csv(b) for b in campaign}
    assert counts["requests"] == sum(len(v) for v in want.values())
    glob = (lake / "requests" / "**" / "*.parquet").as_posix()
    got = duckdb.sql(f"""SELECT batch, host, host_name, gpu_name, model_name, count(*) AS n,
                                sum(total_energy_j) AS e, sum(quality_per_kj) AS q, min(CAST(date AS VARCHAR)) AS d
                         FROM read_parquet('{glob}', hive_partitioning = true)
                         GROUP BY ALL ORDER BY ALL""").fetchall()
    expect = []
    for b, rows in sorted(want.items()):
        for m in sorted({r["model"] for r in rows}):
            mine = [r for r in rows if r["model"] == m]
            expect.append((b, mine[0]["gpu_hosts"], mine[0]["gpu_hosts"], mine[0]["gpu_names"], m, len(mine),
                           math.fsum(floats(mine, "total_energy_j")), math.fsum(floats(mine, "quality_per_kj")),
                           mine[0]["timestamp"][:10]))
    assert [g[:6] for g in got] == [e[:6] for e in sorted(expect)]
    for g, e in zip(got, sorted(expect)):
        assert g[6] == pytest.approx(e[6], rel=1e-9) and g[7] == pytest.approx(e[7], rel=1e-9) and g[8] == e[8]
    # pyarrow.dataset with hive partitioning: the same rows, partition directories as promised
    table = ds.dataset(lake / "requests", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == counts["requests"]
    assert set(table.column("host").to_pylist()) == {"hostA", "hostB"}
    assert set(table.column("gpu").to_pylist()) == {"GPU-hostA-0", "GPU-hostB-0"}
    assert set(table.column("model_name").to_pylist()) == set(QUALITY)
    hostile = [p for p in (lake / "requests").rglob("model=*") if "evil" in p.name]
    assert hostile and all(ch not in hostile[0].name[len("model="):] for ch in '<>:/\\"|?*')
    # samples: every GPU sample of every batch, partitioned by host and GPU
    samples = ds.dataset(lake / "samples", format="parquet", partitioning="hive").to_table()
    per_batch = {b.name: pq.read_table(b / "raw" / "samples_gpu.parquet").num_rows for b in campaign}
    assert samples.num_rows == counts["samples"] == sum(per_batch.values())
    n_by = duckdb.sql(f"""SELECT batch, host, count(*), sum(power_mw) FROM
                          read_parquet('{(lake / "samples" / "**" / "*.parquet").as_posix()}', hive_partitioning = true)
                          GROUP BY ALL ORDER BY ALL""").fetchall()
    assert [(b, n) for b, _, n, _ in n_by] == sorted(per_batch.items())
    assert {b: h for b, h, _, _ in n_by} == {"b1": "hostA", "b2": "hostA", "b3": "hostB"}
    for b, _, n, p in n_by:  # constant power per batch: the sum is n × W × 1000
        assert p == pytest.approx(n * {"b1": 200.0, "b2": 210.0, "b3": 300.0}[b] * 1000)
    # a rewrite replaces it (no doubled rows); a directory holding anything else is refused
    assert C.write_dataset(campaign[:1], lake)["requests"] == len(want["b1"])
    assert ds.dataset(lake / "requests", format="parquet", partitioning="hive").count_rows() == len(want["b1"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(C.BadInput, match="not a dataset written by analyzer.compare"):
        C.write_dataset(campaign, foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_batch_analysed_before_gpu_naming_says_unknown(campaign, tmp_path):
    """A results.parquet without gpu_hosts/gpu_names (older analyzer): host and GPU read `unknown`, a note says
    to rerun the analyzer; the figures are still there."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(campaign[0], old)
    res = old / "summary" / "results.parquet"
    t = pq.read_table(res)
    pq.write_table(t.drop_columns(["gpu_hosts", "gpu_names", "gpu_uuids"]), res)
    c = C.compare([old, campaign[2]])
    rows = {(r["model"], r["host"]) for r in c.leaderboard}
    assert ("m:1b", "unknown") in rows and ("m:1b", "hostB") in rows
    assert any("analysed before GPUs were named" in n and "old" in n for n in c.notes)


def test_page_escapes_foreign_names_and_has_every_row(campaign, tmp_path):
    c = C.compare(campaign)
    files = C.write_outputs(c, tmp_path / "out", "en")
    page = (tmp_path / "out" / "compare.html").read_text(encoding="utf-8")
    assert "<img" not in page and "evil&lt;img src=x onerror=alert(1)&gt;:1b" in page
    assert page.count('<table class="data sortable" id="leaderboard-') == 1 and 'id="batches"' in page
    assert page.count("<svg class=\"plot\"") == 1
    with open(files[0], encoding="utf-8-sig", newline="") as fh:
        board = list(csv.DictReader(fh))
    assert len(board) == len(c.leaderboard) and list(board[0]) == list(C.LEADERBOARD_COLUMNS)
    zh = C.render_html(c, "zh")
    assert "排行榜" in zh and "批次对比" in zh


def test_bad_inputs_name_the_path_and_the_fix(tmp_path):
    raw_only = tmp_path / "raw_only"
    S.write_batch(raw_only, S.Spec(duration_s=2.0, requests=[S.Req(0.5, 1.0)]))
    with pytest.raises(C.BadInput, match=r"results\.parquet: not found.*python -m analyzer --batch"):
        C.compare([raw_only])
    with pytest.raises(C.BadInput, match="no such batch directory"):
        C.compare([tmp_path / "missing"])


@pytest.mark.slow
def test_cli_writes_csvs_page_and_dataset(campaign, tmp_path):
    """The real entry point: exit 0 with the files; exit 2 and the fix for a batch not analysed yet."""
    out, lake = tmp_path / "out", tmp_path / "lake"
    cmd = [sys.executable, "-m", "analyzer.compare", *map(str, campaign), "--out", str(out), "--dataset", str(lake),
           "--report-lang", "both"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "compared 3 batch(es), 5 row(s)" in p.stdout
    for name in ("leaderboard.csv", "batches.csv", "notes.txt", "compare.html", "compare.zh.html"):
        assert (out / name).is_file(), name
    zh = (out / "compare.zh.html").read_text(encoding="utf-8")
    assert '<html lang="zh-CN"' in zh and "合并自 2 个批次（b1,b2）" in zh and "pooled from" not in zh  # notes too
    (out / "compare.zh.html").unlink()  # --lang: the old name of the same flag
    assert subprocess.run(cmd[:-2] + ["--lang", "en"], cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    assert not (out / "compare.zh.html").exists()
    assert ds.dataset(lake / "requests", format="parquet", partitioning="hive").count_rows() == 4 * (2 + 3 + 1)
    bad = subprocess.run([sys.executable, "-m", "analyzer.compare", str(tmp_path / "nothing"), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == C.EXIT_BAD_INPUT and "no such batch directory" in bad.stderr


@pytest.mark.slow
def test_page_renders_in_headless_chromium(campaign, tmp_path):
    """compare.html passes the batch report's own self-check in a real browser: plots drawn, tables with rows,
    no script error, no console line; the hostile model name ran nothing."""
    import re

    from tests.test_report_html import browse

    c = C.compare(campaign)
    C.write_outputs(c, tmp_path / "out", "en")
    shot = tmp_path / "compare.png"
    dom, console = browse(tmp_path / "out" / "compare.html", shot, tmp_path)
    assert console == [], "\n".join(console)
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-report="ok"' in root and "data-errors" not in root, root
    assert 'data-plots="1"' in root and 'data-tables="2"' in root
    assert shot.is_file() and shot.stat().st_size > 20_000


def test_prefill_and_decode_energy_where_a_batch_has_them(campaign, tmp_path):
    """A batch whose results carry gpu_energy_prefill_j / gpu_energy_decode_j (newer analyzer) gets their
    means; rows from batches without them stay empty (never 0), and the page shows the columns."""
    import shutil

    import pyarrow as pa

    phases = ("gpu_energy_prefill_j", "gpu_energy_decode_j")

    def without_phases(src: Path, dst: Path) -> tuple[Path, pa.Table]:
        """A copy of a batch as an analyzer before the phase columns wrote it."""
        shutil.copytree(src, dst)
        res = dst / "summary" / "results.parquet"
        t = pq.read_table(res)
        t = t.drop_columns([c for c in t.column_names if c.startswith(phases)])
        pq.write_table(t, res)
        return res, t

    newer = tmp_path / "b1"
    res, t = without_phases(campaign[0], newer)
    older, _ = without_phases(campaign[2], tmp_path / "b3")
    older = older.parent.parent
    pre = [0.1 * (i + 1) for i in range(t.num_rows)]
    pq.write_table(t.append_column("gpu_energy_prefill_j", pa.array(pre))
                    .append_column("gpu_energy_decode_j", pa.array([3 * x for x in pre])), res)
    c = C.compare([newer, older])
    rows = {(r["model"], r["host"]): r for r in c.leaderboard}
    models = t.column("model").to_pylist()
    want = mean([p for p, m in zip(pre, models) if m == "m:1b"])
    assert rows[("m:1b", "hostA")]["gpu_energy_prefill_j_mean"] == pytest.approx(want)
    assert rows[("m:1b", "hostA")]["gpu_energy_decode_j_mean"] == pytest.approx(3 * want)
    assert rows[("m:1b", "hostB")]["gpu_energy_prefill_j_mean"] is None
    assert "prefill GPU J" in C.render_html(c, "en")
    assert "prefill GPU J" not in C.render_html(C.compare([older]), "en")  # negative control
