"""One streamed request through real HTTP against the stub servers (127.0.0.1, random port)."""
import asyncio

import aiohttp
import pytest

from collector import failures as F
from collector.backends import Params
from collector.retry import RetryPolicy
from collector.runner import run_request
from shared import messages as M
from tests.conftest import free_port
from tests.stubs import ollama_stub, openai_stub, serve

FAST = RetryPolicy(backoff_s=0.01, busy_retries=2)


async def _run(url, model, backend="ollama", params=None, timeout_s=5.0, policy=FAST):
    firsts = []
    async with aiohttp.ClientSession() as s:
        res = await run_request(s, backend, url, model, "Why is the sky blue?", params or Params(max_tokens=8),
                                timeout_s=timeout_s, policy=policy, on_first=lambda k, t, a: firsts.append((k, t)))
    return res, firsts


@pytest.fixture
async def ollama():
    app = ollama_stub.make_app(load_s=0.12)
    async with serve(app) as url:
        yield url, app[ollama_stub.STATE]


class TestOllamaStub:
    @pytest.mark.parametrize("backend", ["ollama", "ollama-chat"])
    async def test_ok_full_metrics_and_client_times(self, ollama, backend):
        url, st = ollama
        res, firsts = await _run(url, "ok", backend, Params(max_tokens=8, seed=1234, keep_alive="5m"))
        assert res.ok and res.error is None and res.text == "The answer is 42. 你好，世界"
        assert res.api["eval_count"] == 8 and res.api["done_reason"] == "length"
        for key in ("eval_duration_ns", "prompt_eval_count", "prompt_eval_duration_ns", "load_duration_ns",
                    "total_duration_ns"):
            assert res.api[key] > 0
        c = res.client
        assert 0 < c.first_chunk_s <= c.first_token_s <= c.latency_s
        assert c.chunks == len(c.chunk_t_ns) == 9 and c.chunk_t_ns == sorted(c.chunk_t_ns)
        assert c.cold is True and [k for k, _ in firsts] == ["content"]
        assert st.requests[-1]["options"]["seed"] == 1234 and st.requests[-1]["options"]["num_predict"] == 8
        warm, _ = await _run(url, "ok", backend, Params(max_tokens=8, keep_alive="5m"))
        assert warm.client.cold is False

    async def test_think_first_token_times_separate(self, ollama):
        url, _ = ollama
        res, firsts = await _run(url, "think", params=Params(max_tokens=4, think=True))
        assert res.ok and res.thinking == "Okay, let me think." and res.text == "The answer is 42"
        assert res.client.first_thinking_s < res.client.first_token_s
        assert [k for k, _ in firsts] == ["thinking", "content"]

    async def test_inline_think_is_split_out(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "inline-think")
        assert res.ok and res.thinking == "I should answer" and res.text.startswith("The answer")

    async def test_cache_hit_prompt_eval_count_absent_not_zero(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "cache-hit")
        assert res.ok and "prompt_eval_count" not in res.api and res.api["eval_count"] == 8

    async def test_missing_model_is_not_found(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "missing")
        assert not res.ok and res.error_kind == F.NOT_FOUND and res.skip_model and not res.fatal
        assert "model 'missing' not found" in res.error

    async def test_oom_load_lowers_num_ctx_until_it_fits(self, ollama):
        url, st = ollama
        res, _ = await _run(url, "oom-load", params=Params(num_ctx=8192, max_tokens=8))
        assert res.ok and res.client.degraded == {"num_ctx": 1024} and res.client.retries == 3
        assert [r["options"]["num_ctx"] for r in st.requests] == [8192, 4096, 2048, 1024]
        assert res.params["num_ctx"] == 1024

    async def test_oom_midstream_retries_degraded(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "oom-mid", params=Params(num_ctx=2048, max_tokens=8))
        assert res.ok and res.client.degraded == {"num_ctx": 1024}

    async def test_oom_gives_up_when_nothing_left_to_lower(self, ollama):
        url, _ = ollama
        pol = RetryPolicy(min_num_ctx=2048, min_max_tokens=8)
        res, _ = await _run(url, "oom-load", params=Params(num_ctx=2048, max_tokens=8), policy=pol)
        assert not res.ok and res.error_kind == F.OOM and "requires more system memory" in res.error

    async def test_midstream_error_keeps_partial_text(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "midstream")
        assert not res.ok and res.error_kind == F.MIDSTREAM and res.text == "The answer is"
        assert "unexpected EOF" in res.error

    async def test_busy_backs_off_bounded(self, ollama):
        url, st = ollama
        res, _ = await _run(url, "busy")
        assert not res.ok and res.error_kind == F.BUSY and res.client.retries == 2
        assert "please try again.  maximum" in res.error
        assert st.counts["busy"] == 3

    async def test_busy_once_then_succeeds(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "busy-once")
        assert res.ok and res.client.retries == 1

    async def test_dropped_socket_is_truncated_with_partial_text(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "drop")
        assert not res.ok and res.error_kind == F.TRUNCATED and res.text == "The answer"

    @pytest.mark.parametrize("model", ["longline", "longline-1m"])
    async def test_lines_over_256k_and_1m(self, ollama, model):
        url, _ = ollama
        res, _ = await _run(url, model)
        assert res.ok and res.api["eval_count"] == 8 and res.text.endswith("世界")

    async def test_one_byte_writes_with_multibyte_utf8(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "split")
        assert res.ok and res.text == "The answer is 42. 你好，世界" and "\ufffd" not in res.text

    async def test_hang_times_out(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "hang", timeout_s=0.5)
        assert not res.ok and res.error_kind == F.TIMEOUT and "--timeout" in res.error

    async def test_no_think_support_retries_without_think(self, ollama):
        url, st = ollama
        res, _ = await _run(url, "ok", params=Params(max_tokens=4, think=True))
        assert res.ok and res.client.degraded == {"think": None}
        assert st.requests[0]["think"] is True and "think" not in st.requests[1]

    async def test_embedding_model_is_bad_response(self, ollama):
        url, _ = ollama
        res, _ = await _run(url, "embed")
        assert not res.ok and res.error_kind == F.BAD_RESPONSE and "does not support generate" in res.error


