"""The server watch: the process listening on the LLM server's port and its children, found with
psutil, their CPU time recorded in tel.host (a real listening process tree, no mock)."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from shared.messages import TelHost
from telemetry.host import HostReader, ServerWatch, listening_pids

# A server that listens, and a child that burns CPU (like Ollama's runner).
SERVER = """
import socket, subprocess, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
child = subprocess.Popen([sys.executable, "-c", "import time\\nend = time.time() + 30\\nwhile time.time() < end: pass"])
print(s.getsockname()[1], child.pid, flush=True)
time.sleep(30)
"""


@pytest.fixture
def server():
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port, child = (int(x) for x in proc.stdout.readline().split())
        yield proc, port, child
    finally:
        kill_children = f"import psutil\nfor c in psutil.Process({proc.pid}).children(True): c.kill()"
        subprocess.run([sys.executable, "-c", kill_children], check=False)
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
def test_watch_finds_the_listener_and_its_children_and_counts_their_cpu(server):
    proc, port, child = server
    if proc.pid not in listening_pids(port):
        pytest.skip("this system does not show listening sockets' processes to this user")
    watch = ServerWatch(port, rescan_s=0.0)
    first = watch.read()
    assert first["server_port"] == port and {proc.pid, child} <= set(first["server_pids"])
    deadline = time.monotonic() + 10  # the busy child gets a share of a shared machine's cores, not a whole one
    while True:
        time.sleep(0.25)
        second = watch.read()
        if second["server_cpu_s"] - first["server_cpu_s"] > 0.2 or time.monotonic() > deadline:
            break
    assert second["server_cpu_s"] - first["server_cpu_s"] > 0.2  # the child's busy loop
    body = HostReader(watch=(), rapl_root=None, server_port=port).read()
    TelHost.check(body, strict=True)
    assert body["cpu_count"] >= 1 and body["server_cpu_s"] > 0


def test_nothing_listening_gives_only_the_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening
        out = ServerWatch(port, rescan_s=0.0).read()
    assert out == {"server_port": port}
    body = HostReader(watch=(), rapl_root=None, server_port=port).read()
    TelHost.check(body, strict=True)
    assert "server_cpu_s" not in body


LATE_SERVER = """
import socket, sys, time
time.sleep(float(sys.argv[2]))
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("listening", flush=True)
time.sleep(30)
"""


@pytest.fixture
def late_server():
    """A server that starts listening on a known port some time after it is launched (as the demo's LLM
    server starts after the telemetry daemon)."""
    procs = []

    def start(port: int, delay_s: float) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", LATE_SERVER, str(port), str(delay_s)], stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
def test_a_server_that_starts_after_the_daemon_is_found_at_once_not_after_the_rescan(late_server):
    """Nothing listens at the first read: server_cpu_s is absent (never 0), and the port is searched again at
    every read after missing_rescan_s, not only every rescan_s (2 s: the demo's first requests fell before)."""
    from shared.bus import free_port

    port = free_port()
    watch = ServerWatch(port, rescan_s=60.0, missing_rescan_s=0.05)
    assert watch.read() == {"server_port": port}
    proc = late_server(port, 0.0)
    assert proc.stdout.readline().strip() == "listening"
    if proc.pid not in listening_pids(port):
        pytest.skip("this system does not show listening sockets' processes to this user")
    time.sleep(0.1)
    found = watch.read()
    assert found["server_pids"] == [proc.pid] and found["server_cpu_s"] >= 0


@pytest.mark.slow
def test_the_collector_waits_until_the_daemon_found_the_server(late_server, zctx, tmp_path):
    """A real daemon (in a thread, real PUB socket) watches a port where the server starts 0.6 s later;
    the recorder's wait returns once tel.host carries server_cpu_s, and at its bound names the daemon
    still searching (a port nobody opens)."""
    import threading

    from collector.recorder import Recorder
    from shared.bus import free_port
    from shared.recording import read_recording
    from telemetry.daemon import Daemon, DaemonConfig

    port, nobody = free_port(), free_port()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    stop = threading.Event()
    daemon = Daemon(DaemonConfig(endpoint=endpoint, watch=(), rapl_root=None, server_port=port, host_hz=20,
                                 heartbeat_s=0.2), [], "none",
                    host=HostReader(watch=(), rapl_root=None, server_port=port), ctx=zctx)
    th = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    th.start()
    try:
        assert daemon.started.wait(5)
        rec = Recorder(tmp_path / "rec.msgpack", None, endpoint, ctx=zctx, clock_probe_s=None)
        try:
            rec.wait_heartbeat(5)
            late_server(port, 0.6)
            assert rec.wait_server_found(port, timeout_s=10) == []
            assert rec.wait_server_found(nobody, timeout_s=0.5) == []  # the daemon watches another port
            assert rec.wait_server_found(None, timeout_s=0.5) == []
        finally:
            rec.close()
        hosts = [p for t, p in read_recording(tmp_path / "rec.msgpack")[1] if t == "tel.host"]
        # before the server listened: the port alone; after: its CPU time (absent, never a 0 for "not seen")
        assert "server_cpu_s" not in hosts[0] and "server_cpu_s" in hosts[-1]
        assert all(("server_cpu_s" in h) == ("server_pids" in h) for h in hosts)
    finally:
        stop.set()
        th.join(5)

    # a daemon watching a port nobody opens: the wait ends at its bound and names it
    stop = threading.Event()
    endpoint2 = f"tcp://127.0.0.1:{free_port()}"
    daemon = Daemon(DaemonConfig(endpoint=endpoint2, watch=(), rapl_root=None, server_port=nobody, host_hz=20,
                                 heartbeat_s=0.2), [], "none",
                    host=HostReader(watch=(), rapl_root=None, server_port=nobody), ctx=zctx)
    th = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    th.start()
    try:
        assert daemon.started.wait(5)
        with Recorder(tmp_path / "rec2.msgpack", None, endpoint2, ctx=zctx, clock_probe_s=None) as rec:
            rec.wait_heartbeat(5)
            assert rec.wait_server_found(nobody, timeout_s=0.8) == [endpoint2]
    finally:
        stop.set()
        th.join(5)
