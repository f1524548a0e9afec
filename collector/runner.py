"""One streaming request over aiohttp, timed with the client's monotonic clock, with the
retry/degrade policy of :mod:`collector.failures`. The byte loop is thin; parsing and mapping
are the pure parts in :mod:`collector.stream_parse` and :mod:`collector.backends`.
"""
from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

from collector import failures as F
from collector.backends import Params, build_payload, endpoint_path, make_parser, map_chunk
from collector.stream_parse import BAD, DATA, DONE, EOF, ERROR_LINE, StreamProtocolError, ThinkSplitter

# A load_duration at or above this means the model was loaded for this request (cold).
COLD_LOAD_NS = 100_000_000


@dataclass
class RetryPolicy:
    busy_retries: int = 4            # 503: back off and retry unchanged
    backoff_s: float = 0.5           # first wait; doubles each time
    backoff_max_s: float = 8.0
    degrade_steps: int = 6           # OOM: how many times to lower num_ctx / max_tokens
    min_num_ctx: int = 512
    min_max_tokens: int = 16
    start_num_ctx: int = 4096        # assumed when num_ctx was not set and an OOM asks to lower it


@dataclass
class Attempt:
    """What one HTTP attempt saw; filled as bytes arrive so a timeout keeps the partial text."""

    t0_ns: int
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    chunk_t: list[int] = field(default_factory=list)
    first_chunk_ns: int | None = None
    first_content_ns: int | None = None
    first_thinking_ns: int | None = None
    api: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    status: int | None = None
    error: str | None = None
    error_kind: str | None = None
    bad_lines: int = 0


@dataclass
class RequestResult:
    ok: bool
    text: str
    thinking: str
    api: dict[str, Any]
    client: dict[str, Any]
    error: str | None = None
    error_kind: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # what the last attempt actually sent

    @property
    def fatal(self) -> bool:
        """The server is unreachable: the batch stops."""
        return self.error_kind == F.CONNECTION

    @property
    def skip_model(self) -> bool:
        return self.error_kind == F.NOT_FOUND


