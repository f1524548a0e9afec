"""Helpers of the fault suite (tests/test_fault_*.py): real ``python -m`` subprocesses with output
in files (always killed at teardown), bounded waits on a growing recording, CSV reading."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from shared.recording import RecordingReader
from tests.conftest import ROOT, free_port


def loopback() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


class Procs:
    """Starts ``python -m ...`` subprocesses with stdout and stderr in files; kills what is left at teardown.

    ``pythonpath`` dirs go first on the child's PYTHONPATH (e.g. the fake ``pynvml`` of tests/)."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "procs"
        self.dir.mkdir(exist_ok=True)
        self.started: list[subprocess.Popen] = []

    def start(self, *args: str, env: dict[str, str] | None = None, pythonpath: list[Path] = ()) -> subprocess.Popen:
        stem = f"{len(self.started)}-{args[0]}"
        full_env = {**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(ROOT)])
        out, err = self.dir / f"{stem}.out", self.dir / f"{stem}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=full_env, stdout=fo, stderr=fe)
        proc.out_path, proc.err_path = out, err
        self.started.append(proc)
        return proc

    @staticmethod
    def stdout(proc: subprocess.Popen) -> str:
        return proc.out_path.read_text(encoding="utf-8", errors="replace")

    @staticmethod
    def stderr(proc: subprocess.Popen) -> str:
        return proc.err_path.read_text(encoding="utf-8", errors="replace")

    @classmethod
    def output(cls, proc: subprocess.Popen) -> str:
        """stdout, then stderr (the logs)."""
        return cls.stdout(proc) + cls.stderr(proc)

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


def recorded(path: Path) -> list[tuple[str, dict]]:
    """Every complete message of a (possibly growing) recording; [] before it exists."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    return list(RecordingReader(path))


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.05) -> None:
    """Poll until ``predicate()``; fail the test (not hang) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def analyzer(batch: Path, *extra: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", "--batch", str(batch), "--no-quality", "--no-plots",
                           "--no-progress", *extra], cwd=ROOT, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout_s)


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_ollama_stub(procs: Procs, token_delay_s: float = 0.001, load_s: float = 0.0) -> str:
    """The Ollama stub (tests/stubs/ollama_stub.py) in its own process; its base URL once it answers.

    Its own process, so the test can block (sleep, wait) without stalling the server."""
    port = free_port()
    stub = procs.start("tests.stubs.ollama_stub", "--port", str(port), "--token-delay-s", str(token_delay_s),
                       "--load-s", str(load_s))
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(url + "/api/version") or stub.poll() is not None, 30, "the Ollama stub to answer")
    assert stub.poll() is None, Procs.output(stub)
    return url
