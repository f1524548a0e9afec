"""Sans-IO parsers for streamed LLM responses: ``feed(bytes) -> [events]``; ``feed(b"")`` means EOF.

They never touch a socket. The caller reads raw bytes (``resp.content.iter_any()``) and feeds
whatever arrived: lines may be split across reads, a multibyte UTF-8 character may be split,
a line may be megabytes long (Ollama's ``context`` array). Lines are decoded only when complete.

Two framings:
- NDJSON (Ollama native ``/api/generate``, ``/api/chat``): one JSON object per line.
- SSE (OpenAI-compatible ``/v1/chat/completions``): ``data: <json>`` lines, ``data: [DONE]``,
  ``:`` comment lines (llama.cpp ``: ping``), ``data:`` with or without a space, and llama.cpp's
  old non-SSE ``error: {...}`` line. Each ``data:`` line is dispatched on its own (servers send
  single-line events), so a server that omits the blank separator line still works.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Ollama's own Go client accepts 8 MB lines; allow more but stop a runaway server.
DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024

# Event kinds
DATA = "data"          # a JSON object arrived (``obj``)
DONE = "done"          # SSE ``data: [DONE]``
ERROR_LINE = "error"   # llama.cpp's non-SSE ``error: {...}`` line (``obj`` or ``text``)
BAD = "bad"            # a complete line that is not valid JSON (``text``)
EOF = "eof"            # the body ended (always the last event)


class StreamProtocolError(ValueError):
    """The stream broke the framing (a line over the size limit, or feeding after EOF)."""


@dataclass
class StreamEvent:
    kind: str
    obj: Any = None
    text: str | None = None


class LineSplitter:
    """Raw bytes -> complete lines (bytes, without ``\\n`` or a trailing ``\\r``).

    Remembers how far it has searched, so a long line arriving in many pieces is scanned once.
    At EOF the leftover bytes (a body without a final newline) are returned as the last line.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._searched = 0
        self.closed = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.closed:
            raise StreamProtocolError("data fed after EOF")
        if not data:
            self.closed = True
            tail = bytes(self._buf).rstrip(b"\r")
            self._buf.clear()
            return [tail] if tail.strip() else []
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", max(self._searched, start))
            if nl < 0:
                break
            line = bytes(self._buf[start:nl])
            if line.endswith(b"\r"):
                line = line[:-1]
            lines.append(line)
            start = nl + 1
            self._searched = start
        if start:
            del self._buf[:start]
        self._searched = len(self._buf)
        if len(self._buf) > self.max_line_bytes:
            raise StreamProtocolError(
                f"a streamed line grew past {self.max_line_bytes} bytes without a newline; "
                "the server is not sending NDJSON/SSE (raise max_line_bytes if this is expected)")
        return lines

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)


def _json_event(text: str) -> StreamEvent:
    try:
        return StreamEvent(DATA, obj=json.loads(text))
    except (ValueError, RecursionError):  # RecursionError: found by fuzzing, a line of [[[[…]]]]
        return StreamEvent(BAD, text=text[:500])


class NdjsonParser:
    """Ollama native streams: every non-blank line is one JSON object."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
        self.lines = LineSplitter(max_line_bytes)

    def feed(self, data: bytes) -> list[StreamEvent]:
        events = []
        for raw in self.lines.feed(data):
            if not raw.strip():
                continue
            events.append(_json_event(raw.decode("utf-8", errors="replace")))
        if not data:
            events.append(StreamEvent(EOF))
        return events


class SseParser:
    """OpenAI-compatible Server-Sent Events; counts comment lines (``: ping``) in ``comments``."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
        self.lines = LineSplitter(max_line_bytes)
        self.comments = 0

    def feed(self, data: bytes) -> list[StreamEvent]:
        events = []
        for raw in self.lines.feed(data):
            if not raw.strip():
                continue
            if raw.startswith(b":"):
                self.comments += 1
                continue
            line = raw.decode("utf-8", errors="replace")
            field, sep, value = line.partition(":")
            if not sep:
                events.append(StreamEvent(BAD, text=line[:500]))
                continue
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                if value.strip() == "[DONE]":
                    events.append(StreamEvent(DONE))
                else:
                    events.append(_json_event(value))
            elif field == "error":
                ev = _json_event(value)
                events.append(StreamEvent(ERROR_LINE, obj=ev.obj, text=value[:500]))
            # event:, id:, retry: carry nothing we use
        if not data:
            events.append(StreamEvent(EOF))
        return events


class ThinkSplitter:
    """Separates old-style inline ``<think>…</think>`` (Ollama before v0.9, raw reasoning models)
    from the answer in a stream of content pieces. Only a ``<think>`` at the very start counts.

    ``feed(piece) -> (thinking, content)``; ``finish() -> (thinking, content)`` flushes held text.
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self):
        self._state = "start"  # start -> inside -> after
        self._held = ""
        self._thought = False
        self._answered = False  # any answer text emitted yet (leading blank lines after </think> dropped)

    def feed(self, piece: str) -> tuple[str, str]:
        if not piece:
            return "", ""
        if self._state == "after":
            return "", self._answer(piece)
        self._held += piece
        if self._state == "start":
            stripped = self._held.lstrip()
            if not stripped:
                return "", ""
            if stripped.startswith(self.OPEN):
                self._state = "inside"
                self._thought = True
                self._held = stripped[len(self.OPEN):]
            elif self.OPEN.startswith(stripped):
                return "", ""  # could still become <think>
            else:
                self._state = "after"
                out, self._held = self._held, ""
                return "", self._answer(out)
        # inside
        end = self._held.find(self.CLOSE)
        if end >= 0:
            thinking, rest = self._held[:end], self._held[end + len(self.CLOSE):]
            self._held = ""
            self._state = "after"
            return thinking, self._answer(rest)
        # keep a possible partial "</thi" at the end
        keep = 0
        for k in range(min(len(self.CLOSE) - 1, len(self._held)), 0, -1):
            if self.CLOSE.startswith(self._held[-k:]):
                keep = k
                break
        out = self._held[:len(self._held) - keep]
        self._held = self._held[len(self._held) - keep:]
        return out, ""

    def _answer(self, text: str) -> str:
        if not self._answered:
            text = text.lstrip() if self._state == "after" and self._saw_think else text
            self._answered = bool(text)
        return text

    @property
    def _saw_think(self) -> bool:
        return self._thought

    def finish(self) -> tuple[str, str]:
        held, self._held = self._held, ""
        if self._state == "inside":
            return held, ""
        return "", held
