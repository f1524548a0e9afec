"""Failure classification (pure): HTTP status + error text -> what the collector does next.

| kind          | seen as                                        | action                                   |
|---------------|------------------------------------------------|------------------------------------------|
| connection    | cannot connect (ECONNREFUSED, DNS)             | stop the batch cleanly, say how to fix   |
| not_found     | 404                                            | skip this model, others go on            |
| busy          | 503 (Ollama queue full, llama.cpp loading)      | back off and retry unchanged (bounded)   |
| oom           | 500 or mid-stream text with an OOM substring   | lower num_ctx, then max_tokens, retry    |
| no_think      | 400 ``does not support thinking``              | retry without ``think``                  |
| midstream     | an error line after generation started         | keep the partial text, mark failed       |
| truncated     | EOF without ``done``/``[DONE]``, dropped socket | keep the partial text, mark failed       |
| timeout       | no answer within ``--timeout``                 | keep the partial text, mark failed       |
| bad_response  | any other status or unparsable body            | mark failed                              |
"""
from __future__ import annotations

import json
from typing import Any

CONNECTION = "connection"
NOT_FOUND = "not_found"
BUSY = "busy"
OOM = "oom"
NO_THINK = "no_think"
MIDSTREAM = "midstream"
TRUNCATED = "truncated"
TIMEOUT = "timeout"
BAD_RESPONSE = "bad_response"

# Ollama HEAD llm/status.go outOfMemorySubstrings, plus the older RAM check text.
OOM_SUBSTRINGS = (
    "out of memory", "out of device memory", "cudamalloc failed", "hipmalloc failed",
    "failed to allocate", "allocation failed", "not enough memory", "insufficient memory",
    "vk_error_out_of_device_memory", "erroroutofmemory", "requires more system memory",
)


def is_oom(message: str) -> bool:
    low = message.lower()
    return any(s in low for s in OOM_SUBSTRINGS)


def error_text(obj: Any) -> str | None:
    """The human error text of any server's error shape, or None if ``obj`` is not an error.

    Shapes: Ollama ``{"error": "..."}``; OpenAI/Ollama-v1/new vLLM/llama.cpp
    ``{"error": {"message": ...}}``; old vLLM ``{"object": "error", "message": ...}``.
    """
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, str) and err:
        return err
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or json.dumps(err)[:500])
    if obj.get("object") == "error":
        return str(obj.get("message") or "error")
    return None


def body_error_text(body: bytes) -> str:
    """Error text of a non-200 body: the JSON error message, else the body text itself."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        msg = error_text(json.loads(text))
    except ValueError:
        msg = None
    return msg or text[:500] or "(empty body)"


def classify_status(status: int, message: str) -> str:
    """Kind of a failed HTTP answer (before any streamed chunk)."""
    if status == 404:
        return NOT_FOUND
    if status == 503:
        return BUSY
    if status == 400 and "does not support thinking" in message.lower():
        return NO_THINK
    if is_oom(message):
        return OOM
    return BAD_RESPONSE


def classify_stream_error(message: str) -> str:
    """Kind of an error line that arrived after generation started."""
    return OOM if is_oom(message) else MIDSTREAM


def connection_hint(base_url: str, detail: str) -> str:
    return (f"cannot connect to the LLM server at {base_url} ({detail}). Is the server running "
            "(`ollama serve`, or your vLLM/llama.cpp server)? Is OLLAMA_HOST / --base-url pointing at it?")
