"""Ollama's native ``POST /api/chat`` (NDJSON): the text is in ``message.content`` /
``message.thinking``; everything else as :mod:`collector.backends.ollama_generate`."""
from __future__ import annotations

from typing import Any

from collector.backends.common import messages_text
from collector.backends.ollama_generate import OllamaGenerate


class OllamaChat(OllamaGenerate):
    name = "ollama-chat"
    path = "/api/chat"

    def _prompt_body(self, prompt: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": prompt}]}

    def _texts(self, obj: dict[str, Any]) -> tuple[str, str]:
        msg = obj.get("message") or {}
        if not isinstance(msg, dict):
            return "", ""
        return msg.get("content") or "", msg.get("thinking") or ""

    def prompt_of(self, body: dict[str, Any]) -> str:
        return messages_text(body.get("messages"))


BACKEND = OllamaChat()
