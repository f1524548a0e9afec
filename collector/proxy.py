"""``python -m collector.proxy``: a measuring proxy between any client and an Ollama or
OpenAI-compatible server. Every generation request that passes becomes req.start / req.first_token /
req.end under the collector's contract, recorded into ``data/proxy_{index}_{start_time}/``.

    python -m telemetry &                       # the GPU's power, as for a batch
    python -m collector.proxy --upstream http://127.0.0.1:11434 --out data
    OLLAMA_HOST=127.0.0.1:11435 your-application  # or an OpenAI client with base_url=http://127.0.0.1:11435/v1

Generation endpoints (``/api/generate``, ``/api/chat``, ``/v1/chat/completions``, ``/v1/completions``)
are parsed with the collector's own backends as the bytes pass; every other path is forwarded
untouched. Each answer carries ``X-GenAI-Power-Request-Id``; ``GET /_genai_power/requests/{id}``
returns that request's analysed row (202 until the telemetry after its end has been seen).
Ctrl-C finishes the requests in flight (bounded), writes batch.end and runs the analyzer.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from collector import failures as F
from collector.attempt import AttemptState
from collector.backends import Backend
from collector.batch_run import run_analyzer
from collector.cli import add_bus_args, bus_setup, recorder_telemetry
from collector.metadata import get_json
from collector.outcome import EXIT_SETTINGS, EXIT_TELEMETRY
from collector.probe import ServerKind, classify
from collector.proxy_flow import (DEFAULT_TAG, DEFAULT_TASK, RID_HEADER, TAG_HEADER, TASK_HEADER, UsageHider,
                                  backend_for, client_headers, header_text, proxy_rid, rid_from_path, rid_header,
                                  stored_text, upstream_headers)
from collector.proxy_rows import (DEFAULT_ANALYSIS_ENDPOINT, Entry, RowBook, analysis_endpoint, bound, local_row,
                                  lookup_answer)
from collector.recorder import Recorder, TelemetryTimeout
from shared import messages as M
from shared import timebase
from shared.batch import BatchDir, new_batch_dir
from shared.bus import BusBindError, BusSecurityError, CurveKeys
from shared.cli import add_curve_args, add_log_args
from shared.listen import Listen, ListenError, add_listen_args, check_listen, parse_listen
from shared.logs import configure_logging, get_logger
from shared.messages import BatchEnd, BatchStart, ReqEnd, ReqFirstToken, ReqStart
from shared.procs import stop_child

log = get_logger("collector.proxy")

DEFAULT_LISTEN = "127.0.0.1:11435"


def _now() -> int:
    return M.now_ns()[0]


@dataclass
class ProxyOptions:
    upstream: str
    batch: BatchDir
    listen: Listen
    events_endpoint: str
    telemetry_endpoint: str | list[str] | None = None   # None: --no-telemetry
    pub_curve: CurveKeys | None = None
    sub_curve: CurveKeys | list[CurveKeys] | None = None
    clock_probe_s: float | None = 5.0
    telemetry_wait_s: float = 5.0
    no_text: bool = False
    max_stored_bytes: int = 1 << 20
    drain_s: float = 30.0                      # Ctrl-C: how long requests in flight may still take
    row_wait_s: float = 30.0                   # lookup: how long to wait for the live analyzer's row
    analysis_endpoint: str = DEFAULT_ANALYSIS_ENDPOINT
    live_analyzer: bool = True                 # start `analyzer --live` (else read rows another one publishes)
    analyze: bool = True
    analyzer_args: list[str] = field(default_factory=list)
    curve_args: list[str] = field(default_factory=list)  # CURVE flags handed to the live analyzer
    serve: str | None = None                   # HOST:PORT of the live page the live analyzer serves (--serve)
    allow_remote: bool = False                 # ... a non-loopback one allowed (--allow-remote)


class Proxy:
    def __init__(self, opts: ProxyOptions, rec: Recorder, rows: RowBook | None, batch_id: str):
        self.opts = opts
        self.rec = rec
        self.rows = rows
        self.batch_id = batch_id
        self.upstream = opts.upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None
        self.seq = itertools.count(1)
        self.entries: dict[str, Entry] = {}
        self.inflight: set[asyncio.Task] = set()
        self.closing = False
        self.open = asyncio.Event()  # set once batch.start is recorded
        self.child: subprocess.Popen | None = None
        self.requests = self.ok = self.failed = 0

    # -- the app ------------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_get("/_genai_power/requests/{rid:.+}", self.lookup)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open_session)
        app.on_cleanup.append(self._close_session)
        return app

    async def _open_session(self, app: web.Application) -> None:
        # no total timeout (a long answer is the client's business), no pooled connection reuse:
        # a connection the client dropped is closed upstream, not handed to the next request
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                             auto_decompress=True, read_bufsize=1 << 16,
                                             connector=aiohttp.TCPConnector(limit=0, force_close=True))

    async def _close_session(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    def _upstream_down(self, exc: Exception, openai_style: bool) -> web.Response:
        msg = (f"the measuring proxy could not reach the upstream server {self.upstream}: "
               f"{getattr(exc, 'os_error', None) or exc}; is it running (--upstream)?")
        body = ({"error": {"message": msg, "type": "upstream_unreachable", "upstream": self.upstream}}
                if openai_style else {"error": msg, "upstream": self.upstream})
        return web.json_response(body, status=502)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await self.open.wait()
        if self.closing:
            return web.json_response({"error": "the measuring proxy is stopping"}, status=503)
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            body = await request.read()
            backend = backend_for(request.method, request.path)
            obj = None
            if backend is not None:
                try:
                    obj = json.loads(body)
                except (ValueError, RecursionError):
                    obj = None
            if isinstance(obj, dict) and isinstance(obj.get("model"), str):
                return await self._measured(request, backend, obj, body)
            return await self._passthrough(request, body)
        finally:
            if task is not None:
                self.inflight.discard(task)

    async def _passthrough(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Any other path, byte for byte, streamed as it arrives."""
        assert self.session is not None
        try:
            async with self.session.request(request.method, self.upstream + request.path_qs,
                                            headers=upstream_headers(request.headers), data=body or None,
                                            allow_redirects=False) as up:
                resp = web.StreamResponse(status=up.status, reason=up.reason,
                                          headers=client_headers(up.headers))
                if up.content_length is not None and "Content-Encoding" not in up.headers:
                    resp.content_length = up.content_length  # a sized answer stays sized (not chunked)
                await resp.prepare(request)
                try:
                    async for data in up.content.iter_any():
                        await resp.write(data)
                    await resp.write_eof()
                except ConnectionResetError:  # the client went away: so does the upstream request
                    up.close()
                except aiohttp.ClientError:  # the upstream went away mid-answer: so does the client's
                    if request.transport is not None:
                        request.transport.close()
                return resp
        except aiohttp.ClientConnectorError as exc:
            return self._upstream_down(exc, request.path.startswith("/v1"))
        except aiohttp.ClientError as exc:  # it answered nothing usable
            return web.json_response({"error": f"the upstream server {self.upstream} failed to answer "
                                               f"({type(exc).__name__}: {exc})"}, status=502)

    # -- a measured generation ----------------------------------------------------------------------------
    async def _measured(self, request: web.Request, backend: Backend, obj: dict[str, Any],
                        body: bytes) -> web.StreamResponse:
        assert self.session is not None
        opts = self.opts
        stream = backend.wants_stream(obj)
        hide = stream and backend.ask_usage(obj)   # the client did not ask for usage: we do, then hide it
        send = json.dumps(obj, ensure_ascii=False).encode("utf-8") if hide else body
        model = obj["model"]
        task = header_text(request.headers.get(TASK_HEADER), DEFAULT_TASK)
        tag = header_text(request.headers.get(TAG_HEADER), DEFAULT_TAG)
        rid = proxy_rid(self.batch_id, model, next(self.seq), task, tag)
        prompt, prompt_note = stored_text(backend.prompt_of(obj), no_text=opts.no_text,
                                          limit_bytes=opts.max_stored_bytes)
        if len(body) > opts.max_stored_bytes and prompt_note is None:
            prompt_note = {"request_bytes": len(body), "truncated": False}
        params = backend.params_of(obj)
        start = self.rec.emit(ReqStart(rid=rid, model=model, task=task, load=tag, run=1, prompt=prompt,
                                       params=params, prompt_note=prompt_note,
                                       proxy={"path": request.path, "stream": stream, "usage_added": hide}),
                              flush=True)
        entry = self.entries[rid] = Entry(rid, start)
        self.requests += 1
        att = AttemptState(backend.name, start["t"])
        resp: web.StreamResponse | None = None
        rid_value = rid_header(rid)

        def firsts(notices: list[tuple[str, int]]) -> None:
            for kind, t in notices:
                entry.firsts.append(self.rec.emit(ReqFirstToken(rid=rid, kind=kind, attempt=0), t=t))

        try:
            async with self.session.request(request.method, self.upstream + request.path_qs,
                                            headers=upstream_headers(request.headers), data=send) as up:
                headers = client_headers(up.headers)
                headers[RID_HEADER] = rid_value
                if up.status != 200:
                    data = await up.read()
                    att.http_error(up.status, data)
                    return web.Response(status=up.status, reason=up.reason, body=data, headers=headers)
                att.status = up.status
                if not stream:
                    data = await up.read()
                    firsts(att.whole(data, _now()))
                    return web.Response(status=200, body=data, headers=headers)
                resp = web.StreamResponse(status=200, reason=up.reason, headers=headers)
                await resp.prepare(request)
                hider = UsageHider(backend) if hide else None
                try:
                    async for data in up.content.iter_any():
                        now = _now()
                        firsts(att.feed(data, now))
                        if att.progress_due(now):  # at most every 0.5 s, for live views (never per chunk)
                            self.rec.emit(att.progress(rid, 0), t=now)
                        out = hider.feed(data) if hider is not None else data
                        if out:
                            await resp.write(out)
                    firsts(att.feed(b"", _now()))
                    if hider is not None:
                        tail = hider.feed(b"")
                        if tail:
                            await resp.write(tail)
                    await resp.write_eof()
                except (ConnectionResetError, aiohttp.ClientConnectionResetError) as exc:
                    up.close()  # the upstream generation stops with its connection
                    if att.done:  # the answer was complete (a client may hang up right after [DONE])
                        att.closed = True
                        return resp
                    att.fail(f"the client disconnected mid-answer ({type(exc).__name__}); the proxy closed the "
                             "upstream request", F.TRUNCATED)
                    log.warning("client_disconnected", rid=rid)
                return resp
        except aiohttp.ClientConnectorError as exc:
            att.fail(F.connection_hint(self.upstream, str(exc.os_error or exc)), F.CONNECTION)
            down = self._upstream_down(exc, backend.family == "openai")
            down.headers[RID_HEADER] = rid_value
            return down
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            att.fail(f"the upstream server closed the connection {'mid-answer' if att.status else 'before answering'}"
                     f" ({type(exc).__name__}: {exc})", F.TRUNCATED)
            if resp is None:
                return web.json_response({"error": att.error}, status=502, headers={RID_HEADER: rid_value})
            if request.transport is not None:
                request.transport.close()  # the client sees the answer cut short, as it was
            return resp
        except asyncio.CancelledError:
            att.fail("the proxy stopped before the answer ended", F.TRUNCATED)
            raise
        finally:
            self._finish(entry, att, backend)

    def _finish(self, entry: Entry, att: AttemptState, backend: Backend) -> None:
        end_ns = _now()
        if not att.closed and att.error is None:
            att.fail("the answer did not end", F.TRUNCATED)
        client = att.client_metrics(entry.start["t"], end_ns)
        client.retries = 0
        text, text_note = stored_text("".join(att.text), no_text=self.opts.no_text,
                                      limit_bytes=self.opts.max_stored_bytes)
        thinking, _ = stored_text("".join(att.thinking), no_text=self.opts.no_text,
                                  limit_bytes=self.opts.max_stored_bytes)
        kind = F.BAD_RESPONSE if att.error_kind == F.NO_THINK else att.error_kind
        end = ReqEnd(rid=entry.rid, ok=att.ok, text=text, thinking=thinking or None, api=att.api, client=client,
                     error=att.error, error_kind=None if att.ok else kind, served_model=att.served_model,
                     text_note=text_note)
        if text is not None:  # texts first, then the flushed req.end (as the collector does)
            try:
                self.opts.batch.text_file(entry.rid).write_text(text, encoding="utf-8")
            except OSError as exc:
                log.warning("text_not_written", rid=entry.rid, error=str(exc))
        entry.end = self.rec.emit(end, t=end_ns, flush=True)
        entry.ended_s = timebase.now_s()
        entry.row = local_row(entry)
        entry.start, entry.firsts, entry.end = {}, [], None  # the row is all the lookup needs: texts go
        bound(self.entries)
        if att.ok:
            self.ok += 1
        else:
            self.failed += 1
        log.info("request_done" if att.ok else "request_failed", rid=entry.rid, error_kind=end.error_kind,
                 error=att.error, latency_s=round(client.latency_s or 0.0, 3),
                 tokens=entry.row.get("output_tokens"))

    # -- GET /_genai_power/requests/{id} ------------------------------------------------------------------
    def row_answer(self, rid: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of the lookup: 202 while the row is not known yet, else the row."""
        e = self.entries.get(rid)
        exit_code = self.child.poll() if self.child is not None else None
        return lookup_answer(rid, e, self.batch_id, self.rows is not None,
                             self.rows.get(rid) if self.rows is not None else None, exit_code,
                             timebase.now_s(), self.opts.row_wait_s)

    async def lookup(self, request: web.Request) -> web.Response:
        status, body = self.row_answer(rid_from_path(request.match_info["rid"]))
        headers = {"Retry-After": "1"} if status == 202 else None
        return web.json_response(body, status=status, headers=headers, dumps=lambda o: json.dumps(o, default=str))

    # -- Ctrl-C -------------------------------------------------------------------------------------------
    async def drain(self) -> int:
        """Stop taking requests, let those in flight finish (bounded), cancel the rest. Returns how many
        were cancelled (each recorded as failed with the reason)."""
        self.closing = True
        pending = set(self.inflight)
        if pending:
            log.info("finishing_requests", in_flight=len(pending), within_s=self.opts.drain_s)
            _, late = await asyncio.wait(pending, timeout=self.opts.drain_s)
            for t in late:
                t.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
            return len(late)
        return 0


async def probe_upstream(session: aiohttp.ClientSession, upstream: str) -> ServerKind:
    try:
        version = await get_json(session, "GET", upstream + "/api/version", 5)
        models = None if version else await get_json(session, "GET", upstream + "/v1/models", 5)
        return classify(version, models)
    except Exception as exc:  # best effort: the upstream may start after the proxy
        log.warning("upstream_not_reachable_yet", upstream=upstream, error=f"{type(exc).__name__}: {exc}")
        return classify(None, None)


def live_analyzer_command(opts: ProxyOptions) -> list[str]:
    tel = opts.telemetry_endpoint
    tels = [tel] if isinstance(tel, str) else list(tel or [])
    cmd = [sys.executable, "-m", "analyzer", "--live", "--batch", str(opts.batch.root),
           "--events-endpoint", opts.events_endpoint, "--publish-endpoint", opts.analysis_endpoint,
           "--no-quality", "--no-plots", "--no-progress"]
    for t in tels:
        cmd += ["--telemetry-endpoint", t]
    if opts.serve:  # it prints "live page: URL" on its stdout; the proxy reads it (PageUrl) and prints it
        cmd += ["--serve", opts.serve] + (["--allow-remote"] if opts.allow_remote else [])
    # the batch analysis's own options too (--server-gpus, --idle-baseline, ...): the live rows match it
    return cmd + opts.curve_args + opts.analyzer_args


async def serve(opts: ProxyOptions, stop: asyncio.Event, ready: Any = None) -> int:
    """Run the proxy until ``stop`` is set; then drain, close the batch and analyse it."""
    batch = opts.batch.make()
    batch_id = batch.root.name
    snapshot = {"batch": batch_id, "mode": "proxy", "upstream": opts.upstream, "listen": str(opts.listen),
                "events_endpoint": opts.events_endpoint, "telemetry_endpoint": opts.telemetry_endpoint,
                "no_text": opts.no_text, "max_stored_bytes": opts.max_stored_bytes, "out_dir": str(batch.root)}
    batch.config_json.write_text(json.dumps(snapshot, ensure_ascii=False, indent=1), encoding="utf-8")
    try:
        rec = Recorder(batch.stream, opts.events_endpoint, opts.telemetry_endpoint, meta={"batch": batch_id},
                       pub_curve=opts.pub_curve, sub_curve=opts.sub_curve, clock_probe_s=opts.clock_probe_s)
    except (BusBindError, BusSecurityError) as exc:
        log.error("events_endpoint_unusable", error=str(exc),
                  fix="is another collector or proxy running? pass a free --events-endpoint tcp://127.0.0.1:PORT")
        return EXIT_SETTINGS
    rows: RowBook | None = None
    child: subprocess.Popen | None = None
    page_url: str | None = None
    proxy = Proxy(opts, rec, None, batch_id)
    runner = web.AppRunner(proxy.make_app(), shutdown_timeout=1.0, handle_signals=False, access_log=None)
    started = False
    try:
        try:
            await asyncio.to_thread(rec.wait_heartbeat, opts.telemetry_wait_s)
        except TelemetryTimeout as exc:
            log.error("no_telemetry", error=str(exc))
            return EXIT_TELEMETRY
        await runner.setup()
        try:
            await web.TCPSite(runner, opts.listen.host, opts.listen.port).start()
        except OSError as exc:
            log.error("cannot_listen", listen=str(opts.listen), error=str(exc),
                      fix="is another proxy running there? pass a free --listen 127.0.0.1:PORT")
            return EXIT_SETTINGS
        async with aiohttp.ClientSession() as s:
            server = await probe_upstream(s, opts.upstream.rstrip("/"))
        if opts.telemetry_endpoint is not None and opts.live_analyzer:
            # started before batch.start, so it sees the whole batch (a SUB only gets what comes after it joined)
            child = subprocess.Popen(live_analyzer_command(opts), stdout=subprocess.PIPE if opts.serve else None,
                                     text=True, encoding="utf-8", errors="replace")
            page = PageUrl(child) if opts.serve else None
            await asyncio.to_thread(_wait_child_ready, child, opts.analysis_endpoint)
            page_url = await asyncio.to_thread(page.wait) if page is not None else None
        if opts.telemetry_endpoint is not None:
            rows = RowBook(rec.ctx, opts.analysis_endpoint)
        proxy.rows, proxy.child = rows, child
        rec.emit(BatchStart(batch=batch_id, config=snapshot, backend="proxy", base_url=opts.upstream,
                            server_version=server.version, server=server.flavor or server.kind), flush=True)
        started = True
        proxy.open.set()  # requests that came during the start-up were held until now
        port = runner.addresses[0][1] if runner.addresses else opts.listen.port
        url = f"http://{opts.listen.host}:{port}"
        print(f"measuring proxy on {url} -> {opts.upstream}; recording into {batch.root}\n"
              f"  Ollama clients: OLLAMA_HOST={opts.listen.host}:{port}   OpenAI clients: base_url={url}/v1\n"
              f"  a request's energy: GET {url}/_genai_power/requests/<{RID_HEADER}>   stop: Ctrl-C"
              # as `python -m collector --serve` prints it: same stream, once everything listens
              + (f"\nlive page: {page_url}  (stops when the proxy exits)" if page_url else ""),
              file=sys.stderr, flush=True)
        if ready is not None:
            ready(url, proxy)
        await stop.wait()
        cancelled = await proxy.drain()
        if cancelled:
            log.warning("requests_cancelled_at_stop", count=cancelled, within_s=opts.drain_s)
    finally:
        proxy.open.set()
        proxy.closing = True
        await runner.cleanup()
        if child is not None:  # before batch.end: the analysis of the whole batch is the one run below
            stop_child(child, 10, own_group=False, terminate=True, kill_wait_s=5)
        if started:
            if not rec.settle(1.0):
                log.warning("telemetry_silent_at_end", note="the last request's window may be partly uncovered")
            rec.emit(BatchEnd(batch=batch_id, requests=proxy.requests, ok=proxy.ok, failed=proxy.failed,
                              interrupted=False, telemetry_received=rec.telemetry_received,
                              telemetry_dropped={"oversize": rec.inbox.dropped_oversize,
                                                 "invalid": rec.inbox.dropped_invalid}), flush=True)
        if rows is not None:
            rows.close()
        rec.close()
        if not started:  # nothing was measured: leave nothing behind
            shutil.rmtree(batch.root, ignore_errors=True)
    log.info("proxy_stopped", dir=str(batch.root), requests=proxy.requests, ok=proxy.ok, failed=proxy.failed)
    if opts.analyze and proxy.requests:
        await asyncio.to_thread(run_analyzer, batch.root, opts.analyzer_args)
        print(f"report: {batch.summary / 'report.html'}", file=sys.stderr, flush=True)
    print(f"proxy batch: {proxy.requests} request(s), ok {proxy.ok}, failed {proxy.failed} -> {batch.root}",
          file=sys.stderr, flush=True)
    return 0


class PageUrl:
    """The live page's URL, read from the live analyzer child's stdout ("live page: URL"); its other
    lines pass through to the proxy's stdout, so the proxy prints the URL itself, in its banner."""

    PREFIX = "live page: "

    def __init__(self, child: subprocess.Popen):
        self.child, self.url = child, None
        self._ready = threading.Event()
        threading.Thread(target=self._read, name="live-page-url", daemon=True).start()

    def _read(self) -> None:
        for line in self.child.stdout:
            if line.startswith(self.PREFIX) and self.url is None:
                self.url = line[len(self.PREFIX):].strip()
                self._ready.set()
            else:
                sys.stdout.write(line)
                sys.stdout.flush()
        self._ready.set()  # exited without a URL

    def wait(self, timeout_s: float = 20.0) -> str | None:
        if not self._ready.wait(timeout_s) or self.url is None:
            log.warning("live_page_not_ready", exited=self.child.poll(),
                        effect="no live page; the proxy, its lookups and the analysis at Ctrl-C are unaffected")
        return self.url


def _wait_child_ready(child: subprocess.Popen, endpoint: str, timeout_s: float = 20.0) -> bool:
    """Wait until the live analyzer has bound its publish endpoint (it subscribes to the bus first),
    bounded; False (logged) when it exited or did not come up: the lookup then says so."""
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    deadline = timebase.now_s() + timeout_s
    while timebase.now_s() < deadline and child.poll() is None and host and port:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            time.sleep(0.3)  # its SUB sockets' subscriptions travel to the publishers
            return True
        except OSError:
            time.sleep(0.1)
    log.warning("live_analyzer_not_ready", endpoint=endpoint, exited=child.poll(),
                effect="lookups answer without energy; the analysis at Ctrl-C is unaffected")
    return False


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m collector.proxy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_listen_args(ap, DEFAULT_LISTEN, "the proxy")
    ap.add_argument("--upstream", required=True,
                    help="the LLM server the proxy forwards to, e.g. http://127.0.0.1:11434 (Ollama) or "
                         "http://127.0.0.1:8080 (OpenAI-compatible)")
    ap.add_argument("--out", type=Path, default=Path("data"),
                    help="parent directory of the proxy_{index}_{time} batch (default: data)")
    ap.add_argument("--no-text", action="store_true",
                    help="store only lengths and SHA-256 hashes of prompts and answers, never their text")
    ap.add_argument("--max-stored-bytes", type=int, default=1 << 20,
                    help="prompts and answers longer than this are stored truncated, flagged (default 1 MiB); "
                         "the client and the server always get everything")
    ap.add_argument("--drain-s", type=float, default=30.0,
                    help="Ctrl-C: seconds requests in flight may take to finish before they are cut (default 30)")
    ap.add_argument("--row-wait-s", type=float, default=30.0,
                    help="seconds after a request's end that its lookup waits for the live analyzer's row "
                         "before answering without energy (default 30)")
    ap.add_argument("--analysis-endpoint", default=None,
                    help="where the live analyzer publishes ana.row (default: GENAI_ANALYSIS_ENDPOINT or "
                         f"{DEFAULT_ANALYSIS_ENDPOINT})")
    ap.add_argument("--serve", default=None, metavar="HOST:PORT",
                    help="the live analyzer also serves the live page here (power, requests in flight, each answer's "
                         "energy; its URL is printed), e.g. 127.0.0.1:8765; loopback only unless --allow-remote")
    ap.add_argument("--no-live-analyzer", action="store_true",
                    help="do not start `python -m analyzer --live`; read rows from one already publishing on "
                         "--analysis-endpoint")
    b = ap.add_argument_group("bus and recording")
    add_bus_args(b)
    b.add_argument("--no-analyze", action="store_true", help="do not run the analyzer at the end")
    b.add_argument("--analyzer-args", default="", help='extra arguments for the analyzer run at the end')
    add_curve_args(b, underscore=True)
    add_log_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    try:
        listen = parse_listen(args.listen)
        warning = check_listen(listen, args.allow_remote)
    except ListenError as exc:
        log.error("bad_listen", error=str(exc))
        return EXIT_SETTINGS
    if warning:
        log.warning("listen_remote", warning=warning)
    if args.serve is not None:
        try:
            serve_at = parse_listen(args.serve, "--serve")
            check_listen(serve_at, args.allow_remote, "--serve")  # the page warns itself when exposed
        except ListenError as exc:
            log.error("bad_serve", error=str(exc))
            return EXIT_SETTINGS
        if args.no_live_analyzer or args.no_telemetry:
            log.error("bad_serve", error="--serve is the page of the live analyzer the proxy starts",
                      fix="drop --no-live-analyzer / --no-telemetry, or run `python -m analyzer --live --serve "
                          "HOST:PORT` yourself")
            return EXIT_SETTINGS
    upstream = args.upstream.strip().rstrip("/")
    if "://" not in upstream:
        upstream = "http://" + upstream
    if upstream.endswith("/v1"):
        upstream = upstream[:-3]
    try:
        events_ep, tel_endpoints, pub_curve, sub_curve = bus_setup(args)
    except BusSecurityError as exc:
        log.error("bad_curve_keys", error=str(exc))
        return EXIT_SETTINGS
    curve_args = []
    for flag, value in (("--curve-secret", args.curve_secret), ("--curve-server-key", args.curve_server_key)):
        if value:
            curve_args += [flag, str(value)]
    opts = ProxyOptions(upstream=upstream, batch=new_batch_dir(args.out, prefix="proxy"), listen=listen,
                        events_endpoint=events_ep,
                        telemetry_endpoint=recorder_telemetry(args.no_telemetry, tel_endpoints),
                        pub_curve=pub_curve, sub_curve=sub_curve,
                        clock_probe_s=args.clock_probe_s or None, telemetry_wait_s=args.telemetry_wait,
                        no_text=args.no_text, max_stored_bytes=args.max_stored_bytes, drain_s=args.drain_s,
                        row_wait_s=args.row_wait_s, analysis_endpoint=args.analysis_endpoint or analysis_endpoint(),
                        live_analyzer=not args.no_live_analyzer, analyze=not args.no_analyze,
                        analyzer_args=shlex.split(args.analyzer_args), curve_args=curve_args,
                        serve=args.serve, allow_remote=args.allow_remote)
    return asyncio.run(_run(opts))


async def _run(opts: ProxyOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    else:  # Windows: Ctrl-C / Ctrl-Break arrive as signals on the main thread
        for name in ("SIGINT", "SIGBREAK"):
            sig = getattr(signal, name, None)
            if sig is not None:
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    return await serve(opts, stop)


if __name__ == "__main__":
    raise SystemExit(main())
