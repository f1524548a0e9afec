"""Fault: the analyzer is killed (SIGKILL) while it writes its outputs. The recording is the source of
truth: the analyzer never writes to it, and a rerun gives byte-for-byte the outputs of an
uninterrupted run. Real ``python -m analyzer --batch`` subprocesses on the stored tiny batch
(tests/data/analyzer_batch, a synthetic recording with a SIMULATED GPU)."""
import hashlib
import shutil
import time

import pytest

from tests.conftest import ROOT
from tests.fault_helpers import analyzer, procs  # noqa: F401

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

TINY = ROOT / "tests" / "data" / "analyzer_batch"
OUTPUTS = ("results.csv", "stats.csv", "pareto.csv", "report.md")


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(batch) -> dict[str, bytes]:
    return {name: (batch / "summary" / name).read_bytes() for name in OUTPUTS}


def test_killed_while_writing_then_rerun_gives_the_same_bytes(procs, tmp_path):
    clean = tmp_path / "clean"
    shutil.copytree(TINY, clean)
    assert analyzer(clean).returncode == 0
    expected = outputs(clean)

    batch = tmp_path / "killed"
    shutil.copytree(TINY, batch)
    before = digest(batch / "raw" / "stream.msgpack")
    first = procs.start("analyzer", "--batch", str(batch), "--no-quality", "--no-plots", "--no-progress")
    results = batch / "summary" / "results.csv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not results.exists() and first.poll() is None:
        time.sleep(0.002)
    first.kill()  # right after its first output file appeared: in the middle of writing the outputs
    first.wait(10)
    assert results.exists(), procs.output(first)
    assert results.read_bytes() == expected["results.csv"]  # written to a temp file and renamed: never half a CSV
    assert not (batch / "summary" / "report.md").exists()  # written last: the run was cut mid-way
    assert digest(batch / "raw" / "stream.msgpack") == before  # the recording is never touched

    r = analyzer(batch)
    assert r.returncode == 0, r.stderr
    assert outputs(batch) == expected  # nothing lost: the rerun is identical to an uninterrupted run
    assert digest(batch / "raw" / "stream.msgpack") == before