def degrade(p: Params, policy: RetryPolicy, can_set_ctx: bool) -> dict[str, Any] | None:
    """Lower num_ctx (halving, not below the floor), then max_tokens; None when nothing is left."""
    if can_set_ctx:
        ctx = p.num_ctx if p.num_ctx is not None else policy.start_num_ctx * 2
        if ctx > policy.min_num_ctx:
            p.num_ctx = max(policy.min_num_ctx, ctx // 2)
            return {"num_ctx": p.num_ctx}
    if p.max_tokens is not None and p.max_tokens > policy.min_max_tokens:
        p.max_tokens = max(policy.min_max_tokens, p.max_tokens // 2)
        return {"max_tokens": p.max_tokens}
    if p.max_tokens is None:
        p.max_tokens = 256
        return {"max_tokens": p.max_tokens}
    return None


def client_metrics(a: Attempt, end_ns: int) -> dict[str, Any]:
    """Client-side timings of one attempt (seconds from the attempt's start; absent if never seen)."""
    def rel(t: int | None) -> float | None:
        return None if t is None else (t - a.t0_ns) / 1e9

    m: dict[str, Any] = {"latency_s": (end_ns - a.t0_ns) / 1e9, "chunks": len(a.chunk_t), "chunk_t": list(a.chunk_t)}
    for key, t in (("first_token_s", a.first_content_ns), ("first_thinking_s", a.first_thinking_ns),
                   ("first_chunk_s", a.first_chunk_ns)):
        if t is not None:
            m[key] = rel(t)
    load = a.api.get("load_duration_ns")
    if load is not None:
        m["cold"] = load >= COLD_LOAD_NS
    return m


async def _one_attempt(session: aiohttp.ClientSession, url: str, backend: str, payload: dict[str, Any],
                       a: Attempt, on_first: Callable[[str, int], None] | None) -> None:
    splitter = ThinkSplitter()

    def take(content: str, thinking: str, t: int) -> None:
        if thinking:
            a.thinking.append(thinking)
            if a.first_thinking_ns is None:
                a.first_thinking_ns = t
                if on_first:
                    on_first("thinking", t)
        if content:
            a.text.append(content)
            if a.first_content_ns is None:
                a.first_content_ns = t
                if on_first:
                    on_first("content", t)

    async with session.post(url, json=payload) as resp:
        a.status = resp.status
        if resp.status != 200:
            body = await resp.read()
            a.error = F.body_error_text(body)
            a.error_kind = F.classify_status(resp.status, a.error)
            a.error = f"HTTP {resp.status}: {a.error}"
            return
        parser = make_parser(backend)
        stream = resp.content.iter_any()
        while True:
            try:
                data = await stream.__anext__()
            except StopAsyncIteration:
                data = b""
            t = time.monotonic_ns()
            try:
                events = parser.feed(data)
            except StreamProtocolError as exc:
                a.error, a.error_kind = str(exc), F.BAD_RESPONSE
                return
            for ev in events:
                if ev.kind == EOF:
                    th, ct = splitter.finish()
                    take(ct, th, t)
                    if not a.done and a.error is None:
                        a.error = "stream ended without a final chunk (done/[DONE]); the answer is truncated"
                        a.error_kind = F.TRUNCATED
                    return
                if ev.kind == DONE:
                    a.done = True
                    continue
                if ev.kind == BAD:
                    a.bad_lines += 1
                    continue
                if ev.kind == ERROR_LINE:
                    msg = (F.error_text(ev.obj) or (ev.obj.get("message") if isinstance(ev.obj, dict) else None)
                           or ev.text or "error")
                    a.error, a.error_kind = msg, F.classify_stream_error(msg)
                    continue
                if ev.kind != DATA:
                    continue
                a.chunk_t.append(t)
                if a.first_chunk_ns is None:
                    a.first_chunk_ns = t
                delta = map_chunk(backend, ev.obj)
                if delta.error is not None:
                    a.error, a.error_kind = delta.error, F.classify_stream_error(delta.error)
                    continue
                a.api.update(delta.api)
                if delta.thinking:
                    take("", delta.thinking, t)
                if delta.content:
                    th, ct = splitter.feed(delta.content)
                    take(ct, th, t)
                if delta.done and backend != "openai":
                    a.done = True
            if not data:
                return


async def run_request(session: aiohttp.ClientSession, backend: str, base_url: str, model: str, prompt: str,
                      params: Params, *, timeout_s: float = 600.0, policy: RetryPolicy | None = None,
                      on_first: Callable[[str, int], None] | None = None, log=None) -> RequestResult:
    """Run one request with retries; never raises for server/network trouble (see ``error_kind``)."""
    policy = policy or RetryPolicy()
    p = copy.deepcopy(params)
    url = base_url.rstrip("/") + endpoint_path(backend)
    degraded: dict[str, Any] = {}
    retries = busy = degrades = 0
    stale_retried = False
    first_sent: set[str] = set()
    started_ns = time.monotonic_ns()

    def first_once(kind: str, t: int) -> None:
        if kind not in first_sent and on_first:
            first_sent.add(kind)
            on_first(kind, t)

    while True:
        a = Attempt(t0_ns=time.monotonic_ns())
        payload = build_payload(backend, model, prompt, p)
        try:
            await asyncio.wait_for(_one_attempt(session, url, backend, payload, a, first_once), timeout_s)
        except asyncio.TimeoutError:
            a.error, a.error_kind = f"no complete answer within --timeout {timeout_s:g} s", F.TIMEOUT
        except aiohttp.ClientConnectorError as exc:
            a.error, a.error_kind = F.connection_hint(base_url, str(exc.os_error or exc)), F.CONNECTION
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if a.status is None and not stale_retried:
                # a pooled keep-alive connection the server had already closed: reconnect once
                stale_retried = True
                retries += 1
                if log is not None:
                    log.warning("request_reconnect", model=model, error=f"{type(exc).__name__}: {exc}")
                continue
            a.error = f"the server closed the connection {'mid-answer' if a.status else 'before answering'} " \
                      f"({type(exc).__name__}: {exc})"
            a.error_kind = F.TRUNCATED
        except aiohttp.ClientError as exc:
            a.error, a.error_kind = f"{type(exc).__name__}: {exc}", F.BAD_RESPONSE
        end_ns = time.monotonic_ns()
        kind = a.error_kind
        retry_note = None
        if kind == F.BUSY and busy < policy.busy_retries:
            wait = min(policy.backoff_max_s, policy.backoff_s * (2 ** busy))
            busy += 1
            retry_note = {"wait_s": wait}
            await asyncio.sleep(wait)
        elif kind == F.OOM and degrades < policy.degrade_steps:
            step = degrade(p, policy, can_set_ctx=backend != "openai")
            if step is not None:
                degrades += 1
                degraded.update(step)
                retry_note = step
        elif kind == F.NO_THINK and p.think is not None:
            p.think = None
            degraded["think"] = None
            retry_note = {"think": None}
        if retry_note is not None:
            retries += 1
            if log is not None:
                log.warning("request_retry", model=model, error_kind=kind, error=a.error, **retry_note)
            continue
        client = client_metrics(a, end_ns)
        client["retries"] = retries
        client["elapsed_s"] = (end_ns - started_ns) / 1e9
        if degraded:
            client["degraded"] = degraded
        if a.bad_lines:
            client["bad_lines"] = a.bad_lines
        ok = a.error is None
        if kind == F.NO_THINK:
            kind = F.BAD_RESPONSE  # only a retry signal; the contract's kinds do not include it
        return RequestResult(ok=ok, text="".join(a.text), thinking="".join(a.thinking), api=a.api, client=client,
                             error=a.error, error_kind=None if ok else kind, params=p.as_dict())
