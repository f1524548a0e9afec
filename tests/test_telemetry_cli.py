"""Every telemetry entry point answers --help; bad settings fail with a clear message."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("module,expect", [
    ("telemetry.__main__", "--gpu-hz"),
    ("telemetry.tail", "--json"),
    ("telemetry.record", "--out"),
    ("telemetry.prometheus", "--port"),
    ("telemetry.keys", "DIR"),
])
def test_help_answers(module, expect, capsys):
    """`python -m <module> --help` prints usage naming its main flag and exits 0."""
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert expect in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--gpu-hz", "0"], "gpu_hz must be positive"),
    (["--gpu", "sim", "--sim-gpus", "0"], "--sim-gpus must be at least 1"),
    (["--curve-secret", "no-such-dir/telemetry.key_secret"], "telemetry.keys"),
], ids=["zero_rate", "zero_sim_gpus", "missing_key_file"])
def test_bad_settings_exit_2_with_a_clear_message(args, message, tmp_path):
    """Impossible settings stop the daemon before it binds, naming the flag and the fix."""
    proc = subprocess.run([sys.executable, "-m", "telemetry", "--endpoint", "tcp://127.0.0.1:1", "--duration", "1",
                           "--watch", "--no-rapl", *args], cwd=tmp_path, capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, encoding="utf-8")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
