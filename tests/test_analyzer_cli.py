"""python -m analyzer --batch as a real subprocess on the stored tiny batch and on broken inputs."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shared.recording import read_recording

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

ROOT = Path(__file__).resolve().parent.parent
TINY = Path(__file__).resolve().parent / "data" / "analyzer_batch"
SEED_COLUMNS = ["timestamp", "model", "task", "load", "run", "latency_s", "toks_per_s", "gpu_mem_peak_mb",
                "gpu_util_avg", "gpu_energy_j", "bartscore"]


def analyzer(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout)


@pytest.fixture
def batch(tmp_path) -> Path:
    dst = tmp_path / "experiments_1_20260101_000000"
    shutil.copytree(TINY, dst)
    return dst


@pytest.mark.parametrize("env,want", [(None, "system"), ("mimalloc", "mimalloc")])
def test_arrow_uses_the_system_allocator_unless_told(env, want):
    """``python -m analyzer`` imports pyarrow with the system allocator (Arrow's own kept ~10-30 % more of a
    long recording's peak): asked for by the package before any module imports pyarrow, which picks its
    allocator at import; a user's ARROW_DEFAULT_MEMORY_POOL wins."""
    code = ("import runpy, sys; sys.argv = ['analyzer', '--help']\n"
            "try:\n    runpy.run_module('analyzer', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import pyarrow; print('pool', pyarrow.default_memory_pool().backend_name)")
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env:
        environ["ARROW_DEFAULT_MEMORY_POOL"] = env
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"pool {want}"


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def test_help_answers():
    """--help lists the flags the issue asks for."""
    r = analyzer("--help")
    assert r.returncode == 0
    for flag in ("--batch", "--live", "--idle-baseline", "--no-quality", "--bart-checkpoint", "--device",
                 "--unsafe-code-tests-without-sandbox",
                 "--cpu-tdp-w", "--telemetry-endpoint", "--events-endpoint", "--jobs"):
        assert flag in r.stdout
    # the examples close the help, the live page's among them
    examples = r.stdout[r.stdout.rindex("examples:"):]
    assert "python -m analyzer --live --serve 127.0.0.1:8765" in examples and "--log-level" not in examples


def test_batch_writes_every_output(batch):
    """CSV (seed columns first, UTF-8 with BOM), stats, Pareto, per-request JSON, Parquet, plots, report."""
    r = analyzer("--batch", batch, "--no-quality")
    assert r.returncode == 0, r.stderr
    raw = (batch / "summary" / "results.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = read_csv(batch / "summary" / "results.csv")
    assert list(rows[0])[:len(SEED_COLUMNS)] == SEED_COLUMNS
    assert len(rows) == 12 and all(row["gpu_simulated"] == "true" for row in rows)
    assert {row["status"] for row in rows} == {"ok", "failed"}
    stats = read_csv(batch / "summary" / "stats.csv")
    assert {"mean", "variance", "std", "ci95_low", "ci95_high", "n", "n_failed"} <= set(stats[0])
    assert read_csv(batch / "summary" / "warmups.csv")[0]["rid"] == "warmup/tiny-a:1b"
    j = json.loads((batch / "raw" / "tiny_tiny-a_1b_1_short_0.json").read_text(encoding="utf-8"))
    assert j["model"] == "tiny-a:1b" and j["metadata"]["gpu_simulated"] is True
    zh = json.loads((batch / "raw" / "tiny_tiny-a_1b_2_short_0.json").read_text(encoding="utf-8"))
    assert "人工智能" in zh["generated_text"]
    assert "人工智能" in (batch / "raw" / "tiny_tiny-a_1b_2_short_0.json").read_text(encoding="utf-8")
    assert pq.read_table(batch / "summary" / "results.parquet").num_rows == 12
    _, items, _ = read_recording(batch / "raw" / "stream.msgpack")
    n_gpu = sum(1 for t, _ in items if t == "tel.gpu")
    assert pq.read_table(batch / "raw" / "samples_gpu.parquet").num_rows == n_gpu
    assert pq.read_table(batch / "raw" / "samples_host.parquet").num_rows > 0
    assert (batch / "plots" / "power_timeline_gpu0.png").stat().st_size > 1000
    report = (batch / "summary" / "report.md").read_text(encoding="utf-8")
    assert "SIMULATED GPU DATA" in report and "power_timeline_gpu0.png" in report


def test_rerun_is_byte_identical(batch, tmp_path):
    """Same input → byte-identical CSVs and JSON."""
    assert analyzer("--batch", batch, "--no-quality", "--no-plots").returncode == 0
    first = {p.name: p.read_bytes() for p in (batch / "summary").glob("*.csv")}
    first_json = {p.name: p.read_bytes() for p in (batch / "raw").glob("*.json")}
    assert analyzer("--batch", batch, "--no-quality", "--no-plots").returncode == 0
    assert first == {p.name: p.read_bytes() for p in (batch / "summary").glob("*.csv")}
    assert first_json == {p.name: p.read_bytes() for p in (batch / "raw").glob("*.json")}


def test_truncated_recording_analysed_up_to_the_cut(batch):
    """A cut recording is analysed; the problem is reported and requests after the cut are incomplete."""
    stream = batch / "raw" / "stream.msgpack"
    data = stream.read_bytes()
    stream.write_bytes(data[: int(len(data) * 0.6)] + b"\xdc\x00")
    r = analyzer("--batch", batch, "--no-quality", "--no-plots")
    assert r.returncode == 0, r.stderr
    rows = read_csv(batch / "summary" / "results.csv")
    assert 0 < len(rows) < 12 or any(row["status"] == "incomplete" for row in rows)
    assert any(row["status"] == "ok" for row in rows)
    report = (batch / "summary" / "report.md").read_text(encoding="utf-8")
    assert "recording:" in report and "truncated" in report


@pytest.mark.parametrize("case", ["missing", "file", "no_stream", "not_a_recording"])
def test_bad_input_exit_2_with_path_and_fix(tmp_path, case):
    """Not a batch directory / no stream.msgpack / not a recording → exit 2, message names the path."""
    target = tmp_path / "b"
    if case == "file":
        target.write_text("x")
    elif case == "no_stream":
        target.mkdir()
    elif case == "not_a_recording":
        (target / "raw").mkdir(parents=True)
        (target / "raw" / "stream.msgpack").write_bytes(b"\x93\x01\x02\x03")
    r = analyzer("--batch", target, "--no-quality")
    assert r.returncode == 2
    assert str(target) in r.stderr
    assert "error:" in r.stderr


def test_bad_cpu_tdp_env_is_bad_input(batch):
    r = subprocess.run([sys.executable, "-m", "analyzer", "--batch", str(batch), "--no-quality"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env={**os.environ, "CPU_TDP_W": "abc"})
    assert r.returncode == 2 and "CPU_TDP_W" in r.stderr


def test_jobs_below_one_is_bad_input(batch):
    r = analyzer("--batch", batch, "--no-quality", "--jobs", "0")
    assert r.returncode == 2 and "--jobs 0" in r.stderr


def test_cpu_tdp_flag_scales_approx_energy(batch, tmp_path):
    """--cpu-tdp-w overrides the default 65 W linearly."""
    assert analyzer("--batch", batch, "--no-quality", "--no-plots").returncode == 0
    e65 = float(read_csv(batch / "summary" / "results.csv")[0]["cpu_energy_j_approx"])
    assert analyzer("--batch", batch, "--no-quality", "--no-plots", "--cpu-tdp-w", "130").returncode == 0
    e130 = float(read_csv(batch / "summary" / "results.csv")[0]["cpu_energy_j_approx"])
    assert e130 == pytest.approx(2 * e65, rel=1e-6)


def test_real_quality_step_runs_and_missing_checkpoint_is_contained(batch, tmp_path):
    """With the real analyzer.quality: code checks fill their columns; a missing BART checkpoint
    (--bart-checkpoint to an empty path, hub offline) leaves bartscore empty with an error, and
    the rest of the analysis completes."""
    ckpt = tmp_path / "no-such-checkpoint"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "analyzer", "--batch", str(batch), "--no-plots", "--no-progress",
                        "--bart-checkpoint", str(ckpt), "--device", "cpu"], cwd=ROOT, capture_output=True,
                       text=True, encoding="utf-8", timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_csv(batch / "summary" / "results.csv")
    code = [row for row in rows if row["task"] == "code"]
    assert code and all(row["code_parses"] == "true" for row in code)
    qa = [row for row in rows if row["task"] == "qa"]
    assert qa and all(row["bartscore"] == "" for row in qa)
    assert all(str(ckpt) in row["bartscore_model"] + row["bartscore_error"] for row in qa)
    assert all(row["gpu_energy_j"] != "" for row in rows)
    creative_ok = [row for row in rows if row["task"] == "creative" and row["status"] == "ok"]
    assert all(row["distinct_2"] != "" for row in creative_ok)


def test_live_with_a_bad_curve_key_file_says_which_file_and_exits_2(tmp_path):
    """A missing or wrong key file is a clear error naming it (no traceback); a valid pair runs (control)."""
    from shared.bus import free_port
    from telemetry.keys import write_pair

    _, good_secret = write_pair(tmp_path / "keys", "subscriber")
    server_public, _ = write_pair(tmp_path / "keys", "telemetry")
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello", encoding="utf-8")
    live = ["--live", "--telemetry-endpoint", f"tcp://127.0.0.1:{free_port()}", "--events-endpoint",
            f"tcp://127.0.0.1:{free_port()}", "--exit-after-s", "0.5", "--no-plots", "--no-quality"]
    for secret, server, named in ((tmp_path / "missing.key_secret", server_public, "missing.key_secret"),
                                  (good_secret, not_a_key, "notes.txt"),
                                  (good_secret, tmp_path / "absent.key", "absent.key")):
        r = analyzer(*live, "--curve-secret", secret, "--curve-server-key", server)
        assert r.returncode == 2, r.stderr
        assert named in r.stderr and "Traceback" not in r.stderr
    ok = analyzer(*live, "--curve-secret", good_secret, "--curve-server-key", server_public)
    assert ok.returncode == 0, ok.stderr


def test_report_languages_are_written_side_by_side(batch):
    """Observed: --report-lang zh overwrote the English report. Now both by default (report.md/.html in
    English, report.zh.md/.html in Chinese); en or zh writes only its own and leaves the other; the CSVs
    never change; --lang is the same flag (as in analyzer.compare)."""
    summary = batch / "summary"
    r = analyzer("--batch", batch, "--no-plots", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    csv = (summary / "results.csv").read_bytes()
    assert "## Problems" in (summary / "report.md").read_text(encoding="utf-8")
    assert '<html lang="en"' in (summary / "report.html").read_text(encoding="utf-8")
    assert "## 问题" in (summary / "report.zh.md").read_text(encoding="utf-8")
    assert '<html lang="zh-CN"' in (summary / "report.zh.html").read_text(encoding="utf-8")
    (summary / "report.md").write_text("mine", encoding="utf-8")
    r = analyzer("--batch", batch, "--no-plots", "--no-progress", "--report-lang", "zh")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (summary / "report.md").read_text(encoding="utf-8") == "mine"  # the English one is left alone
    r = analyzer("--batch", batch, "--no-plots", "--no-progress", "--lang", "en")
    assert r.returncode == 0 and "## Problems" in (summary / "report.md").read_text(encoding="utf-8")
    assert (summary / "results.csv").read_bytes() == csv
    assert analyzer("--batch", batch, "--report-lang", "fr").returncode == 2  # argparse names the choices


def test_lang_from_env(monkeypatch):
    from analyzer.i18n import lang_from_env

    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", "zh_TW.UTF-8")
    assert lang_from_env() == "zh"
    monkeypatch.setenv("LC_ALL", "en_GB.UTF-8")  # LC_ALL wins over LANG, as in POSIX
    assert lang_from_env() == "en"


def test_code_tests_skipped_without_a_sandbox_reach_the_row_and_report_md(batch, tmp_path):
    """No bwrap on PATH (as on a machine without it): the code rows say why their tests did not run,
    and report.md says it once under Problems; with the unsafe flag they run and report.md warns."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": str(tmp_path)}
    base = [sys.executable, "-m", "analyzer", "--batch", str(batch), "--no-plots", "--no-progress",
            "--bart-checkpoint", str(tmp_path / "none"), "--device", "cpu"]
    r = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    code = [row for row in read_csv(batch / "summary" / "results.csv") if row["task"] == "code"]
    assert code and all(row["code_tests_passed"] == "" and row["code_tests_sandbox"] == "skipped" for row in code)
    assert all("--unsafe-code-tests-without-sandbox" in row["code_tests_skipped"] for row in code)
    report = (batch / "summary" / "report.md").read_text(encoding="utf-8")
    assert f"code tests skipped for {len(code)} request(s)" in report and "bubblewrap" in report
    assert "WITHOUT a sandbox" not in report

    r = subprocess.run(base + ["--unsafe-code-tests-without-sandbox"], cwd=ROOT, capture_output=True, text=True,
                       encoding="utf-8", timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    code = [row for row in read_csv(batch / "summary" / "results.csv") if row["task"] == "code"]
    assert all(row["code_tests_passed"] == "true" and row["code_tests_skipped"] == "" for row in code)
    report = (batch / "summary" / "report.md").read_text(encoding="utf-8")
    assert "code tests skipped" not in report and f"code tests of {len(code)} request(s) ran WITHOUT a sandbox" in report
