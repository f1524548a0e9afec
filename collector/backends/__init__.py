"""The backends, registered in one place. Each module holds one server API: its path, payload,
chunk parsing, end of stream, model listing and id rule, probe match and metric mapping.

- ``ollama``: native ``POST /api/generate`` (NDJSON)
- ``ollama-chat``: native ``POST /api/chat`` (NDJSON)
- ``openai``: ``POST /v1/chat/completions`` (SSE): vLLM, llama.cpp server, LM Studio, SGLang, Ollama's ``/v1``
- ``openai-completions``: ``POST /v1/completions`` (SSE), the legacy text-completion API

The collector picks one by ``--backend``; the proxy picks one by the path a client called.
A chunk maps to a :class:`Delta`: answer text, thinking text, whether it ends the stream, server
metrics, or an error. Metrics absent from the server stay absent (never a fake zero).
"""
from __future__ import annotations

from typing import Any

from collector.backends import ollama_chat, ollama_generate, openai_chat, openai_completions
from collector.backends.common import (DEFAULT_OLLAMA_URL, DEFAULT_OPENAI_URL, Backend, Delta, Params,
                                       normalize_base_url)
from collector.backends.ollama_generate import ollama_api_metrics
from collector.backends.openai_chat import openai_api_metrics

REGISTRY: dict[str, Backend] = {m.BACKEND.name: m.BACKEND
                                for m in (ollama_generate, ollama_chat, openai_chat, openai_completions)}
BACKENDS = tuple(REGISTRY)
BY_PATH: dict[str, Backend] = {b.path: b for b in REGISTRY.values()}

__all__ = ["BACKENDS", "BY_PATH", "DEFAULT_OLLAMA_URL", "DEFAULT_OPENAI_URL", "REGISTRY", "Backend", "Delta",
           "Params", "build_payload", "endpoint_path", "get", "make_parser", "map_chunk", "normalize_base_url",
           "ollama_api_metrics", "openai_api_metrics"]


def get(name: str) -> Backend:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None


# Short forms of the common calls (the collector's own code and tests use them by name).
def endpoint_path(backend: str) -> str:
    return get(backend).path


def build_payload(backend: str, model: str, prompt: str, p: Params) -> dict[str, Any]:
    """The JSON body of one streaming request."""
    return get(backend).build_payload(model, prompt, p)


def make_parser(backend: str, max_line_bytes: int | None = None):
    return get(backend).make_parser(max_line_bytes)


def map_chunk(backend: str, obj: Any) -> Delta:
    return get(backend).map_chunk(obj)
