"""An OpenAI-compatible streaming stub in three flavours, behaviour chosen by the model name.

    python -m tests.stubs.openai_stub --port 8080 --flavor llamacpp

Flavours (``--flavor``): ``llamacpp`` (``reasoning_content``, ``timings``, first delta with
``content: null``), ``vllm`` (``reasoning``, new ``{"error":{...}}`` shape), ``vllm-old`` (old
``{"object":"error",...}`` shape), ``ollama`` (Ollama's ``/v1``: ``reasoning``, separate finish chunk).
Usage comes in a final ``choices: []`` chunk only when ``stream_options.include_usage`` is true.
``POST /v1/completions`` (legacy text completions) streams ``choices[0].text``; without ``"stream": true``
either endpoint answers one JSON object with its usage, as OpenAI does.

| model        | behaviour |
|--------------|-----------|
| ok           | answer chunks, finish, usage (+ timings for llamacpp), ``[DONE]`` |
| think        | reasoning chunks first |
| ping         | ``: ping`` comment lines between chunks |
| nospace      | ``data:{...}`` without the space |
| null-content | every answer delta also sends ``"content": null`` chunks in between |
| error-line   | llama.cpp before #16109: ``error: {...}`` line, then ``data: [DONE]`` |
| data-error   | ``data: {"error": {...}}`` then ``data: [DONE]`` (vLLM/SGLang mid-stream) |
| nodone       | chunks, then EOF without ``[DONE]`` (Ollama /v1 after a mid-stream error) |
| busy         | 503 ``Loading model`` (llama.cpp shape) |
| missing      | 404 in the flavour's error shape (also any unknown model) |
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SCENARIOS = ("ok", "think", "ping", "nospace", "null-content", "error-line", "data-error", "nodone", "busy", "missing")
FLAVORS = ("llamacpp", "vllm", "vllm-old", "ollama")
ANSWER_TOKENS = ["Hello", " from", " the", " stub", ",", " 你好", "！"]
THINK_TOKENS = ["We", " need", " to", " answer"]
CTX_ERROR = ("the request exceeds the available context size. try increasing the context size or enable "
             "context shift")


@dataclass
class OpenAIStubState:
    flavor: str = "llamacpp"
    token_delay_s: float = 0.001
    service_s: float | None = None  # fixed time to generate any answer (overrides token_delay_s)
    parallel: int | None = None     # slots generating at once (llama.cpp --parallel, /props total_slots)
    slots: asyncio.Semaphore | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    prompts_seen: set[str] = field(default_factory=set)  # llama.cpp's KV cache of earlier prompts
    headers: list[dict[str, str]] = field(default_factory=list)  # every generation request's headers


STATE = web.AppKey("openai_stub_state", OpenAIStubState)


def _error_body(flavor: str, status: int, message: str, etype: str) -> dict[str, Any]:
    if flavor == "vllm-old":
        return {"object": "error", "message": message, "type": etype, "param": None, "code": status}
    if flavor == "llamacpp":
        return {"error": {"code": status, "message": message, "type": etype}}
    return {"error": {"message": message, "type": etype, "param": None, "code": status}}


async def models(request: web.Request) -> web.Response:
    st = request.app[STATE]
    data = []
    for s in SCENARIOS:
        if s == "missing":
            continue
        m: dict[str, Any] = {"id": s, "object": "model", "created": 1762593253, "owned_by": st.flavor}
        if st.flavor == "llamacpp":
            m["meta"] = {"n_ctx_train": 8192, "n_params": 134_515_008, "size": 85_000_000}
        if st.flavor.startswith("vllm"):
            m["max_model_len"] = 16384
        data.append(m)
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def props(request: web.Request) -> web.Response:
    """llama.cpp's GET /props (the part the collector reads: its parallel slots)."""
    return web.json_response({"total_slots": request.app[STATE].parallel or 1, "build_info": "b6881-stub"})


