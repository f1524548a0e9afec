"""Run a case's tests against generated code in a separate, limited Python process (pass@1).

Never in the analyzer's process: the child is ``sys.executable -I`` (no user site, no PYTHON* env,
no script dir on sys.path) in a fresh temporary directory, with a wall-clock timeout that kills its
whole process group, and on POSIX rlimits on address space, CPU seconds and written file size. This
keeps runaway or careless code from harming the run; it is not a security boundary against hostile
code (no network or filesystem isolation beyond the temp cwd).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_RUNNER = Path(__file__).with_name("_sandbox_runner.py")
_MEMORY_MIB = 1024
_FILE_MIB = 16
_ERROR_CHARS = 300


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one test run: ``passed`` and, when it did not, a short ``error``."""
    passed: bool
    error: str | None = None


def _child_env(tmp: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp, "TMPDIR": tmp, "TEMP": tmp, "TMP": tmp}
    for key in ("SYSTEMROOT", "COMSPEC", "PATHEXT", "LANG", "LC_ALL"):  # Windows needs SYSTEMROOT to start Python
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:_ERROR_CHARS]


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child and anything it started (POSIX: its session's process group)."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
    else:
        proc.kill()


def _wait_keep_zombie(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for the child to exit without reaping it, so its pid (= the group id) cannot be reused
    before the group is killed. True when it exited within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def run_tests(code: str, tests: str, entry: str | None = None, timeout_s: float = 10.0) -> SandboxResult:
    """Execute ``code`` then ``tests`` (asserts that call ``entry``) in a child process."""
    if timeout_s <= 0:
        raise ValueError(f"code_timeout_s must be > 0, got {timeout_s}")
    with tempfile.TemporaryDirectory(prefix="quality-sandbox-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "solution.py").write_text(code, encoding="utf-8")
        (tmp_path / "tests.py").write_text(tests, encoding="utf-8")
        stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        cmd = [sys.executable, "-I", "-X", "utf8", str(_RUNNER), "solution.py", "tests.py", entry or "",
               str(_MEMORY_MIB), str(int(timeout_s) + 1), str(_FILE_MIB)]
        # Output goes to files in the temp dir so RLIMIT_FSIZE also bounds a print loop.
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            kwargs: dict = {"start_new_session": True} if os.name == "posix" else {
                "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
            proc = subprocess.Popen(cmd, cwd=tmp, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=_child_env(tmp), **kwargs)
            try:
                if os.name == "posix" and hasattr(os, "waitid"):
                    exited = _wait_keep_zombie(proc, timeout_s)
                    _kill_group(proc)  # also whatever the code left running in the background
                else:
                    try:
                        proc.wait(timeout=timeout_s)
                        exited = True
                    except subprocess.TimeoutExpired:
                        exited = False
                        _kill_group(proc)
                rc = proc.wait()
            finally:
                if proc.poll() is None:  # an exception above: never leave the child running
                    _kill_group(proc)
                    proc.wait()
            if not exited:
                return SandboxResult(False, f"timeout: tests did not finish within {timeout_s:g} s")
        if rc == 0:
            return SandboxResult(True, None)
        stderr = stderr_path.read_bytes()[-8192:].decode("utf-8", "replace")
        if rc < 0:
            return SandboxResult(False, f"killed by signal {-rc} (resource limit?): {_last_line(stderr)}")
        return SandboxResult(False, _last_line(stderr))
