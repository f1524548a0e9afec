"""OpenAI-compatible ``POST /v1/chat/completions`` (SSE, ``data: [DONE]``): vLLM, llama.cpp's
server, LM Studio, SGLang, Ollama's ``/v1``. Token counts come from ``usage`` (asked for with
``stream_options.include_usage``); llama.cpp also sends its own ``timings``, recorded as they are
(never relabelled as Ollama's ``eval_*`` fields: the analyzer names which source it used)."""
from __future__ import annotations

from typing import Any

from collector.backends.common import Backend, Delta, Params, messages_text
from collector.failures import error_text

_NOT_PARAMS = ("model", "messages", "prompt", "stream", "stream_options", "tools", "functions", "user")


def openai_api_metrics(obj: dict[str, Any]) -> dict[str, Any]:
    """Usage (vLLM, Ollama /v1, LM Studio, SGLang) and llama.cpp ``timings`` of one chunk, under
    their own names: completion_tokens, prompt_tokens, cached_tokens, timings."""
    api: dict[str, Any] = {}
    usage = obj.get("usage")
    if isinstance(usage, dict):
        for key in ("completion_tokens", "prompt_tokens"):
            if usage.get(key) is not None:
                api[key] = usage[key]
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and details.get("cached_tokens") is not None:
            api["cached_tokens"] = details["cached_tokens"]
    timings = obj.get("timings")
    if isinstance(timings, dict):
        api["timings"] = timings
    return api


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


class OpenAIChat(Backend):
    name = "openai"
    family = "openai"
    path = "/v1/chat/completions"
    framing = "sse"
    models_path = "/v1/models"
    listing_key = "data"
    done_chunk = False
    can_set_ctx = False
    keeps_alive = False

    def build_payload(self, model: str, prompt: str, p: Params) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
        body.update(self._prompt_body(prompt))
        for key, value in (("temperature", p.temperature), ("top_p", p.top_p), ("max_tokens", p.max_tokens),
                           ("seed", p.seed)):
            if value is not None:
                body[key] = value
        if p.cache_prompt is not None:
            body["cache_prompt"] = p.cache_prompt
        if p.stop:
            body["stop"] = list(p.stop)
        # OpenAI has no num_ctx/keep_alive; per-case extra options pass through as top-level keys.
        body.update({k: v for k, v in p.options.items() if k not in body})
        return body

    def _prompt_body(self, prompt: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": prompt}]}

    def _choice_texts(self, choice: dict[str, Any], streamed: bool) -> tuple[str, str]:
        part = (choice.get("delta") if streamed else choice.get("message")) or {}
        if not isinstance(part, dict):
            return "", ""
        return part.get("content") or "", part.get("reasoning_content") or part.get("reasoning") or ""

    def _map(self, obj: Any, streamed: bool) -> Delta:
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
            content, thinking = self._choice_texts(choice, streamed)
            if choice.get("finish_reason"):
                api["done_reason"] = choice["finish_reason"]
        return Delta(content=content, thinking=thinking, api=api, done=not streamed)

    def map_chunk(self, obj: Any) -> Delta:
        return self._map(obj, streamed=True)

    def map_response(self, obj: Any) -> Delta:
        return self._map(obj, streamed=False)

    def model_meta(self, name: str, listing: dict[str, Any] | None, show: dict[str, Any] | None) -> dict[str, Any]:
        return model_meta_from_openai(name, listing)

    def wants_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True  # OpenAI answers in one piece unless asked to stream

    def prompt_of(self, body: dict[str, Any]) -> str:
        return messages_text(body.get("messages"))

    def params_of(self, body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in _NOT_PARAMS}

    def ask_usage(self, body: dict[str, Any]) -> bool:
        opts = body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage"):
            return False
        body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        return True

    def hide_usage(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Without include_usage a client gets no usage chunk (``choices: []``) and no usage key."""
        if "usage" not in obj:
            return obj
        if not obj.get("choices"):
            return None
        return {k: v for k, v in obj.items() if k not in ("usage", "timings")}


BACKEND = OpenAIChat()
