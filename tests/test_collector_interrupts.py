"""Ctrl-C at the end of a batch, as a terminal sends it (SIGINT to the whole foreground process group:
the collector and its analyzer child): no traceback from either, and the resume line prints last."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from collector.outcome import resume_command
from shared.recording import RecordingError, RecordingReader
from tests.conftest import ROOT
from tests.stubs import ollama_stub, serve
from tests.test_collector_cli import collector_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="a terminal's Ctrl-C is a process-group SIGINT on POSIX")]


async def _wait_for(pred, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return False


def _has_req_start(stream) -> bool:
    try:
        return stream.exists() and any(t == "req.start" for t, _ in RecordingReader(stream))
    except RecordingError:  # created, header not written yet
        return False


def _analyzer_child(pid: int):
    """The collector's analyzer child (a psutil.Process), or None while there is none."""
    import psutil

    try:
        return next((c for c in psutil.Process(pid).children() if "analyzer" in c.cmdline()), None)
    except psutil.Error:
        return None


async def _hold_analyzer_loading(pid: int, timeout_s: float):
    """The analyzer child stopped (SIGSTOP) while it runs Python with numpy loaded: it is stopped as soon as
    it is seen, then let run 10 ms at a time until numpy is mapped. On a busy machine a check that lets it
    run could find it done already (the analysis of one request takes about a second)."""
    deadline = time.monotonic() + timeout_s
    while (child := _analyzer_child(pid)) is None:
        assert time.monotonic() < deadline, "the collector started no analyzer child"
        await asyncio.sleep(0.02)
    child.suspend()
    while not any("numpy" in m.path for m in child.memory_maps()):
        assert time.monotonic() < deadline, "the analyzer child never loaded numpy"
        child.resume()
        await asyncio.sleep(0.01)
        child.suspend()
    return child


@pytest.mark.parametrize("second", ["ctrl-c", "sigterm"])
async def test_a_second_ctrl_c_during_the_closing_analysis_prints_no_traceback_and_the_resume_line_last(tmp_path,
                                                                                                        second):
    """First Ctrl-C while a request hangs: the batch is interrupted and its analysis starts; the second
    Ctrl-C reaches the collector and the analyzer child together. Both stop with one line each. A SIGTERM
    to the collector alone there acts the same for the collector (the child finishes or is stopped)."""
    batch = tmp_path / "b"
    batch.mkdir()
    stream, err_path = batch / "raw" / "stream.msgpack", tmp_path / "stderr.txt"
    app = ollama_stub.make_app(load_s=0.0)
    async with serve(app) as url:
        with open(err_path, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", "--exp-dir", str(batch), "--models", "hang", "--tasks", "qa",
                "--loads", "short", "--langs", "en", "--base-url", url, "--no-telemetry", "--no-progress",
                cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL, stderr=err, env=collector_env(),
                start_new_session=True)  # its own group: the test plays the terminal for it alone
            try:
                assert await _wait_for(lambda: _has_req_start(stream), 60)
                os.killpg(proc.pid, signal.SIGINT)
                # the analyzer child is running Python (loading numpy): the Ctrl-C lands inside it, where the
                # traceback used to come from (the same group: it gets the SIGINT with the collector)
                child = await _hold_analyzer_loading(proc.pid, 60)
                if second == "ctrl-c":
                    os.killpg(proc.pid, signal.SIGINT)
                else:
                    proc.send_signal(signal.SIGTERM)
                child.resume()
                rc = await asyncio.wait_for(proc.wait(), 120)
            finally:
                if proc.returncode is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
    text = err_path.read_text(encoding="utf-8", errors="replace")
    assert rc == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    if second == "ctrl-c":
        assert text.count("analysis interrupted") == 2, text[-3000:]  # the analyzer's own line, then the collector's
        assert ("analysis interrupted: results.csv and the reports were not updated; run it again with "
                f"python -m analyzer --batch {batch}") in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines[-2].startswith("batch INTERRUPTED:")
    assert lines[-1].strip().endswith(resume_command(batch)), lines[-3:]


@pytest.mark.parametrize("level", ["warning", "info"])
async def test_log_level_reaches_the_analyzer_child(tmp_path, level):
    """`--log-level warning` quiets the closing analysis too (its outputs_written info line is gone);
    at info the same line shows: the positive control."""
    from tests.test_collector_cli import run_collector

    batch = tmp_path / "b"
    batch.mkdir()
    async with serve(ollama_stub.make_app(load_s=0.0)) as url:
        rc, text = await run_collector("--exp-dir", str(batch), "--models", "ok", "--tasks", "qa", "--loads", "short",
                                       "--langs", "en", "--base-url", url, "--no-telemetry", "--no-progress",
                                       "--log-level", level, "--analyzer-args", "--no-quality --no-plots")
    assert rc == 0, text[-3000:]
    assert (batch / "summary" / "results.csv").is_file()
    assert ("outputs_written" in text) == (level == "info"), text[-3000:]
    if level == "warning":
        assert "[info" not in text
