"""The measuring proxy's pure rules: which requests are measured, which headers pass, request ids,
what is stored of a text, and taking back the usage the proxy asked for. No sockets, no clocks.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from multidict import CIMultiDict

from collector.backends import BY_PATH, Backend
from collector.stream_parse import LineSplitter

TASK_HEADER = "X-GenAI-Power-Task"
TAG_HEADER = "X-GenAI-Power-Tag"
RID_HEADER = "X-GenAI-Power-Request-Id"
DEFAULT_TASK = DEFAULT_TAG = "proxy"
LOOKUP_PREFIX = "/_genai_power/requests/"

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones aiohttp sets itself for the body it sends.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length"}
# Our own request headers: read here, not passed on.
_OURS = {TASK_HEADER.lower(), TAG_HEADER.lower()}


def backend_for(method: str, path: str) -> Backend | None:
    """The backend whose generation endpoint this is; None: pass the request through unmeasured."""
    return BY_PATH.get(path.rstrip("/")) if method == "POST" else None


def upstream_headers(headers: Any) -> CIMultiDict:
    """The client's headers as sent upstream: everything (Authorization too) but hop-by-hop and ours.
    ``Accept-Encoding`` is dropped so the stream arrives uncompressed, chunk by chunk, readable."""
    out = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _HOP | _OURS | {"accept-encoding"})
    out["Accept-Encoding"] = "identity"  # else aiohttp asks for gzip itself
    return out


def client_headers(headers: Any) -> CIMultiDict:
    """The upstream's answer headers as the client gets them: hop-by-hop and the body's framing are
    the proxy's own (aiohttp re-frames), so is its content encoding (already decoded)."""
    drop = _HOP | {"content-encoding", "date", "server"}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)  # repeated ones kept


def header_text(value: str | None, default: str) -> str:
    """A task/tag header: UTF-8 percent-encoded (``%E4%BD%A0``), plain ASCII works as is."""
    if not value or not value.strip():
        return default
    value = value.strip()
    if any(ord(c) > 127 for c in value):  # raw UTF-8 bytes, which HTTP hands over as Latin-1
        try:
            return value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return value
    try:
        return unquote(value, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return value


_SEP = re.compile(r"[/\s]+")


def proxy_rid(batch: str, model: str, seq: int, task: str, tag: str) -> str:
    """``batch/model/{seq:06d}-{task}/{tag}/1``: the collector's ``batch/model/case-task/load/run`` shape
    with the proxy's request number in place of the case. Unique per request: the number counts up
    in one proxy run, and every run has its own batch directory. ``/`` inside task and tag is ``_``."""
    return f"{batch}/{model}/{seq:06d}-{_SEP.sub('_', task)}/{_SEP.sub('_', tag)}/1"


def rid_header(rid: str) -> str:
    """The rid as an HTTP header value and URL path segment (model names can be any UTF-8)."""
    return quote(rid, safe="")


def rid_from_path(path_part: str) -> str:
    return unquote(path_part)


def text_digest(text: str) -> dict[str, Any]:
    data = text.encode("utf-8")
    return {"chars": len(text), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def stored_text(text: str, *, no_text: bool, limit_bytes: int) -> tuple[str | None, dict[str, Any] | None]:
    """(what is recorded of a prompt or answer, the note saying it is not the whole text or None).

    ``no_text``: nothing but the length and a hash. Over ``limit_bytes``: the first ``limit_bytes``
    (whole UTF-8 characters), flagged ``truncated``. The client always gets the whole text."""
    if no_text:
        return None, {**text_digest(text), "stored": False}
    data = text.encode("utf-8")
    if len(data) <= limit_bytes:
        return text, None
    return data[:limit_bytes].decode("utf-8", errors="ignore"), {**text_digest(text), "truncated": True,
                                                                 "limit_bytes": limit_bytes}


@dataclass
class UsageHider:
    """SSE bytes → the same bytes without the usage the proxy asked for on the client's behalf.

    Lines pass through unchanged but for ``data:`` lines carrying ``usage``; those are rewritten as
    the server would have sent them without ``stream_options.include_usage`` (the usage-only chunk
    dropped with its blank separator line). Holds back at most one incomplete line."""

    backend: Backend

    def __post_init__(self):
        self._lines = LineSplitter()
        self._drop_blank = False

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for line in self._lines.feed(data):
            if not line.strip():
                if self._drop_blank:
                    self._drop_blank = False
                    continue
                out += line + b"\n"
                continue
            self._drop_blank = False
            kept = self._line(line)
            if kept is None:
                self._drop_blank = True
                continue
            out += kept + b"\n"
        return bytes(out)

    def _line(self, line: bytes) -> bytes | None:
        if not line.startswith(b"data:") or b'"usage"' not in line:
            return line
        raw = line[5:].lstrip(b" ")
        try:
            obj = json.loads(raw)
        except ValueError:
            return line
        if not isinstance(obj, dict):
            return line
        kept = self.backend.hide_usage(obj)
        if kept is None:
            return None
        if kept is obj:
            return line
        return b"data: " + json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @property
    def pending(self) -> int:
        return self._lines.pending_bytes
