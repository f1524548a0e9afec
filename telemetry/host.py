"""Host readings through psutil (CPU, memory, swap, disk, network, watched processes) plus RAPL.

``HostReader.read()`` returns one ``tel.host`` body. Counters are cumulative since boot
(bytes); a counter psutil cannot provide on this OS is left absent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import psutil

from shared import timebase
from shared.messages import TelHost
from telemetry.rapl import RaplReader

_MIB = 1024 * 1024
DEFAULT_WATCH = ("ollama", "llama-server", "vllm")
DEFAULT_SERVER_PORT = 11434  # Ollama's; the collector's default backend


def matches(name: str, cmdline: list[str], watch: str) -> bool:
    """Whether a process is the watched program ``watch`` (by name, or by an early cmdline word).

    vLLM runs as ``python -m vllm...`` or a ``vllm`` script, so the first words are checked too."""
    watch = watch.lower()
    if name.lower().startswith(watch):
        return True
    for word in cmdline[:3]:
        base = word.replace("\\", "/").rsplit("/", 1)[-1].lower()
        if base.startswith(watch) or base.startswith(watch + "."):
            return True
    return False


class ProcessWatch:
    """Finds processes by name every ``rescan_s`` and reports their CPU % and RSS."""

    def __init__(self, names: Iterable[str], rescan_s: float = 2.0):
        self.names = tuple(names)
        self.rescan_s = rescan_s
        self._procs: dict[str, dict[int, psutil.Process]] = {n: {} for n in self.names}
        self._last_scan = float("-inf")

    def _rescan(self) -> None:
        found: dict[str, dict[int, psutil.Process]] = {n: {} for n in self.names}
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                name = proc.info.get("name") or ""
                cmd = proc.info.get("cmdline") or []
            except (psutil.Error, KeyError):
                continue
            for watch in self.names:
                if matches(name, cmd, watch):
                    # Keep the old Process object: cpu_percent() measures since its previous call.
                    found[watch][proc.pid] = self._procs[watch].get(proc.pid, proc)
        self._procs = found

    def read(self) -> dict[str, dict[str, Any]]:
        """``{name: {pid, pids, cpu_pct, rss_mib}}`` summed over that name's processes; absent if none."""
        if not self.names:
            return {}
        now = timebase.now_s()
        if now - self._last_scan >= self.rescan_s:
            self._rescan()
            self._last_scan = now
        out: dict[str, dict[str, Any]] = {}
        for watch, procs in self._procs.items():
            cpu, rss, pids = 0.0, 0, []
            for pid, proc in sorted(procs.items()):
                try:
                    with proc.oneshot():
                        cpu += proc.cpu_percent(interval=None)
                        rss += proc.memory_info().rss
                    pids.append(pid)
                except psutil.Error:
                    continue  # exited since the scan
            if pids:
                out[watch] = {"pid": pids[0], "pids": pids, "cpu_pct": cpu, "rss_mib": rss / _MIB}
        return out


def listening_pids(port: int) -> set[int]:
    """PIDs of processes with a TCP socket listening on ``port`` (any address). Seeing other
    users' sockets can need privileges on some systems: then the set is empty."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return set()
    return {c.pid for c in conns if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}


class ServerWatch:
    """The LLM server found by the port it listens on, with its children (Ollama runs each model in
    a runner child process), rescanned every ``rescan_s``. Reports their cumulative CPU time: the
    analyzer takes differences at window edges, so a missed tick loses nothing.

    Until a process is found, ``server_cpu_s`` is absent (never 0: "not seen" is not "idle") and the
    port is rescanned every ``missing_rescan_s``, so a server that starts after the daemon is found
    within a fraction of a second (the collector waits for that before its first request)."""

    def __init__(self, port: int, rescan_s: float = 2.0, missing_rescan_s: float = 0.2):
        self.port = port
        self.rescan_s = rescan_s
        self.missing_rescan_s = missing_rescan_s
        self._procs: dict[int, psutil.Process] = {}
        self._last_cpu: dict[int, float] = {}   # pid -> last CPU time seen (kept after it exits)
        self._last_scan = float("-inf")

    def _rescan(self) -> None:
        found: dict[int, psutil.Process] = {}
        for pid in listening_pids(self.port):
            try:
                root = self._procs.get(pid) or psutil.Process(pid)
                found[pid] = root
                for child in root.children(recursive=True):
                    found[child.pid] = self._procs.get(child.pid, child)
            except psutil.Error:
                continue
        self._procs = found

    def read(self) -> dict[str, Any]:
        """``{server_port, server_pids, server_cpu_s}``; only the port when no process was ever found."""
        now = timebase.now_s()
        if now - self._last_scan >= (self.rescan_s if self._last_cpu else self.missing_rescan_s):
            self._rescan()
            self._last_scan = now
        pids = []
        for pid, proc in sorted(self._procs.items()):
            try:
                t = proc.cpu_times()
                self._last_cpu[pid] = t.user + t.system
                pids.append(pid)
            except psutil.Error:
                continue  # exited: its last CPU time stays in the sum
        out: dict[str, Any] = {"server_port": self.port}
        if self._last_cpu:
            out["server_pids"] = pids
            out["server_cpu_s"] = float(sum(self._last_cpu.values()))
        return out


class HostReader:
    def __init__(self, watch: Iterable[str] = DEFAULT_WATCH, rapl_root: Path | None = None,
                 server_port: int | None = None):
        self.watch = ProcessWatch(watch)
        self.rapl = RaplReader(rapl_root) if rapl_root is not None else None
        self.server = ServerWatch(server_port) if server_port else None
        self.cpu_count = psutil.cpu_count(logical=True)
        # The first cpu_percent() call only sets the baseline (it returns a meaningless 0.0).
        psutil.cpu_percent(interval=None)
        psutil.cpu_percent(interval=None, percpu=True)

    def read(self) -> dict[str, Any]:
        """One ``tel.host`` body (shared.messages.TelHost) as its message map."""
        vm = psutil.virtual_memory()
        body = TelHost(cpu_pct=psutil.cpu_percent(interval=None),
                       cpu_pct_per_core=psutil.cpu_percent(interval=None, percpu=True),
                       mem_used_mib=(vm.total - vm.available) / _MIB, mem_total_mib=vm.total / _MIB)
        try:
            body.swap_used_mib = psutil.swap_memory().used / _MIB
        except (OSError, RuntimeError):
            pass  # no swap information on this system
        disk = psutil.disk_io_counters()
        if disk is not None:
            body.disk_read_b, body.disk_write_b = disk.read_bytes, disk.write_bytes
        net = psutil.net_io_counters()
        if net is not None:
            body.net_sent_b, body.net_recv_b = net.bytes_sent, net.bytes_recv
        if self.rapl is not None:
            body.rapl_uj = self.rapl.read() or None
        body.procs = self.watch.read() or None
        body.cpu_count = self.cpu_count or None
        if self.server is not None:
            for k, v in self.server.read().items():
                setattr(body, k, v)
        return body.to_msg()
