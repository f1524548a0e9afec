"""The measuring proxy in this process for tests: its event loop in a thread, a real listening socket."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from collector.proxy import ProxyOptions, serve
from shared import messages as M
from shared.batch import new_batch_dir
from shared.bus import free_port
from shared.listen import parse_listen
from shared.recording import RecordingReader


@contextlib.contextmanager
def running_proxy(upstream: str, out: Path, **kw):
    """The proxy on a free loopback port, its loop in a thread; yields (url, Proxy, options)."""
    box: dict = {}
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    opts = ProxyOptions(upstream=upstream, batch=new_batch_dir(out, prefix="proxy"),
                        listen=parse_listen("127.0.0.1:0"), events_endpoint=f"tcp://127.0.0.1:{free_port()}",
                        analyze=False, **kw)

    def on_ready(url, proxy):
        box.update(url=url, proxy=proxy)
        ready.set()

    def run():
        asyncio.set_event_loop(loop)
        try:
            box["rc"] = loop.run_until_complete(serve(opts, stop, on_ready))
        except BaseException as exc:  # reported below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="proxy", daemon=True)
    thread.start()
    assert ready.wait(20), "the proxy did not start"
    assert "error" not in box, box.get("error")
    try:
        yield box["url"], box["proxy"], opts
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not thread.is_alive(), "the proxy did not stop"
        loop.close()
    assert box.get("rc") == 0, box


def recorded(opts: ProxyOptions) -> list[tuple[str, dict]]:
    return list(RecordingReader(opts.batch.stream))


def ends(opts: ProxyOptions) -> list[dict]:
    return [p for t, p in recorded(opts) if t == M.REQ_END]
