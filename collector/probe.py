"""What server is at --base-url, asked before the first request (classification is pure).

Ollama answers ``GET /api/version`` with ``{"version": ...}``; an OpenAI-compatible server
(llama.cpp, vLLM, LM Studio, SGLang) answers ``GET /v1/models`` with ``{"data": [...]}`` and not
``/api/version``. (Ollama also serves ``/v1``, but its native API is the one that reports load and
eval timings, so an Ollama server is measured with an ``ollama`` backend.) llama.cpp names itself
in ``owned_by: "llamacpp"``.
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


def backend_problem(backend: str, server: ServerKind, base_url: str) -> str | None:
    """Why ``backend`` cannot talk to ``server``, with the fix; None when they match."""
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
                "use --backend ollama (its native API reports load and eval timings)")
    return None
