"""``python -m collector --serve HOST:PORT``: the live page for the batch, served by a child process
``python -m analyzer --live --serve ... --no-outputs`` (the collector never imports the analyzer's
heavy parts). The child subscribes to the same telemetry and to the collector's events; it writes no
files (the collector's own analysis of its recording writes the batch's files) and skips the quality
step (that analysis scores it). Started before the batch so it hears batch.start; stopped at exit."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from shared.logs import get_logger
from shared.procs import stop_child

log = get_logger("collector.live_child")

URL_PREFIX = "live page: "
SUBSCRIBE_S = 0.3


class LivePageError(RuntimeError):
    """The live page's process did not start; the message says why and how to go on without it."""


def live_command(serve: str, telemetry_endpoints: list[str], events_endpoint: str, allow_remote: bool = False,
                 curve_secret: Path | None = None, curve_server_key: Path | None = None,
                 lang: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "analyzer", "--live", "--serve", serve, "--no-outputs", "--no-quality",
           "--no-plots", "--no-progress", "--events-endpoint", events_endpoint]
    for ep in telemetry_endpoints:
        cmd += ["--telemetry-endpoint", ep]
    if allow_remote:
        cmd.append("--allow-remote")
    if curve_secret is not None:
        cmd += ["--curve-secret", str(curve_secret)]
    if curve_server_key is not None:
        cmd += ["--curve-server-key", str(curve_server_key)]
    if lang:
        cmd += ["--report-lang", lang]
    return cmd


class LivePage:
    """The child process; ``url`` once it listens and is subscribed."""

    def __init__(self, cmd: list[str]):
        self.cmd = cmd
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self._ready = threading.Event()
        self._stderr: list[str] = []

    def start(self, timeout_s: float = 60.0) -> str:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     encoding="utf-8", errors="replace")
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._ready.wait(timeout_s) or self.url is None:
            self.stop()
            tail = "".join(self._stderr[-5:]).strip()
            raise LivePageError(f"the live page did not start ({tail or 'no output'}); run the batch without --serve, "
                                "or start `python -m analyzer --live --serve HOST:PORT` yourself")
        time.sleep(SUBSCRIBE_S)  # its SUB sockets are connected; let the subscriptions reach the publishers
        return self.url

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(URL_PREFIX) and self.url is None:
                self.url = line[len(URL_PREFIX):].strip()
                self._ready.set()
        self._ready.set()  # exited without a URL

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:  # drained so the child never blocks on a full pipe
            self._stderr.append(line)
            del self._stderr[:-50]

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None:
            stop_child(self.proc, timeout_s, own_group=False, terminate=True, kill_wait_s=timeout_s)
