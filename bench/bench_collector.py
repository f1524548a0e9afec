"""Collector benchmarks: client overhead per streamed chunk, and how far client-measured times
are from server-reported ones with 1 and 32 concurrent streams against the Ollama stub
(run as a separate process on 127.0.0.1, so it does not share the client's event loop)."""
from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from collector.backends import Params, map_chunk
from collector.retry import RetryPolicy
from collector.runner import run_request
from collector.stream_parse import NdjsonParser, SseParser

ROOT = Path(__file__).resolve().parent.parent


def _ollama_body(n: int) -> bytes:
    line = {"model": "gemma3:4b", "created_at": "2025-08-04T08:52:19.385406455Z", "response": " token", "done": False}
    return b"".join(json.dumps(line).encode() + b"\n" for _ in range(n))


def _sse_body(n: int) -> bytes:
    ev = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
          "choices": [{"index": 0, "delta": {"content": " token"}, "finish_reason": None}]}
    return b"".join(b"data: " + json.dumps(ev).encode() + b"\n\n" for _ in range(n))


def parser_us_per_chunk(kind: str, n: int, read_size: int) -> float:
    """Parse + map ``n`` chunks fed in ``read_size``-byte reads; µs per chunk (best of 3)."""
    body = _ollama_body(n) if kind == "ndjson" else _sse_body(n)
    backend = "ollama" if kind == "ndjson" else "openai"
    best = float("inf")
    for _ in range(3):
        parser = NdjsonParser() if kind == "ndjson" else SseParser()
        t0 = time.perf_counter()
        count = 0
        for i in range(0, len(body), read_size):
            for ev in parser.feed(body[i:i + read_size]):
                if ev.kind == "data":
                    map_chunk(backend, ev.obj)
                    count += 1
        parser.feed(b"")
        best = min(best, (time.perf_counter() - t0) / count * 1e6)
    return best


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def _spread(url: str, streams: int, requests_per_stream: int, tokens: int) -> dict[str, float]:
    """Client latency minus server total_duration, and client stream span minus eval_duration (ms)."""
    lat_diff, gen_diff, ttft = [], [], []
    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            for _ in range(requests_per_stream):
                res = await run_request(session, "ollama", url, "ok", "hello", Params(max_tokens=tokens, keep_alive="5m"),
                                        timeout_s=60, policy=RetryPolicy())
                if not res.ok:
                    raise RuntimeError(res.error)
                c, api = res.client, res.api
                lat_diff.append((c.latency_s - api["total_duration_ns"] / 1e9) * 1e3)
                span = (c.chunk_t_ns[-1] - c.chunk_t_ns[0]) / 1e9
                gen_diff.append((span - api["eval_duration_ns"] / 1e9) * 1e3)
                ttft.append(c.first_token_s * 1e3)
        await run_request(session, "ollama", url, "ok", "warm", Params(max_tokens=1, keep_alive="5m"))
        await asyncio.gather(*(worker() for _ in range(streams)))
    return {"n": len(lat_diff), "lat_med": statistics.median(lat_diff), "lat_p95": _pct(lat_diff, 0.95),
            "gen_med": statistics.median(gen_diff), "gen_p95": _pct(gen_diff, 0.95),
            "ttft_med": statistics.median(ttft)}


def run(quick: bool = False) -> str:
    n_chunks = 5_000 if quick else 50_000
    rows = []
    for kind in ("ndjson", "sse"):
        for read_size in (1 << 16, 512):
            rows.append((kind, read_size, parser_us_per_chunk(kind, n_chunks, read_size)))
    port = _free_port()
    stub = subprocess.Popen([sys.executable, "-m", "tests.stubs.ollama_stub", "--port", str(port), "--load-s", "0",
                             "--token-delay-s", "0.01"], cwd=str(ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    spreads = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or stub.poll() is not None:
                    raise RuntimeError("the Ollama stub did not start")
                time.sleep(0.1)
        tokens = 16 if quick else 32
        for streams, per_stream in ((1, 5 if quick else 20), (32, 1 if quick else 3)):
            spreads.append((streams, asyncio.run(_spread(url, streams, per_stream, tokens))))
    finally:
        stub.kill()
        stub.wait(10)
    out = ["## collector", "",
           "Client overhead per streamed chunk (sans-IO parse + map to a delta, pure CPU, best of 3; "
           f"{n_chunks} chunks):", "",
           "| framing | bytes per read | µs per chunk |", "|---|---|---|"]
    out += [f"| {k} | {rs} | {us:.2f} |" for k, rs, us in rows]
    out += ["", f"Client-measured vs server-reported times against the Ollama stub in its own process "
                f"({tokens} tokens at 10 ms each, keep-alive warm). `latency − total_duration` is the HTTP + "
                "client overhead around the server's own timing; `stream span − eval_duration` compares the "
                "client's first→last chunk time with the server's generation time (ms):", "",
            "| streams | requests | latency − total_duration median | p95 | span − eval_duration median | p95 | "
            "client TTFT median |", "|---|---|---|---|---|---|---|"]
    for streams, s in spreads:
        out.append(f"| {streams} | {s['n']} | {s['lat_med']:.2f} | {s['lat_p95']:.2f} | {s['gen_med']:.2f} | "
                   f"{s['gen_p95']:.2f} | {s['ttft_med']:.2f} |")
    return "\n".join(out) + "\n"
