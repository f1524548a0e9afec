"""Model lists and metadata from the server's HTTP API (never from the ``ollama`` CLI's output).

Ollama: ``GET /api/tags`` (digest, details) + ``POST /api/show`` (context length, capabilities).
OpenAI-compatible: ``GET /v1/models`` where the server has it (llama.cpp adds ``meta``, vLLM
``max_model_len``). The pure parts are each backend's (``model_names``, ``can_generate``,
``model_meta``, in collector/backends/); this module only asks the server.
"""
from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from collector.backends import get
# the pure parts live with their backends; imported here under their old names
from collector.backends.ollama_generate import local_generators, model_meta_from_ollama  # noqa: F401
from collector.backends.openai_chat import model_meta_from_openai  # noqa: F401


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
    api = get(backend)
    listing = await get_json(session, "GET", base_url + api.models_path, timeout_s)
    names = []
    for name in api.model_names(listing or {}):
        if api.show_path:  # older servers list no capabilities: ask before running an embedder
            show = await get_json(session, "POST", base_url + api.show_path, timeout_s, json={"model": name})
            if not api.can_generate(show):
                continue
        names.append(name)
    return names, listing


async def fetch_model_meta(session: aiohttp.ClientSession, backend: str, base_url: str, name: str,
                           listing: dict[str, Any] | None, timeout_s: float) -> dict[str, Any]:
    api = get(backend)
    show = (await get_json(session, "POST", base_url + api.show_path, timeout_s, json={"model": name})
            if api.show_path else None)
    return api.model_meta(name, listing, show)
