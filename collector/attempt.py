"""One HTTP attempt as a sans-IO state machine: raw bytes and their arrival times in, answer text,
first-token notices and the failure kind out. No sockets and no clocks: the runner feeds it.

    att = AttemptState(backend, t0_ns)
    notices = att.feed(chunk_bytes, arrival_ns)   # [(kind, t_ns)] for the first content/thinking token
    ...
    att.feed(b"", eof_ns)                          # the body ended; ``att.closed`` is then True
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from collector import failures as F
from collector.backends import get
from collector.stream_parse import BAD, DATA, DONE, EOF, ERROR_LINE, StreamProtocolError, ThinkSplitter
from shared.messages import PROGRESS_EVERY_NS, ClientMetrics, ReqProgress

# A load_duration at or above this means the model was loaded for this request (cold).
COLD_LOAD_NS = 100_000_000
CONTENT, THINKING = "content", "thinking"


@dataclass
class AttemptState:
    """What one attempt saw; filled as bytes arrive, so a timeout keeps the partial text."""

    backend: str
    t0_ns: int
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    chunk_t_ns: list[int] = field(default_factory=list)
    first_chunk_ns: int | None = None
    first_content_ns: int | None = None
    first_thinking_ns: int | None = None
    api: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    closed: bool = False
    status: int | None = None
    error: str | None = None
    error_kind: str | None = None
    bad_lines: int = 0
    served_model: str | None = None   # the "model" the server names in its chunks
    text_chunks: int = 0              # chunks that carried answer or thinking text (req.progress)
    chars: int = 0                    # characters of answer and thinking text so far
    next_progress_ns: int = 0         # req.progress is due no earlier than this

    def __post_init__(self):
        self.next_progress_ns = self.t0_ns + PROGRESS_EVERY_NS
        self._api = get(self.backend)
        self._parser = self._api.make_parser()
        self._splitter = ThinkSplitter()

    def http_error(self, status: int, body: bytes) -> None:
        """A non-200 answer: classify it from its status and body text."""
        self.status, self.closed = status, True
        text = F.body_error_text(body)
        self.error_kind = F.classify_status(status, text)
        self.error = f"HTTP {status}: {text}"

    def fail(self, error: str, kind: str) -> None:
        """A failure the I/O loop saw (timeout, dropped connection)."""
        self.error, self.error_kind, self.closed = error, kind, True

    def feed(self, data: bytes, t_ns: int) -> list[tuple[str, int]]:
        """Bytes that arrived at ``t_ns`` (``b""`` = the body ended). Returns first-token notices."""
        notices: list[tuple[str, int]] = []
        if self.closed:
            return notices
        try:
            events = self._parser.feed(data)
        except StreamProtocolError as exc:
            self.fail(str(exc), F.BAD_RESPONSE)
            return notices
        for ev in events:
            if ev.kind == EOF:
                th, ct = self._splitter.finish()
                self._take(ct, th, t_ns, notices)
                if not self.done and self.error is None:
                    self.error = "stream ended without a final chunk (done/[DONE]); the answer is truncated"
                    self.error_kind = F.TRUNCATED
                self.closed = True
            elif ev.kind == DONE:
                self.done = True
            elif ev.kind == BAD:
                self.bad_lines += 1
            elif ev.kind == ERROR_LINE:
                msg = (F.error_text(ev.obj) or (ev.obj.get("message") if isinstance(ev.obj, dict) else None)
                       or ev.text or "error")
                self.error, self.error_kind = msg, F.classify_stream_error(msg)
            elif ev.kind == DATA:
                self._data(ev.obj, t_ns, notices)
        return notices

    def whole(self, body: bytes, t_ns: int) -> list[tuple[str, int]]:
        """A non-streamed answer (``stream: false``) that arrived whole at ``t_ns``.

        Its first token's instant is unknown (the server sent nothing before the end): no first-token
        notice and no chunk times, so TTFT, TPOT and client tokens/s stay empty instead of TTFT =
        latency and a decode of a few microseconds."""
        notices: list[tuple[str, int]] = []
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            self.fail(f"the answer is not JSON: {body[:200]!r}", F.BAD_RESPONSE)
            return notices
        if isinstance(obj, dict) and isinstance(obj.get("model"), str):
            self.served_model = obj["model"]
        delta = self._api.map_response(obj)
        self.closed = True
        if delta.error is not None:
            self.error, self.error_kind = delta.error, F.classify_stream_error(delta.error)
            return notices
        self.api.update(delta.api)
        th, ct = self._splitter.feed(delta.content)
        th2, ct2 = self._splitter.finish()
        self._take(ct + ct2, (delta.thinking or "") + th + th2, t_ns, notices)
        self.first_content_ns = self.first_thinking_ns = None
        self.done = True
        return []

    def progress_due(self, t_ns: int) -> bool:
        """True at most once per PROGRESS_EVERY_NS while text streams: one comparison per chunk, so the
        hot path stays a counter and a time check; the caller then sends :meth:`progress`."""
        if t_ns < self.next_progress_ns or not self.text_chunks or self.closed or self.done:
            return False
        self.next_progress_ns = t_ns + PROGRESS_EVERY_NS
        return True

    def progress(self, rid: str, attempt: int) -> ReqProgress:
        """The req.progress body for now: the server's own count where the stream carries one so far
        (eval_count / completion_tokens), else the chunks that carried text."""
        server = self.api.get("eval_count", self.api.get("completion_tokens"))
        if isinstance(server, int) and not isinstance(server, bool):
            tokens, basis = server, "server"
        else:
            tokens, basis = self.text_chunks, "chunks"
        return ReqProgress(rid=rid, attempt=attempt, chunks_so_far=len(self.chunk_t_ns), tokens_so_far=tokens,
                           tokens_basis=basis, chars_so_far=self.chars)

    def _data(self, obj: Any, t_ns: int, notices: list[tuple[str, int]]) -> None:
        self.chunk_t_ns.append(t_ns)
        if self.first_chunk_ns is None:
            self.first_chunk_ns = t_ns
        if self.served_model is None and isinstance(obj, dict) and isinstance(obj.get("model"), str):
            self.served_model = obj["model"]
        delta = self._api.map_chunk(obj)
        if delta.error is not None:
            self.error, self.error_kind = delta.error, F.classify_stream_error(delta.error)
            return
        self.api.update(delta.api)
        if delta.thinking or delta.content:
            self.text_chunks += 1
        if delta.thinking:
            self._take("", delta.thinking, t_ns, notices)
        if delta.content:
            th, ct = self._splitter.feed(delta.content)
            self._take(ct, th, t_ns, notices)
        if delta.done and self._api.done_chunk:  # OpenAI streams end with [DONE] instead
            self.done = True

    def _take(self, content: str, thinking: str, t_ns: int, notices: list[tuple[str, int]]) -> None:
        self.chars += len(thinking) + len(content)
        if thinking:
            self.thinking.append(thinking)
            if self.first_thinking_ns is None:
                self.first_thinking_ns = t_ns
                notices.append((THINKING, t_ns))
        if content:
            self.text.append(content)
            if self.first_content_ns is None:
                self.first_content_ns = t_ns
                notices.append((CONTENT, t_ns))

    @property
    def ok(self) -> bool:
        return self.error is None

    def client_metrics(self, request_t0_ns: int, end_ns: int) -> ClientMetrics:
        """Client timings in seconds from the request's start (the req.start instant, so they match
        the energy window; retries included), plus when this, the answering attempt, was sent."""
        def rel(t: int | None) -> float | None:
            return None if t is None else (t - request_t0_ns) / 1e9

        load = self.api.get("load_duration_ns")
        return ClientMetrics(latency_s=rel(end_ns), first_token_s=rel(self.first_content_ns),
                             first_thinking_s=rel(self.first_thinking_ns), first_chunk_s=rel(self.first_chunk_ns),
                             chunks=len(self.chunk_t_ns), chunk_t_ns=list(self.chunk_t_ns),
                             attempt_s=rel(self.t0_ns), bad_lines=self.bad_lines or None,
                             cold=load >= COLD_LOAD_NS if isinstance(load, (int, float)) else None)
