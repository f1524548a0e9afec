"""Request payloads and chunk mapping for each server API (pure: no I/O).

- ``ollama``: native ``POST /api/generate`` (NDJSON)
- ``ollama-chat``: native ``POST /api/chat`` (NDJSON)
- ``openai``: ``POST /v1/chat/completions`` with ``stream_options.include_usage`` (SSE): vLLM,
  llama.cpp server, LM Studio, SGLang, Ollama's ``/v1``.

A chunk maps to a :class:`Delta`: answer text, thinking text, whether it ends the stream, server
metrics, or an error. Metrics absent from the server stay absent (never a fake zero).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from collector.failures import error_text
from collector.stream_parse import NdjsonParser, SseParser

BACKENDS = ("ollama", "ollama-chat", "openai")
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OPENAI_URL = "http://127.0.0.1:8080"

# Ollama final-chunk field -> contract key (durations are already integer ns on the wire).
_OLLAMA_METRICS = {
    "eval_count": "eval_count",
    "eval_duration": "eval_duration_ns",
    "prompt_eval_count": "prompt_eval_count",
    "prompt_eval_duration": "prompt_eval_duration_ns",
    "load_duration": "load_duration_ns",
    "total_duration": "total_duration_ns",
    "done_reason": "done_reason",
    # newer servers: prompt tokens taken from the KV cache (prompt_eval_count includes them)
    "prompt_eval_cached_count": "cached_tokens",
}


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


def endpoint_path(backend: str) -> str:
    return {"ollama": "/api/generate", "ollama-chat": "/api/chat", "openai": "/v1/chat/completions"}[backend]


def build_payload(backend: str, model: str, prompt: str, p: Params) -> dict[str, Any]:
    """The JSON body of one streaming request."""
    if backend in ("ollama", "ollama-chat"):
        options: dict[str, Any] = dict(p.options)
        for key, value in (("temperature", p.temperature), ("top_p", p.top_p), ("num_ctx", p.num_ctx),
                           ("num_predict", p.max_tokens), ("seed", p.seed)):
            if value is not None:
                options[key] = value
        body: dict[str, Any] = {"model": model, "stream": True, "options": options}
        if backend == "ollama":
            body["prompt"] = prompt
            if p.raw:
                body["raw"] = True
        else:
            body["messages"] = [{"role": "user", "content": prompt}]
        if p.keep_alive is not None:
            body["keep_alive"] = p.keep_alive
        if p.think is not None:
            body["think"] = p.think
        return body
    if backend == "openai":
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
                "stream_options": {"include_usage": True}}
        for key, value in (("temperature", p.temperature), ("top_p", p.top_p), ("max_tokens", p.max_tokens),
                           ("seed", p.seed)):
            if value is not None:
                body[key] = value
        if p.cache_prompt is not None:
            body["cache_prompt"] = p.cache_prompt
        # OpenAI has no num_ctx/keep_alive; per-case extra options pass through as top-level keys.
        body.update({k: v for k, v in p.options.items() if k not in body})
        return body
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def make_parser(backend: str, max_line_bytes: int | None = None):
    kwargs = {} if max_line_bytes is None else {"max_line_bytes": max_line_bytes}
    return SseParser(**kwargs) if backend == "openai" else NdjsonParser(**kwargs)


def ollama_api_metrics(obj: dict[str, Any]) -> dict[str, Any]:
    """Contract keys of an Ollama final chunk; a field the server omitted stays absent."""
    return {key: obj[src] for src, key in _OLLAMA_METRICS.items() if obj.get(src) is not None}


def map_ollama_chunk(obj: Any, chat: bool) -> Delta:
    if not isinstance(obj, dict):
        return Delta(error=f"unexpected chunk {str(obj)[:200]}")
    err = error_text(obj)
    if err is not None:
        return Delta(error=err)
    if chat:
        msg = obj.get("message") or {}
        content, thinking = msg.get("content") or "", msg.get("thinking") or ""
    else:
        content, thinking = obj.get("response") or "", obj.get("thinking") or ""
    done = obj.get("done") is True
    return Delta(content=content, thinking=thinking, done=done, api=ollama_api_metrics(obj) if done else {})


def openai_api_metrics(obj: dict[str, Any]) -> dict[str, Any]:
    """Usage (vLLM, Ollama /v1, LM Studio, SGLang) and llama.cpp ``timings`` of one chunk.

    llama.cpp's ``timings`` are server-side measurements, so they also fill the native
    ``eval_*``/``prompt_eval_*`` keys; plain ``usage`` gives token counts only.
    """
    api: dict[str, Any] = {}
    usage = obj.get("usage")
    if isinstance(usage, dict):
        if usage.get("completion_tokens") is not None:
            api["completion_tokens"] = usage["completion_tokens"]
            api["eval_count"] = usage["completion_tokens"]
        if usage.get("prompt_tokens") is not None:
            api["prompt_tokens"] = usage["prompt_tokens"]
            api["prompt_eval_count"] = usage["prompt_tokens"]
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and details.get("cached_tokens") is not None:
            api["cached_tokens"] = details["cached_tokens"]
    timings = obj.get("timings")
    if isinstance(timings, dict):
        api["timings"] = timings
        if timings.get("predicted_n") is not None:
            api["eval_count"] = timings["predicted_n"]
        if timings.get("predicted_ms") is not None:
            api["eval_duration_ns"] = int(round(timings["predicted_ms"] * 1e6))
        if timings.get("prompt_ms") is not None:
            api["prompt_eval_duration_ns"] = int(round(timings["prompt_ms"] * 1e6))
    return api


def map_openai_chunk(obj: Any) -> Delta:
    if not isinstance(obj, dict):
        return Delta(error=f"unexpected chunk {str(obj)[:200]}")
    err = error_text(obj)
    if err is not None:
        return Delta(error=err)
    content = thinking = ""
    api = openai_api_metrics(obj)
    choices = obj.get("choices") or []
    if choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta") or {}
        content = delta.get("content") or ""
        thinking = delta.get("reasoning_content") or delta.get("reasoning") or ""
        if choice.get("finish_reason"):
            api["done_reason"] = choice["finish_reason"]
    return Delta(content=content, thinking=thinking, api=api)


def map_chunk(backend: str, obj: Any) -> Delta:
    if backend == "openai":
        return map_openai_chunk(obj)
    return map_ollama_chunk(obj, chat=backend == "ollama-chat")
