"""Stub LLM servers for tests and manual runs (real aiohttp servers on 127.0.0.1).

- :mod:`tests.stubs.ollama_stub`: Ollama's native API, behaviour keyed by model name.
- :mod:`tests.stubs.openai_stub`: OpenAI-compatible SSE in llama.cpp / vLLM / Ollama-/v1 flavours.

Inside an event loop (async tests)::

    async with serve(ollama_stub.make_app()) as base_url:
        ...

From synchronous code (a background thread runs the loop)::

    with serve_in_thread(lambda: ollama_stub.make_app()) as base_url:
        ...
"""
from __future__ import annotations

import asyncio
import contextlib
from shared.bus import free_port
import threading
from typing import AsyncIterator, Callable, Iterator

from aiohttp import web


@contextlib.asynccontextmanager
async def serve(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on ``127.0.0.1:port`` (free port by default); yields the base URL."""
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = port or free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def serve_in_thread(make_app: Callable[[], web.Application], port: int | None = None,
                    start_timeout_s: float = 10.0) -> Iterator[str]:
    """Serve the app built by ``make_app`` from a background thread's event loop; yields the base URL.

    The app is built inside that loop (aiohttp apps belong to the loop that runs them).
    """
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict = {}

    async def start() -> None:
        cm = serve(make_app(), port)
        box["cm"] = cm
        box["url"] = await cm.__aenter__()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # reported to the caller below
            box["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="stub-server", daemon=True)
    thread.start()
    try:
        if not ready.wait(start_timeout_s):
            raise RuntimeError(f"stub server did not start within {start_timeout_s:g} s")
        if "error" in box:
            raise RuntimeError(f"stub server failed to start: {box['error']}") from box["error"]
        yield box["url"]
    finally:
        if "cm" in box and "error" not in box:
            fut = asyncio.run_coroutine_threadsafe(box["cm"].__aexit__(None, None, None), loop)
            try:
                fut.result(10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        else:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
