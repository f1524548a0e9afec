"""A faithful Ollama stub server (aiohttp) whose behaviour is chosen by the model name.

    python -m tests.stubs.ollama_stub --port 11434      # then: OLLAMA_HOST=127.0.0.1:11434

Wire formats follow Ollama (≈ v0.33): NDJSON chunks, headers sent only with the first chunk,
errors before generation as JSON with the real status, an error line mid-stream, metrics only on
the done chunk, ``omitempty`` fields absent. Scenarios (the part of the model name before ``:``):

| model        | behaviour |
|--------------|-----------|
| ok           | answer chunks + full metrics |
| think        | ``thinking`` chunks, then the answer (needs/accepts ``think``) |
| inline-think | old style: ``<think>…</think>`` inside ``response`` |
| cache-hit    | done chunk without ``prompt_eval_count`` |
| missing      | 404 ``model 'missing' not found`` (also any name not in /api/tags) |
| oom-load     | 500 ``model requires more system memory …`` until ``num_ctx`` ≤ ``oom_ctx_limit`` |
| oom-mid      | chunks, then a CUDA out-of-memory error line until ``num_ctx`` ≤ ``oom_ctx_limit`` |
| midstream    | 3 chunks, then ``{"error":"an error was encountered while running the model: unexpected EOF"}`` |
| busy         | always 503 ``server busy, please try again.  maximum pending requests exceeded`` |
| busy-once    | 503 on the first request for the model, then ok |
| drop         | 2 chunks, then the socket is closed |
| longline     | the done chunk carries a ``context`` array over 256 KiB on one line |
| longline-1m  | the same over 1 MiB |
| split        | every byte written separately (multibyte UTF-8 split) |
| hang         | never answers |
| embed        | embedding-only: 400 ``"embed" does not support generate`` |

Load: ``service_s`` makes every answer take that long (spread over its chunks); ``parallel`` lets
that many requests generate at once and queues the rest, as Ollama does beyond OLLAMA_NUM_PARALLEL
(``max_active`` records the most seen at once).

Models with ``thinking`` capability: think, inline-think. Others answer 400 ``"m" does not support
thinking`` when ``think`` is true. Empty prompt (or ``messages: []``) loads, and with
``keep_alive: 0`` unloads, like Ollama. ``app[STATE].requests`` keeps every request body.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SCENARIOS = ("ok", "think", "inline-think", "cache-hit", "missing", "oom-load", "oom-mid", "midstream", "busy",
             "busy-once", "drop", "longline", "longline-1m", "split", "hang", "embed")
LISTED = [s for s in SCENARIOS if s != "missing"]
THINKERS = ("think", "inline-think")
CLOUD_MODEL = "gpt-oss:120b-cloud"
BUSY_TEXT = "server busy, please try again.  maximum pending requests exceeded"
OOM_LOAD_TEXT = "model requires more system memory (7.5 GiB) than is available (5.2 GiB)"
OOM_MID_TEXT = "llama runner process has terminated: CUDA error: out of memory"
MIDSTREAM_TEXT = "an error was encountered while running the model: unexpected EOF"
ANSWER_TOKENS = ["The", " answer", " is", " 42", ".", " 你好", "，", "世界", "！", " Done", "."]
THINK_TOKENS = ["Okay", ",", " let", " me", " think", "."]
DIGEST = "0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163"


@dataclass
class StubState:
    load_s: float = 0.12           # simulated model load (slept for real, reported as load_duration)
    token_delay_s: float = 0.001   # between streamed chunks
    oom_ctx_limit: int = 1024      # oom-* scenarios succeed at or below this num_ctx
    default_num_predict: int = 11
    service_s: float | None = None  # fixed time to generate any answer (overrides token_delay_s)
    parallel: int | None = None     # requests generated at once (OLLAMA_NUM_PARALLEL); the rest queue
    active: int = 0                 # requests generating now, and the most seen at once
    max_active: int = 0
    slots: asyncio.Semaphore | None = None
    loaded: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    headers: list[dict[str, str]] = field(default_factory=list)  # every generation request's headers
    aborted: int = 0               # streams whose client went away mid-answer (the write failed)


STATE = web.AppKey("stub_state", StubState)


def scenario_of(model: str) -> str:
    return model.split(":", 1)[0]


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 1_000_000_000:09d}Z"


def _details(name: str) -> dict[str, Any]:
    family = "qwen3" if scenario_of(name) in THINKERS else "bert" if scenario_of(name) == "embed" else "llama"
    return {"parent_model": "", "format": "gguf", "family": family, "families": None,
            "parameter_size": "7.6B" if family != "bert" else "137M", "quantization_level": "Q4_K_M"}


def _capabilities(name: str) -> list[str]:
    s = scenario_of(name)
    if s == "embed":
        return ["embedding"]
    return ["completion", "thinking"] if s in THINKERS else ["completion"]


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": "0.33.0"})


async def tags(request: web.Request) -> web.Response:
    models = [{"name": f"{s}:latest", "model": f"{s}:latest", "modified_at": "2025-05-10T08:06:48.639712648-07:00",
               "size": 4683075271, "digest": DIGEST, "details": _details(s)} for s in LISTED]
    models.append({"name": CLOUD_MODEL, "model": CLOUD_MODEL, "modified_at": "2025-08-01T00:00:00Z", "size": 384,
                   "digest": "f" * 64, "remote_model": "gpt-oss:120b", "remote_host": "https://cloud.invalid:443",
                   "details": _details(CLOUD_MODEL)})
    return web.json_response({"models": models})


async def show(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "missing request body")
    name = body.get("model") or body.get("name")
    if not name:
        return _error(400, "model is required")
    if scenario_of(name) not in LISTED:
        return _error(404, f"model '{name}' not found")
    return web.json_response({
        "modelfile": "# stub", "parameters": "stop \"<|end|>\"", "template": "{{ .Prompt }}",
        "details": _details(name),
        "model_info": {"general.architecture": "llama", "general.parameter_count": 7_615_616_512,
                       "llama.context_length": 32768},
        "capabilities": _capabilities(name), "modified_at": "2025-05-10T08:06:48.639712648-07:00",
    })


def _unloads(keep_alive: Any) -> bool:
    return keep_alive in (0, "0", "0s", "0m", 0.0)


async def _chunk_line(obj: dict[str, Any]) -> bytes:
    # Go's encoder escapes <, >, & — keep that so clients never grep raw bytes for <think>.
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n").encode("utf-8")


async def generate(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _generate(request: web.Request, chat: bool) -> web.StreamResponse:
    st = request.app[STATE]
    arrived = time.monotonic_ns()
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "missing request body")
    if not isinstance(body, dict) or not body.get("model"):
        return _error(400, "model is required")
    st.requests.append(body)
    st.headers.append(dict(request.headers))
    model = body["model"]
    s = scenario_of(model)
    st.counts[s] = st.counts.get(s, 0) + 1
    options = body.get("options") or {}
    if s not in LISTED:
        return _error(404, f"model '{model}' not found")
    if s == "embed":
        return _error(400, f'"{model}" does not support {"chat" if chat else "generate"}')
    if body.get("think") and s not in THINKERS:
        return _error(400, f'"{model}" does not support thinking')
    if s == "busy" or (s == "busy-once" and st.counts[s] == 1):
        return _error(503, BUSY_TEXT)
    num_ctx = options.get("num_ctx", 4096)
    if s == "oom-load" and num_ctx > st.oom_ctx_limit:
        return _error(500, OOM_LOAD_TEXT)
    if s == "hang":
        await asyncio.sleep(3600)
    keep_alive = body.get("keep_alive")
    empty = (not body.get("messages")) if chat else (not body.get("prompt"))
    if empty:
        final: dict[str, Any] = {"model": model, "created_at": _now_iso()}
        final.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
        if _unloads(keep_alive):
            st.loaded.discard(model)
            final.update(done=True, done_reason="unload")
        else:
            if model not in st.loaded:
                await asyncio.sleep(st.load_s)
                st.loaded.add(model)
            final.update(done=True, done_reason="load")
        return web.json_response(final)
    if st.parallel:  # queue like Ollama beyond OLLAMA_NUM_PARALLEL: the wait shows up as TTFT
        if st.slots is None:
            st.slots = asyncio.Semaphore(st.parallel)
        async with st.slots:
            return await _answer(request, st, body, model, s, chat, arrived)
    return await _answer(request, st, body, model, s, chat, arrived)


async def _answer(request: web.Request, st: StubState, body: dict[str, Any], model: str, s: str, chat: bool,
                  arrived: int) -> web.StreamResponse:
    st.active += 1
    st.max_active = max(st.max_active, st.active)
    try:
        return await _stream_answer(request, st, body, model, s, chat, arrived)
    finally:
        st.active -= 1


async def _stream_answer(request: web.Request, st: StubState, body: dict[str, Any], model: str, s: str, chat: bool,
                         arrived: int) -> web.StreamResponse:
    options = body.get("options") or {}
    num_ctx = options.get("num_ctx", 4096)
    keep_alive = body.get("keep_alive")
    # load
    if model not in st.loaded:
        await asyncio.sleep(st.load_s)
        st.loaded.add(model)
    loaded_at = time.monotonic_ns()
    prompt = body["messages"][-1]["content"] if chat else body["prompt"]
    n_predict = options.get("num_predict", st.default_num_predict)
    if n_predict is None or n_predict < 0:
        n_predict = st.default_num_predict
    answer = [ANSWER_TOKENS[i % len(ANSWER_TOKENS)] for i in range(min(n_predict, 64))]
    thinking: list[str] = []
    if s == "think" and body.get("think") is not False:
        thinking = list(THINK_TOKENS)
    if s == "inline-think":
        answer = ["<think>", "I should", " answer", "</think>", "\n\n"] + answer

    def chunk(text: str = "", think_text: str = "") -> dict[str, Any]:
        c: dict[str, Any] = {"model": model, "created_at": _now_iso()}
        if chat:
            msg = {"role": "assistant", "content": text}
            if think_text:
                msg["thinking"] = think_text
            c["message"] = msg
        else:
            c["response"] = text
            if think_text:
                c["thinking"] = think_text
        c["done"] = False
        return c

    delay_s = st.token_delay_s
    if st.service_s is not None:  # the whole answer takes service_s: spread over the gaps between chunks
        delay_s = st.service_s / (len(answer) + len(thinking))
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
    prepared = False
    first_tok_ns = None

    streaming = body.get("stream") is not False
    collected: list[dict[str, Any]] = []  # stream: false gathers the chunks into one answer

    async def send(obj: dict[str, Any], delay: bool = True) -> None:
        nonlocal prepared
        if not streaming:
            if st.token_delay_s and delay and collected:
                await asyncio.sleep(st.token_delay_s)
            collected.append(obj)
            return
        data = await _chunk_line(obj)
        if not prepared:
            await resp.prepare(request)  # headers go out only with the first chunk, as in Ollama
            prepared = True
        elif delay_s and delay:
            await asyncio.sleep(delay_s)  # between chunks, never after the last one
        try:
            if s == "split":
                for i in range(len(data)):
                    await resp.write(data[i:i + 1])
            else:
                await resp.write(data)
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError too: the client hung up
            st.aborted += 1
            raise

    sent = 0
    for t in thinking:
        if first_tok_ns is None:
            first_tok_ns = time.monotonic_ns()
        await send(chunk("", t))
    for t in answer:
        if first_tok_ns is None:
            first_tok_ns = time.monotonic_ns()
        await send(chunk(t))
        sent += 1
        if s == "midstream" and sent == 3:
            if not streaming:
                return _error(500, MIDSTREAM_TEXT)
            await send({"error": MIDSTREAM_TEXT})
            await resp.write_eof()
            return resp
        if s == "oom-mid" and sent == 2 and num_ctx > st.oom_ctx_limit:
            await send({"error": OOM_MID_TEXT})
            await resp.write_eof()
            return resp
        if s == "drop" and sent == 2:
            request.transport.close()  # the runner died: no done chunk, no clean chunked end
            return resp
    if delay_s:
        await asyncio.sleep(delay_s)  # the last token's time, inside the server's timings
    done_ns = time.monotonic_ns()
    final = chunk("")
    final["done"] = True
    final["done_reason"] = "length" if n_predict <= len(answer) else "stop"
    if not chat:
        n_ctx_ints = {"longline": 45_000, "longline-1m": 200_000}.get(s, 8)
        final["context"] = list(range(100_000, 100_000 + n_ctx_ints))
    first_tok_ns = first_tok_ns or done_ns
    final["total_duration"] = done_ns - arrived
    final["load_duration"] = loaded_at - arrived
    if s != "cache-hit":
        final["prompt_eval_count"] = max(1, len(prompt.split()))
    final["prompt_eval_duration"] = max(1, first_tok_ns - loaded_at)
    final["eval_count"] = len(answer) + len(thinking)
    final["eval_duration"] = max(1, done_ns - first_tok_ns)
    await send(final, delay=False)
    if not streaming:
        return _whole(collected, chat)
    await resp.write_eof()
    if _unloads(keep_alive):
        st.loaded.discard(model)
    return resp


def _whole(chunks: list[dict[str, Any]], chat: bool) -> web.Response:
    """``stream: false``: one JSON answer, the texts joined, the done chunk's metrics (as Ollama does)."""
    final = dict(chunks[-1])
    if chat:
        msg = {"role": "assistant", "content": "".join(c["message"].get("content", "") for c in chunks)}
        thinking = "".join(c["message"].get("thinking", "") for c in chunks)
        if thinking:
            msg["thinking"] = thinking
        final["message"] = msg
    else:
        final["response"] = "".join(c.get("response", "") for c in chunks)
        thinking = "".join(c.get("thinking", "") for c in chunks)
        if thinking:
            final["thinking"] = thinking
    return web.json_response(final)