async def test_connection_refused_is_fatal_with_fix():
    res, _ = await _run(f"http://127.0.0.1:{free_port()}", "ok")
    assert not res.ok and res.fatal and res.error_kind == F.CONNECTION
    assert "Is the server running" in res.error and "OLLAMA_HOST" in res.error


class TestOpenAIStub:
    @pytest.mark.parametrize("flavor", openai_stub.FLAVORS)
    async def test_ok_with_usage(self, flavor):
        async with serve(openai_stub.make_app(flavor)) as url:
            res, firsts = await _run(url, "ok", "openai", Params(max_tokens=6))
        assert res.ok and res.text == "Hello from the stub, 你好" and res.api["completion_tokens"] == 6
        assert res.api["done_reason"] == "length" or flavor == "ollama"
        assert ("timings" in res.api) == (flavor == "llamacpp")
        assert [k for k, _ in firsts] == ["content"]

    async def test_legacy_text_completions_backend(self):
        async with serve(openai_stub.make_app("vllm")) as url:
            res, firsts = await _run(url, "ok", "openai-completions", Params(max_tokens=6))
        assert res.ok and res.text == "Hello from the stub, 你好" and res.api["completion_tokens"] == 6
        assert res.api["done_reason"] == "length" and [k for k, _ in firsts] == ["content"]

    @pytest.mark.parametrize("flavor", ["llamacpp", "vllm", "ollama"])
    async def test_reasoning_kept_apart(self, flavor):
        async with serve(openai_stub.make_app(flavor)) as url:
            res, firsts = await _run(url, "think", "openai")
        assert res.ok and res.thinking == "We need to answer" and "We" not in res.text
        assert [k for k, _ in firsts] == ["thinking", "content"]

    @pytest.mark.parametrize("model", ["ping", "nospace", "null-content"])
    async def test_framing_variants_parse(self, model):
        async with serve(openai_stub.make_app("llamacpp")) as url:
            res, _ = await _run(url, model, "openai", Params(max_tokens=3))
        assert res.ok and res.text == "Hello from the"

    @pytest.mark.parametrize("model,kind,needle", [
        ("error-line", F.MIDSTREAM, "exceeds the available context size"),
        ("data-error", F.MIDSTREAM, "EngineCore"),
        ("nodone", F.TRUNCATED, "truncated"),
    ])
    async def test_stream_failures_keep_partial_text(self, model, kind, needle):
        async with serve(openai_stub.make_app("llamacpp")) as url:
            res, _ = await _run(url, model, "openai")
        assert not res.ok and res.error_kind == kind and needle in res.error and res.text == "Hello from the"

    @pytest.mark.parametrize("flavor,needle", [("vllm", "does not exist"), ("vllm-old", "does not exist"),
                                               ("llamacpp", "not found")])
    async def test_missing_model_in_each_error_shape(self, flavor, needle):
        async with serve(openai_stub.make_app(flavor)) as url:
            res, _ = await _run(url, "missing", "openai")
        assert res.error_kind == F.NOT_FOUND and needle in res.error

    async def test_loading_model_503_is_busy(self):
        async with serve(openai_stub.make_app("llamacpp")) as url:
            res, _ = await _run(url, "busy", "openai")
        assert res.error_kind == F.BUSY and "Loading model" in res.error


async def test_closed_before_answering_is_retried_once_then_truncated():
    """A pooled keep-alive connection the server already closed gets one reconnect; a server that
    always hangs up is then reported as truncated, not retried forever."""
    accepted = []

    async def hang_up(reader, writer):
        accepted.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        res, _ = await _run(f"http://127.0.0.1:{port}", "ok")
    finally:
        server.close()
        await server.wait_closed()
    assert not res.ok and res.error_kind == F.TRUNCATED and "before answering" in res.error
    assert res.client.retries == 1 and len(accepted) == 2


async def test_slow_stream_sends_throttled_progress_with_growing_token_counts():
    """req.progress while an answer streams: at least one, tokens growing, never more than one per 0.5 s
    per request (not per chunk: 11 chunks over ~1.7 s give at most 4)."""
    app = ollama_stub.make_app(load_s=0.0, token_delay_s=0.15)
    seen = []
    async with serve(app) as url, aiohttp.ClientSession() as s:
        res = await run_request(s, "ollama", url, "ok", "Why is the sky blue?", Params(max_tokens=11), timeout_s=10,
                                policy=FAST, on_progress=lambda att, t, a: seen.append((t, att.progress("r", a))))
    assert res.ok and res.client.chunks == 12
    assert 1 <= len(seen) <= res.client.latency_s / 0.5 + 1
    ts = [t for t, _ in seen]
    assert all(b - a >= 500_000_000 for a, b in zip(ts, ts[1:]))
    bodies = [b for _, b in seen]
    tokens = [b.tokens_so_far for b in bodies]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens) and 0 < tokens[-1] <= 11
    assert all(b.tokens_basis == "chunks" and b.attempt == 0 and b.rid == "r" for b in bodies)
    assert all(0 < b.chars_so_far <= len(res.text) and b.chunks_so_far == b.tokens_so_far for b in bodies)
    M.validate(M.REQ_PROGRESS, M.Stamper("x").stamp(bodies[-1].to_msg()), strict=True)