async def completions(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    if st.parallel:  # requests beyond the slots wait, as in llama.cpp's server
        if st.slots is None:
            st.slots = asyncio.Semaphore(st.parallel)
        async with st.slots:
            return await _completions(request, st)
    return await _completions(request, st)


async def _completions(request: web.Request, st: OpenAIStubState) -> web.StreamResponse:
    body = await request.json()
    st.requests.append(body)
    st.headers.append(dict(request.headers))
    model = body.get("model", "")
    if model not in SCENARIOS or model == "missing":
        msg = f"The model `{model}` does not exist." if st.flavor.startswith("vllm") else f"model '{model}' not found"
        return web.json_response(_error_body(st.flavor, 404, msg, "NotFoundError" if st.flavor == "vllm-old"
                                             else "not_found_error"), status=404)
    if model == "busy":
        return web.json_response({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
                                 status=503)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    # llama.cpp reuses the KV cache of an identical earlier prompt unless cache_prompt is false
    prompt_key = json.dumps(body.get("messages", body.get("prompt")), sort_keys=True)
    cached = 11 if (st.flavor == "llamacpp" and body.get("cache_prompt", True) and prompt_key in st.prompts_seen) else 0
    st.prompts_seen.add(prompt_key)
    n = min(int(body.get("max_tokens") or len(ANSWER_TOKENS)), 64)
    answer = [ANSWER_TOKENS[i % len(ANSWER_TOKENS)] for i in range(n)]
    thinking = THINK_TOKENS if model == "think" else []
    created = int(time.time())
    text_api = request.path == "/v1/completions"  # the legacy text-completion API
    base = {"id": "cmpl-123" if text_api else "chatcmpl-123",
            "object": "text_completion" if text_api else "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "b6881-stub"}
    if body.get("stream") is not True:
        return await _whole(st, body, base, answer, thinking, cached, text_api)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    sep = "data:" if model == "nospace" else "data: "
    t_start = time.monotonic()
    delay_s = st.token_delay_s if st.service_s is None else st.service_s / (len(answer) + len(thinking) + 2)

    async def event(obj: dict[str, Any] | str) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        if delay_s:
            await asyncio.sleep(delay_s)
        await resp.write(f"{sep}{text}\n\n".encode("utf-8"))
        if model == "ping":
            await resp.write(b": ping\n\n")

    def delta_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if text_api:
            return {**base, "choices": [{"index": 0, "text": delta.get("content") or "", "logprobs": None,
                                         "finish_reason": finish}]}
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    if st.flavor == "llamacpp":
        await event(delta_chunk({"role": "assistant", "content": None}))
    reason_key = "reasoning_content" if st.flavor in ("llamacpp", "vllm-old") else "reasoning"
    for t in thinking:
        await event(delta_chunk({reason_key: t}))
    t_first = time.monotonic()
    for i, t in enumerate(answer):
        await event(delta_chunk({"content": t}))
        if model == "null-content":
            await event(delta_chunk({"content": None}))
        if i == 2 and model == "error-line":
            await resp.write(("error: " + json.dumps({"code": 400, "message": CTX_ERROR,
                                                      "type": "invalid_request_error"}) + "\n\n").encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        if i == 2 and model == "data-error":
            await event(_error_body("vllm", 500, "EngineCore encountered an issue", "InternalServerError"))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        if i == 2 and model == "nodone":
            await event(delta_chunk({"content": ""}))
            await resp.write_eof()
            return resp
    t_end = time.monotonic()
    if st.flavor == "ollama":
        await event(delta_chunk({}, "stop"))
        last = None
    else:
        last = delta_chunk({}, "length" if n < len(ANSWER_TOKENS) else "stop")
    if last is not None:
        await event(last)
    if include_usage:
        usage_chunk: dict[str, Any] = {**base, "choices": [], "usage": {
            "prompt_tokens": 12, "completion_tokens": len(answer) + len(thinking),
            "total_tokens": 12 + len(answer) + len(thinking), "prompt_tokens_details": {"cached_tokens": cached}}}
        if st.flavor == "llamacpp":
            prompt_ms = (t_first - t_start) * 1000
            predicted_ms = (t_end - t_first) * 1000
            usage_chunk["timings"] = {"cache_n": cached, "prompt_n": 12 - cached, "prompt_ms": prompt_ms,
                                      "predicted_n": len(answer) + len(thinking), "predicted_ms": predicted_ms}
        await event(usage_chunk)
    await resp.write(f"{sep}[DONE]\n\n".encode())
    await resp.write_eof()
    return resp


async def _whole(st: OpenAIStubState, body: dict[str, Any], base: dict[str, Any], answer: list[str],
                 thinking: list[str], cached: int, text_api: bool) -> web.Response:
    """A non-streamed answer: one JSON object, usage always included (as OpenAI does)."""
    if st.token_delay_s:
        await asyncio.sleep(st.token_delay_s * (len(answer) + len(thinking)))
    n = min(int(body.get("max_tokens") or len(ANSWER_TOKENS)), 64)
    finish = "length" if n < len(ANSWER_TOKENS) else "stop"
    if text_api:
        choice: dict[str, Any] = {"index": 0, "text": "".join(answer), "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    else:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(answer)}
        if thinking:
            message["reasoning_content" if st.flavor in ("llamacpp", "vllm-old") else "reasoning"] = "".join(thinking)
        choice = {"index": 0, "message": message, "finish_reason": finish}
        obj = "chat.completion"
    out = {**base, "object": obj, "choices": [choice], "usage": {
        "prompt_tokens": 12, "completion_tokens": len(answer) + len(thinking),
        "total_tokens": 12 + len(answer) + len(thinking), "prompt_tokens_details": {"cached_tokens": cached}}}
    return web.json_response(out)


def make_app(flavor: str = "llamacpp", **state: Any) -> web.Application:
    if flavor not in FLAVORS:
        raise ValueError(f"flavor {flavor!r}; choose one of {', '.join(FLAVORS)}")
    app = web.Application()
    app[STATE] = OpenAIStubState(flavor=flavor, **state)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    if flavor == "llamacpp":
        app.router.add_get("/props", props)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/completions", completions)
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.stubs.openai_stub", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--flavor", choices=FLAVORS, default="llamacpp")
    args = ap.parse_args(argv)
    web.run_app(make_app(args.flavor), host=args.host, port=args.port,
                print=lambda *a: print(f"openai stub ({args.flavor}) on http://{args.host}:{args.port}", flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
