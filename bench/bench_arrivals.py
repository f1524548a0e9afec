"""Open-loop scheduler benchmark: how far request starts land from their scheduled arrivals at
50 requests/s (collector.arrivals.run_open_loop), with a no-op request and with real streamed
requests to the Ollama stub in its own process (the client's event loop then also parses chunks)."""
from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from collector.arrivals import late_summary, offsets, run_open_loop
from collector.backends import Params
from collector.retry import RetryPolicy
from collector.runner import run_request
from shared.messages import now_ns

ROOT = Path(__file__).resolve().parent.parent
RATE = 50.0


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def _errors(kind: str, n: int, url: str | None) -> dict[str, float]:
    """Start error (ms) = when the request's own code began (where req.start is stamped) minus its
    scheduled arrival."""
    schedule = offsets(kind, n, RATE, seed=1)
    err: list[float] = []
    t0 = now_ns()[0] / 1e9 + 0.05
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0)) as session:
        async def start(i: int, rec) -> None:
            err.append((now_ns()[0] / 1e9 - t0 - schedule[i]) * 1e3)
            if url is None:
                await asyncio.sleep(0.2)
                return
            res = await run_request(session, "ollama", url, "ok", "hello", Params(max_tokens=16, keep_alive="5m"),
                                    timeout_s=60, policy=RetryPolicy())
            if not res.ok:
                raise RuntimeError(res.error)

        records = await run_open_loop(schedule, None, start, t0_s=t0)
    late = late_summary(records)
    return {"n": n, "median": statistics.median(err), "p99": _pct(err, 0.99), "max": max(err), "late": late["late"]}


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the Ollama stub did not start")
            time.sleep(0.1)


def run(quick: bool = False) -> str:
    n = 100 if quick else 1000
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work on the host widens the tail
    rows = [(kind, "no-op (0.2 s sleep)", asyncio.run(_errors(kind, n, None))) for kind in ("constant", "poisson")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stub = subprocess.Popen([sys.executable, "-m", "tests.stubs.ollama_stub", "--port", str(port), "--load-s", "0",
                             "--token-delay-s", "0.01"], cwd=str(ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, stub)
        url = f"http://127.0.0.1:{port}"
        for kind in ("constant", "poisson"):
            rows.append((kind, "streamed to the stub (16 tokens, 10 ms each)", asyncio.run(_errors(kind, n, url))))
    finally:
        stub.kill()
        stub.wait(10)
    out = ["## arrivals (open-loop scheduler)", "",
           f"`python -m bench --only arrivals`: {n} requests at {RATE:g} requests/s, no --max-concurrency. Start "
           "error = when the request's code began (where req.start is stamped) minus its scheduled arrival, ms. "
           "A start more than 10 ms late counts as late (start_lag_ms, batch.end late_starts). The streamed rows' tail "
           "is the client's event loop busy with the chunks of the requests in flight"
           + (f"; host load average at the start: {load:.1f} on {os.cpu_count()} CPUs." if load is not None else "."),
           "",
           "| arrivals | request | n | error median (ms) | p99 (ms) | max (ms) | late starts |",
           "|---|---|---|---|---|---|---|"]
    for kind, what, r in rows:
        out.append(f"| {kind} | {what} | {r['n']} | {r['median']:.3f} | {r['p99']:.3f} | {r['max']:.3f} | "
                   f"{r['late']} |")
    return "\n".join(out) + "\n"
