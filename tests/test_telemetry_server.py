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
    time.sleep(0.5)
    second = watch.read()
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
