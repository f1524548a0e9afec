"""``python -m demo`` for real: the telemetry daemon (simulated GPU), the SmolLM2-135M server on the
CPU (llama.cpp via xllamacpp), the collector and the analyzer, all as subprocesses, with the
smallest settings (1 task x 1 load x 1 run, 16 tokens)."""
import subprocess
import sys

import pytest

from demo.figures import read_results
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

pytest.importorskip("xllamacpp", reason="the demo extra (xllamacpp) is part of `make install`")


def batch_dir_from(stdout: str):
    from pathlib import Path

    lines = [line for line in stdout.splitlines() if line.startswith("batch: ")]
    assert lines, f"the demo printed no 'batch: DIR' line:\n{stdout[-3000:]}"
    return Path(lines[-1].removeprefix("batch: ").strip())


# a hang guard, not a speed target: on a loaded shared CI machine the CPU model's 8 answers took 4 min
@pytest.mark.timeout(600)
def test_demo_runs_end_to_end_on_the_real_cpu_model(tmp_path):
    """All four tasks in English and Chinese (one load, one run, short answers): every successful row
    has a quality score with its basis and a 效质比, offline; the first row's GPU is marked simulated and
    its latency and energy are filled; report.html is written in the asked language; every child
    process is gone when the demo exits."""
    proc = subprocess.run([sys.executable, "-m", "demo", "--out", str(tmp_path), "--runs", "1", "--loads", "short",
                           "--max-tokens", "24", "--no-plots", "--report-lang", "zh", "--log-level", "info"],
                          cwd=ROOT, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    batch = batch_dir_from(proc.stdout)
    assert batch.parent == tmp_path and batch.name.startswith("experiments_1_")
    rows = read_results(batch / "summary" / "results.csv")
    assert len(rows) == 8 and {r["task"] for r in rows} == {"qa", "summary", "code", "creative"}
    assert [r["error"] for r in rows if r["status"] != "ok"] == []
    for r in rows:
        assert r["quality_score"] != "" and 0 <= float(r["quality_score"]) <= 1, r
        assert r["quality_per_kj"] != "" and float(r["quality_per_kj"]) >= 0, r
        bases = {"code": ("code_checks",), "creative": ("diversity",)}.get(r["task"], ("bartscore", "chrf"))
        assert r["quality_basis"] in bases, r
    page = (batch / "summary" / "report.zh.html").read_text(encoding="utf-8")
    assert '<html lang="zh-CN"' in page and "效质比" in page
    assert not (batch / "summary" / "report.html").exists()  # --report-lang zh writes only the Chinese one
    row = next(r for r in rows if r["task"] == "qa")
    assert row["status"] == "ok" and row["model"] == "smollm2-135m-instruct"
    assert row["gpu_simulated"] == "true"
    assert float(row["latency_s"]) > 0 and float(row["first_token_s"]) > 0
    assert float(row["gpu_energy_j"]) > 0 and float(row["cpu_energy_j"]) > 0
    # the daemon found the model server by its port: its own CPU time, apart from the host's
    assert all(float(r["server_cpu_s"]) > 0 and 0 < float(r["cpu_energy_j_server"]) <= float(r["cpu_energy_j"]) * 1.01
               for r in rows), [(r["server_cpu_s"], r["cpu_energy_j_server"], r["cpu_energy_j"]) for r in rows]
    assert 0 < float(row["gpu_coverage"]) <= 1
    # the key-figures table and the simulated-GPU warning are printed
    assert "| smollm2-135m-instruct | qa | short | 2/2 |" in proc.stdout  # English and Chinese
    assert "SIMULATED" in proc.stdout
    # no BART checkpoint offline: the column is empty, chrF stands in, and the quality module's reason is shown
    if not row["bartscore"]:
        assert row["quality_basis"] == "chrf" and "BARTScore is empty, so" in proc.stdout
    # every child the demo started was stopped (their stop lines are logged with return codes)
    for child in ("collector", "llm_server", "telemetry"):
        assert f"child={child}" in proc.stderr and "child_stopped" in proc.stderr
    assert proc.stderr.count("child_stopped") == 3
