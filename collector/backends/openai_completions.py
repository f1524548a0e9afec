"""OpenAI-compatible ``POST /v1/completions`` (legacy text completions, SSE): the text is in
``choices[0].text``; everything else as :mod:`collector.backends.openai_chat`."""
from __future__ import annotations

from typing import Any

from collector.backends.openai_chat import OpenAIChat


class OpenAICompletions(OpenAIChat):
    name = "openai-completions"
    path = "/v1/completions"

    def _prompt_body(self, prompt: str) -> dict[str, Any]:
        return {"prompt": prompt}

    def _choice_texts(self, choice: dict[str, Any], streamed: bool) -> tuple[str, str]:
        return choice.get("text") or "", choice.get("reasoning_content") or ""

    def prompt_of(self, body: dict[str, Any]) -> str:
        prompt = body.get("prompt")
        if isinstance(prompt, list):  # a batch of prompts; recorded one per line
            return "\n".join(p for p in prompt if isinstance(p, str))
        return prompt if isinstance(prompt, str) else ""


BACKEND = OpenAICompletions()
