"""Measuring-proxy benchmark: latency the proxy adds to each streamed chunk on loopback.

The Ollama stub and the proxy run as their own processes on 127.0.0.1. Every chunk the stub writes
carries its wall-clock ``created_at`` (ns); the client stamps each chunk's arrival on the same clock.
Added latency per chunk = median(arrival − created_at) through the proxy − the same median straight
from the stub (the stub's constant offset cancels). Target: under 1 ms.
"""
from __future__ import annotations

import asyncio
import calendar
import shutil
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from shared.procs import stop_child

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _created_ns(iso: str) -> int:
    """``2026-01-02T03:04:05.123456789Z`` → wall-clock ns."""
    secs = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int(iso[20:29])


def _wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.1)


async def _delays(url: str, requests: int, tokens: int) -> list[float]:
    """Arrival − created_at of every answer chunk, ms (one request at a time)."""
    out: list[float] = []
    async with aiohttp.ClientSession() as s:
        for _ in range(requests):
            async with s.post(url + "/api/generate", json={"model": "ok", "prompt": "hi",
                                                           "options": {"num_predict": tokens}}) as resp:
                async for line in resp.content:
                    arrived = time.time_ns()
                    obj = json.loads(line)
                    if not obj.get("done"):
                        out.append((arrived - _created_ns(obj["created_at"])) / 1e6)
    return out


def run(quick: bool = False) -> str:
    stub_port, proxy_port = _free_port(), _free_port()
    requests, tokens = (5, 32) if quick else (30, 64)
    procs = []
    out_dir = tempfile.mkdtemp(prefix="bench-proxy-")
    try:
        stub = subprocess.Popen([sys.executable, "-m", "tests.stubs.ollama_stub", "--port", str(stub_port),
                                 "--load-s", "0", "--token-delay-s", "0.005"], cwd=str(ROOT),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(stub)
        _wait_port(stub_port, stub, "the Ollama stub")
        proxy = subprocess.Popen([sys.executable, "-m", "collector.proxy", "--listen", f"127.0.0.1:{proxy_port}",
                                  "--upstream", f"http://127.0.0.1:{stub_port}", "--out", out_dir,
                                  "--no-telemetry", "--no-analyze", "--events-endpoint",
                                  f"tcp://127.0.0.1:{_free_port()}", "--log-level", "warning"],
                                 cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proxy)
        _wait_port(proxy_port, proxy, "the proxy")
        direct = asyncio.run(_delays(f"http://127.0.0.1:{stub_port}", requests, tokens))
        via = asyncio.run(_delays(f"http://127.0.0.1:{proxy_port}", requests, tokens))
    finally:
        for p in reversed(procs):  # the proxy first: Ctrl-C, as a user stops it; the stub: SIGTERM
            stop_child(p, 30, own_group=False, terminate=p is procs[0])
        shutil.rmtree(out_dir, ignore_errors=True)
    added = statistics.median(via) - statistics.median(direct)
    return "\n".join([
        "## proxy", "",
        f"Latency the measuring proxy adds per streamed chunk on loopback (Ollama stub in its own process, "
        f"{requests} requests × {tokens} chunks, one at a time, recording on, no telemetry): median of "
        "arrival − the stub's created_at through the proxy minus the same straight from the stub. Target: < 1 ms.",
        "", "| path | chunks | median ms | p90 ms |", "|---|---:|---:|---:|",
        f"| direct | {len(direct)} | {statistics.median(direct):.3f} | {statistics.quantiles(direct, n=10)[-1]:.3f} |",
        f"| via proxy | {len(via)} | {statistics.median(via):.3f} | {statistics.quantiles(via, n=10)[-1]:.3f} |",
        "", f"Added latency per chunk (median): **{added:.3f} ms**", ""])