async def ps(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response({"models": [{"name": m, "model": m, "size": 4683075271, "digest": DIGEST,
                                          "details": _details(m), "expires_at": "2099-01-01T00:00:00Z",
                                          "size_vram": 4683075271, "context_length": 4096} for m in st.loaded]})


def make_app(**state: Any) -> web.Application:
    """The stub as an aiohttp app; keyword arguments set :class:`StubState` fields; ``v1=True`` adds
    Ollama's OpenAI-compatible API (/v1/models, /v1/chat/completions), off by default."""
    v1 = state.pop("v1", False)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = StubState(**state)
    app.router.add_get("/", root)  # also answers HEAD
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_post("/api/show", show)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/chat", chat)
    app.router.add_get("/api/ps", ps)
    if v1:  # Ollama serves its OpenAI-compatible API too: the OpenAI stub's "ollama" flavour
        from tests.stubs import openai_stub

        app[openai_stub.STATE] = openai_stub.OpenAIStubState(flavor="ollama")
        app.router.add_get("/v1/models", openai_stub.models)
        app.router.add_post("/v1/chat/completions", openai_stub.completions)
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.stubs.ollama_stub", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=11434)
    ap.add_argument("--load-s", type=float, default=0.12, help="simulated model load time (s)")
    ap.add_argument("--token-delay-s", type=float, default=0.001, help="delay between chunks (s)")
    ap.add_argument("--service-s", type=float, default=None, help="fixed time to generate any answer (s)")
    ap.add_argument("--parallel", type=int, default=None,
                    help="requests generated at once, the rest queue (like OLLAMA_NUM_PARALLEL)")
    args = ap.parse_args(argv)
    web.run_app(make_app(load_s=args.load_s, token_delay_s=args.token_delay_s, service_s=args.service_s,
                         parallel=args.parallel), host=args.host, port=args.port,
                print=lambda *a: print(f"ollama stub on http://{args.host}:{args.port}", flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
