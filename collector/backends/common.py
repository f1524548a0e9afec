"""What every backend shares (pure): request parameters, the :class:`Delta` a chunk maps to,
the base-URL rule, and the :class:`Backend` interface each backend module implements.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from collector.stream_parse import NdjsonParser, SseParser

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OPENAI_URL = "http://127.0.0.1:8080"

@dataclass
class Params:
    """Sampling/runner parameters of one request; None = not sent (server default)."""

    temperature: float | None = None
    top_p: float | None = None
    num_ctx: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    keep_alive: str | int | float | None = None
    think: bool | None = None
    cache_prompt: bool | None = None  # llama.cpp's server only: reuse the KV cache of an earlier prompt
    options: dict[str, Any] = field(default_factory=dict)  # extra per-case Ollama options
    raw: bool | None = None  # Ollama /api/generate only: the prompt as is, no chat template (HumanEval completion)
    stop: list[str] | None = None  # stop sequences (a suite's); None or [] = none sent (the server's own)

    def as_dict(self) -> dict[str, Any]:
        """The parameters actually sent; one left to the server's default is absent."""
        d = {k: getattr(self, k) for k in ("temperature", "top_p", "num_ctx", "max_tokens", "seed", "keep_alive")
             if getattr(self, k) is not None}
        if self.think is not None:
            d["think"] = self.think
        if self.cache_prompt is not None:
            d["cache_prompt"] = self.cache_prompt
        if self.raw is not None:
            d["raw"] = self.raw
        if self.stop:
            d["stop"] = list(self.stop)
        if self.options:
            d["options"] = dict(self.options)
        return d

@dataclass
class Delta:
    content: str = ""
    thinking: str = ""
    done: bool = False
    api: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

def normalize_base_url(value: str | None, backend: str = "ollama") -> str:
    """``--base-url`` / OLLAMA_HOST to a URL. Accepts ``host:port``, ``:port``, ``host`` like Ollama,
    and the OpenAI convention of a base URL ending in ``/v1`` (the paths are added here)."""
    if not value:
        value = os.environ.get("OLLAMA_HOST", "") if backend.startswith("ollama") else ""
    if not value:
        return DEFAULT_OLLAMA_URL if backend.startswith("ollama") else DEFAULT_OPENAI_URL
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = "http://" + value
    scheme, rest = value.split("://", 1)
    host, _, path = rest.partition("/")
    if host.startswith(":"):
        host = "127.0.0.1" + host
    elif host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host.startswith("0.0.0.0:"):
        host = "127.0.0.1" + host[len("0.0.0.0"):]
    if ":" not in host.rsplit("]", 1)[-1]:
        host += ":11434" if backend.startswith("ollama") and scheme == "http" else ""
    path = path.rstrip("/")
    if path == "v1" or path.endswith("/v1"):
        path = path[:-2].rstrip("/")
    return f"{scheme}://{host}" + (f"/{path}" if path else "")


class Backend:
    """One server API: everything the collector and the proxy need to talk it and read it.

    A subclass sets the class attributes and implements the payload and chunk mapping; the
    registry (:mod:`collector.backends`) is the one place that lists them.
    """

    name: str = ""
    family: str = ""            # "ollama" | "openai": which server kind (probe) speaks it
    path: str = ""              # the generation endpoint
    framing: str = "ndjson"     # "ndjson" | "sse"
    models_path: str = ""       # GET listing of the server's models
    listing_key: str = ""       # the list inside that listing ("models" | "data")
    done_chunk: bool = True     # the stream ends with a chunk saying done (else SSE ``[DONE]``)
    can_set_ctx: bool = False   # the server takes a per-request context size (retry can lower it)
    keeps_alive: bool = False   # takes keep_alive / think / num_ctx (native Ollama options)

    # -- the collector's own requests --------------------------------------------------------------
    def build_payload(self, model: str, prompt: str, p: Params) -> dict[str, Any]:
        raise NotImplementedError

    def make_parser(self, max_line_bytes: int | None = None):
        kwargs = {} if max_line_bytes is None else {"max_line_bytes": max_line_bytes}
        return SseParser(**kwargs) if self.framing == "sse" else NdjsonParser(**kwargs)

    def map_chunk(self, obj: Any) -> Delta:
        """One streamed chunk → a :class:`Delta`."""
        raise NotImplementedError

    def map_response(self, obj: Any) -> Delta:
        """A whole non-streamed answer (``stream: false``) → one final :class:`Delta`."""
        raise NotImplementedError

    # -- model listing -------------------------------------------------------------------------------
    def model_id(self, name: str) -> str:
        """One identity per model (Ollama: ``x`` and ``x:latest`` are the same model)."""
        return name.strip()

    def listed_names(self, listing: dict[str, Any] | None) -> list[str]:
        return [m.get("name") or m.get("model") or m.get("id") or ""
                for m in (listing or {}).get(self.listing_key) or [] if isinstance(m, dict)]

    show_path: str | None = None  # per-model details (POST), where the server has them

    def model_names(self, listing: dict[str, Any]) -> list[str]:
        """The models a listing offers for generation (what "all" means)."""
        return [m["id"] for m in listing.get(self.listing_key) or [] if isinstance(m, dict) and m.get("id")]

    def can_generate(self, show: dict[str, Any] | None) -> bool:
        """From the per-model details (``show_path``): False for a model that cannot generate."""
        return True

    def model_meta(self, name: str, listing: dict[str, Any] | None, show: dict[str, Any] | None) -> dict[str, Any]:
        """batch.start ``models`` entry: what the listing (and details) say of one model."""
        return {}

    def missing_fix(self, missing: list[str]) -> str:
        return "load them in the server, or use a name from its GET /v1/models list"

    # -- what a client sent (the proxy reads requests it did not build) -------------------------------
    def wants_stream(self, body: dict[str, Any]) -> bool:
        raise NotImplementedError

    def prompt_of(self, body: dict[str, Any]) -> str:
        """The request's prompt as text (chat: the messages, one per line with its role)."""
        raise NotImplementedError

    def params_of(self, body: dict[str, Any]) -> dict[str, Any]:
        """The sampling parameters as sent (everything but the model, the prompt and the stream flag)."""
        raise NotImplementedError

    def ask_usage(self, body: dict[str, Any]) -> bool:
        """Make a streamed request report its token counts; True when that changed the body (the
        client did not ask, so the usage must be taken out of what it receives)."""
        return False

    def hide_usage(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """A chunk as the client would have got it without asking for usage; None: drop the chunk."""
        return obj


def messages_text(messages: Any) -> str:
    """Chat messages as text, one ``role: content`` line each (the recorded prompt)."""
    lines = []
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        lines.append(f"{m.get('role', '')}: {content or ''}")
    return "\n".join(lines)
