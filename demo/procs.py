"""Child processes the demo starts and must always stop, even on Ctrl-C.

Each child runs in its own process group (shared/procs.py: POSIX a new session, Windows
CREATE_NEW_PROCESS_GROUP), so a Ctrl-C in the terminal reaches only the demo, which then
stops its children in order: first a polite stop (SIGINT to the group on POSIX, CTRL_BREAK_EVENT
on Windows: every entry point of this project treats both like Ctrl-C), then a kill after a
timeout. Signalling the whole group also stops grandchildren (the analyzer the collector runs).
The Windows branch has never run on Windows (see shared/procs.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from shared import timebase
from shared.procs import group_popen_kwargs, signal_child
from shared.logs import get_logger

log = get_logger("demo.procs")

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = sys.platform == "win32"


class Child:
    """One ``python -m ...`` subprocess with output to a log file (or inherited), stopped by :meth:`stop`."""

    def __init__(self, name: str, module_args: list[str], log_path: Path | None = None,
                 env: dict[str, str] | None = None):
        self.name = name
        self.argv = [sys.executable, "-m", *module_args]
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._log_fh: IO[bytes] | None = None

    def start(self) -> "Child":
        out = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # a file, never an undrained pipe: a chatty child (llama.cpp) would block on a full pipe
            self._log_fh = open(self.log_path, "ab")
            out = self._log_fh
        self.proc = subprocess.Popen(self.argv, cwd=str(ROOT), env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT if out is not None else None,
                                     **group_popen_kwargs())
        log.info("child_started", child=self.name, pid=self.proc.pid, log=str(self.log_path) if self.log_path else "-")
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def wait(self, timeout_s: float | None = None) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.wait(timeout_s)

    def log_tail(self, max_chars: int = 2000) -> str:
        """The end of the child's log file (for error messages); '' when output was inherited."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        if self._log_fh is not None:
            self._log_fh.flush()
        data = self.log_path.read_bytes()[-max_chars:]
        return data.decode("utf-8", errors="replace")

    def _signal_group(self, polite: bool) -> None:
        assert self.proc is not None
        signal_child(self.proc, polite)

    def kill(self) -> None:
        """Kill the child and its process group at once (no polite stop first)."""
        if self.alive():
            self._signal_group(polite=False)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Ask the child to stop; kill it (and its group) if it is still there after ``timeout_s``."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self._signal_group(polite=True)
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("child_killed", child=self.name, pid=self.proc.pid,
                                reason=f"still running {timeout_s:g} s after the stop request")
                    self._signal_group(polite=False)
                    self.proc.wait(10)
            log.info("child_stopped", child=self.name, pid=self.proc.pid, returncode=self.proc.returncode)
            return self.proc.returncode
        finally:
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None


def wait_until(predicate, timeout_s: float, children: list[Child], step_s: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true (True), the time is up (False) or a child died (False)."""
    deadline = timebase.now_s() + timeout_s
    while timebase.now_s() < deadline:
        if predicate():
            return True
        if any(not c.alive() for c in children):
            return False
        time.sleep(step_s)
    return predicate()
