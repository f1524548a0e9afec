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


def test_demo_runs_end_to_end_on_the_real_cpu_model(tmp_path):
    """The reported batch has results.csv with a successful row whose GPU is marked simulated and
    whose latency and energy are filled; every child process is gone when the demo exits."""
    proc = subprocess.run([sys.executable, "-m", "demo", "--out", str(tmp_path), "--runs", "1", "--tasks", "qa",
                           "--loads", "short", "--max-tokens", "16", "--no-plots", "--log-level", "info"],
                          cwd=ROOT, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    batch = batch_dir_from(proc.stdout)
    assert batch.parent == tmp_path and batch.name.startswith("experiments_1_")
    rows = read_results(batch / "summary" / "results.csv")
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok" and row["model"] == "smollm2-135m-instruct"
    assert row["gpu_simulated"] == "true"
    assert float(row["latency_s"]) > 0 and float(row["first_token_s"]) > 0
    assert float(row["gpu_energy_j"]) > 0 and float(row["cpu_energy_j"]) > 0
    assert 0 < float(row["gpu_coverage"]) <= 1
    # the key-figures table and the simulated-GPU warning are printed
    assert "| smollm2-135m-instruct | qa | short | 1/1 |" in proc.stdout
    assert "SIMULATED" in proc.stdout
    # no BART checkpoint offline: the column is empty and the quality module's reason is shown
    if not row["bartscore"]:
        assert "BARTScore is empty:" in proc.stdout
    # every child the demo started was stopped (their stop lines are logged with return codes)
    for child in ("collector", "llm_server", "telemetry"):
        assert f"child={child}" in proc.stderr and "child_stopped" in proc.stderr
    assert proc.stderr.count("child_stopped") == 3
