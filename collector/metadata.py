"""Model lists and metadata from the server's HTTP API (never from the ``ollama`` CLI's output).

Ollama: ``GET /api/tags`` (digest, details) + ``POST /api/show`` (context length, capabilities).
OpenAI-compatible: ``GET /v1/models`` where the server has it (llama.cpp adds ``meta``, vLLM
``max_model_len``). The pure parts (``model_meta_from_*``, ``local_generators``) take JSON.
"""
from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from collector.backends import get
from collector.plan import model_id


def local_generators(tags: dict[str, Any]) -> list[str]:
    """Names from /api/tags that can generate locally: cloud (remote_host) and embedding-only left out."""
    out = []
    for m in tags.get("models") or []:
        if m.get("remote_host") or m.get("remote_model"):
            continue
        caps = m.get("capabilities")
        if isinstance(caps, list) and "embedding" in caps and "completion" not in caps:
            continue
        name = m.get("name") or m.get("model")
        if name:
            out.append(name)
    return out


def model_meta_from_ollama(name: str, tags: dict[str, Any] | None, show: dict[str, Any] | None) -> dict[str, Any]:
    """digest, parameter_size, quantization_level, family, context_length, capabilities (present ones)."""
    meta: dict[str, Any] = {}
    for m in (tags or {}).get("models") or []:
        if model_id(name, "ollama") == model_id(m.get("name") or m.get("model") or "", "ollama"):
            if m.get("digest"):
                meta["digest"] = m["digest"]
            if m.get("size") is not None:
                meta["size_b"] = m["size"]
            details = m.get("details") or {}
            for key in ("parameter_size", "quantization_level", "family", "format"):
                if details.get(key):
                    meta[key] = details[key]
            if details.get("context_length"):
                meta["context_length"] = details["context_length"]
            break
    if show:
        details = show.get("details") or {}
        for key in ("parameter_size", "quantization_level", "family", "format"):
            if details.get(key) and key not in meta:
                meta[key] = details[key]
        info = show.get("model_info") or {}
        arch = info.get("general.architecture")
        if arch and info.get(f"{arch}.context_length") is not None:
            meta["context_length"] = info[f"{arch}.context_length"]
        if info.get("general.parameter_count") is not None:
            meta["parameter_count"] = info["general.parameter_count"]
        if isinstance(show.get("capabilities"), list):
            meta["capabilities"] = show["capabilities"]
    return meta


def model_meta_from_openai(name: str, models: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for m in (models or {}).get("data") or []:
        if m.get("id") == name:
            if m.get("owned_by"):
                meta["owned_by"] = m["owned_by"]
            if m.get("max_model_len"):
                meta["context_length"] = m["max_model_len"]
            extra = m.get("meta") or {}
            if extra.get("n_ctx_train"):
                meta["context_length"] = extra["n_ctx_train"]
            if extra.get("n_params"):
                meta["parameter_count"] = extra["n_params"]
            if extra.get("size"):
                meta["size_b"] = extra["size"]
            break
    return meta


class ServerUnusable(RuntimeError):
    """The server answered its metadata endpoint with something that is not HTTP/JSON, or not in time."""


async def get_json(session: aiohttp.ClientSession, method: str, url: str, timeout_s: float,
                    **kw) -> dict[str, Any] | None:
    """JSON body of a 200 answer, else None (metadata is best-effort).

    A refused connection propagates (aiohttp.ClientConnectorError: the server is down); a server
    that answers garbage or nothing within ``timeout_s`` raises ServerUnusable naming the URL."""
    try:
        async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=timeout_s), **kw) as resp:
            if resp.status != 200:
                return None
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    except aiohttp.ClientConnectorError:
        raise
    except asyncio.TimeoutError as exc:
        raise ServerUnusable(f"{url} gave no answer within {timeout_s:g} s (--timeout)") from exc
    except aiohttp.ClientError as exc:
        raise ServerUnusable(f"{url} did not answer with valid HTTP ({type(exc).__name__}: {exc})") from exc


async def list_models(session: aiohttp.ClientSession, backend: str, base_url: str,
                      timeout_s: float) -> tuple[list[str], dict[str, Any] | None]:
    """(usable model names, the raw listing) — what "all" means for this server."""
    if get(backend).family == "openai":
        listing = await get_json(session, "GET", base_url + get(backend).models_path, timeout_s)
        return [m["id"] for m in (listing or {}).get("data") or [] if m.get("id")], listing
    listing = await get_json(session, "GET", base_url + "/api/tags", timeout_s)
    names = []
    for name in local_generators(listing or {}):
        # older servers list no capabilities in /api/tags: ask /api/show before running an embedder
        show = await get_json(session, "POST", base_url + "/api/show", timeout_s, json={"model": name})
        caps = (show or {}).get("capabilities")
        if isinstance(caps, list) and "embedding" in caps and "completion" not in caps:
            continue
        names.append(name)
    return names, listing


async def fetch_model_meta(session: aiohttp.ClientSession, backend: str, base_url: str, name: str,
                           listing: dict[str, Any] | None, timeout_s: float) -> dict[str, Any]:
    if get(backend).family == "openai":
        return model_meta_from_openai(name, listing)
    show = await get_json(session, "POST", base_url + "/api/show", timeout_s, json={"model": name})
    return model_meta_from_ollama(name, listing, show)
