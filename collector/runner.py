"""One streaming request over aiohttp, timed with the host's shared clock (shared.timebase). The loop only
moves bytes and stamps their arrival: the attempt's state machine is :mod:`collector.attempt`,
the retry decision :mod:`collector.retry`.
"""
from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

from collector import failures as F
from collector.attempt import AttemptState
from collector.backends import Params, get
from collector.retry import Retrier, RetryPolicy
from shared import timebase
from shared.messages import ClientMetrics


@dataclass
class RequestResult:
    ok: bool
    text: str
    thinking: str
    api: dict[str, Any]
    client: ClientMetrics
    error: str | None = None
    error_kind: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # what the last attempt actually sent
    served_model: str | None = None  # the model name the server put in its answer

    @property
    def fatal(self) -> bool:
        """The server is unreachable: the batch stops."""
        return self.error_kind == F.CONNECTION

    @property
    def skip_model(self) -> bool:
        return self.error_kind == F.NOT_FOUND


async def _stream(session: aiohttp.ClientSession, url: str, payload: dict[str, Any], att: AttemptState,
                  notify: Callable[[str, int], None], progress: Callable[[AttemptState, int], None] | None) -> None:
    async with session.post(url, json=payload) as resp:
        if resp.status != 200:
            att.http_error(resp.status, await resp.read())
            return
        att.status = resp.status
        async for data in resp.content.iter_any():
            now = timebase.now_ns()
            for kind, t in att.feed(data, now):
                notify(kind, t)
            if progress is not None and att.progress_due(now):
                progress(att, now)
            if att.closed:
                return
        for kind, t in att.feed(b"", timebase.now_ns()):
            notify(kind, t)


async def run_request(session: aiohttp.ClientSession, backend: str, base_url: str, model: str, prompt: str,
                      params: Params, *, timeout_s: float = 600.0, policy: RetryPolicy | None = None,
                      on_first: Callable[[str, int, int], None] | None = None, t0_ns: int | None = None,
                      on_progress: Callable[[AttemptState, int, int], None] | None = None,
                      log=None) -> RequestResult:
    """Run one request with retries; never raises for server/network trouble (see ``error_kind``).

    ``t0_ns`` is the request's start (the req.start stamp); client times count from it.
    ``on_first(kind, t_ns, attempt)`` is called for each attempt's first content/thinking token;
    ``on_progress(att, t_ns, attempt)`` at most every 0.5 s while text streams (``att.progress_due``)."""
    api = get(backend)
    retrier = Retrier(policy or RetryPolicy(), copy.deepcopy(params), can_set_ctx=api.can_set_ctx)
    url = base_url.rstrip("/") + api.path
    t0_ns = timebase.now_ns() if t0_ns is None else t0_ns
    while True:
        att = AttemptState(backend, timebase.now_ns())
        attempt = retrier.retries

        def notify(kind: str, t: int) -> None:
            if on_first is not None:
                on_first(kind, t, attempt)

        def progress(a: AttemptState, t: int) -> None:
            if on_progress is not None:
                on_progress(a, t, attempt)

        payload = api.build_payload(model, prompt, retrier.params)
        try:
            await asyncio.wait_for(_stream(session, url, payload, att, notify, progress if on_progress else None), timeout_s)
        except asyncio.TimeoutError:
            att.fail(f"no complete answer within --timeout {timeout_s:g} s", F.TIMEOUT)
        except aiohttp.ClientConnectorError as exc:
            att.fail(F.connection_hint(base_url, str(exc.os_error or exc)), F.CONNECTION)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if att.status is None and retrier.reconnect():
                if log is not None:
                    log.warning("request_reconnect", model=model, error=f"{type(exc).__name__}: {exc}")
                continue
            att.fail(f"the server closed the connection {'mid-answer' if att.status else 'before answering'} "
                     f"({type(exc).__name__}: {exc})", F.TRUNCATED)
        except aiohttp.ClientError as exc:
            att.fail(f"{type(exc).__name__}: {exc}", F.BAD_RESPONSE)
        end_ns = timebase.now_ns()
        note = None if att.ok else retrier.after(att.error_kind)
        if note is not None:
            if log is not None:
                log.warning("request_retry", model=model, error_kind=att.error_kind, error=att.error, **note)
            if "wait_s" in note:
                await asyncio.sleep(note["wait_s"])
            continue
        client = att.client_metrics(t0_ns, end_ns)
        client.retries = retrier.retries
        client.degraded = retrier.degraded or None
        kind = att.error_kind
        if kind == F.NO_THINK:
            kind = F.BAD_RESPONSE  # only a retry signal; the contract's kinds do not include it
        return RequestResult(ok=att.ok, text="".join(att.text), thinking="".join(att.thinking), api=att.api,
                             client=client, error=att.error, error_kind=None if att.ok else kind,
                             params=retrier.params.as_dict(), served_model=att.served_model)
