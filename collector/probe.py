"""What server is at --base-url, asked before the first request (classification is pure).

Ollama answers ``GET /api/version`` with ``{"version": ...}``; an OpenAI-compatible server
(llama.cpp, vLLM, LM Studio, SGLang) answers ``GET /v1/models`` with ``{"data": [...]}`` and not
``/api/version``. Ollama also serves ``/v1`` on purpose, and people measure through it to match what
their applications call: ``--backend openai`` with a base URL ending in ``/v1`` at an Ollama server is
taken as meant (with a warning that the native API reports load and eval timings); ``--backend openai``
at an Ollama server's bare address is refused as the likely slip it is. llama.cpp names itself in
``owned_by: "llamacpp"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.backends import get

OLLAMA, OPENAI, UNKNOWN = "ollama", "openai", "unknown"


@dataclass(frozen=True)
class ServerKind:
    kind: str                      # ollama | openai | unknown
    flavor: str | None = None      # llamacpp, vllm, ... from /v1/models owned_by
    version: str | None = None

    @property
    def is_llamacpp(self) -> bool:
        return self.flavor == "llamacpp"


def classify(version_json: dict[str, Any] | None, models_json: dict[str, Any] | None) -> ServerKind:
    """From the JSON bodies of ``/api/version`` and ``/v1/models`` (None: not a 200 JSON answer)."""
    if isinstance(version_json, dict) and isinstance(version_json.get("version"), str):
        return ServerKind(OLLAMA, "ollama", version_json["version"])
    data = (models_json or {}).get("data") if isinstance(models_json, dict) else None
    if isinstance(data, list):
        owners = {str(m.get("owned_by")) for m in data if isinstance(m, dict) and m.get("owned_by")}
        return ServerKind(OPENAI, owners.pop() if len(owners) == 1 else None)
    return ServerKind(UNKNOWN)


def ollama_v1_chosen(backend: str, server: ServerKind, v1_named: bool) -> bool:
    """The user asked for Ollama's OpenAI-compatible API on purpose (an OpenAI backend and a /v1 URL)."""
    return get(backend).family == OPENAI and server.kind == OLLAMA and v1_named


OLLAMA_V1_NOTE = ("measuring Ollama through its OpenAI-compatible /v1 API, as asked; its native API (--backend ollama) "
                  "also reports load, prompt-eval and eval timings, so throughput is timed on the client here")


def backend_problem(backend: str, server: ServerKind, base_url: str, v1_named: bool = False) -> str | None:
    """Why ``backend`` cannot talk to ``server``, with the fix; None when they match (or when
    ``v1_named``: the user named --backend openai and a /v1 URL, see ollama_v1_chosen)."""
    if ollama_v1_chosen(backend, server, v1_named):
        return None
    if server.kind == UNKNOWN:
        return (f"{base_url} answered neither GET /api/version (Ollama) nor GET /v1/models (OpenAI-compatible); "
                "is --base-url / OLLAMA_HOST the LLM server's address (with its port)?")
    family = get(backend).family
    if family == OLLAMA and server.kind == OPENAI:
        what = f"an OpenAI-compatible server ({server.flavor})" if server.flavor else "an OpenAI-compatible server"
        return (f"{base_url} looks like {what}: GET /v1/models answered and GET /api/version did not; "
                "use --backend openai (and --base-url for it, not OLLAMA_HOST)")
    if family == OPENAI and server.kind == OLLAMA:
        return (f"{base_url} looks like an Ollama server (GET /api/version answered {server.version}); "
                "use --backend ollama (its native API reports load and eval timings), or, to measure its "
                f"OpenAI-compatible API on purpose, --base-url {base_url}/v1")
    return None
