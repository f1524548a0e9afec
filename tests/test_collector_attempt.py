"""The collector's pure request logic, fed bytes and times directly: no server, no event loop."""
import json

import pytest

from collector import failures as F
from collector.attempt import AttemptState
from collector.backends import Params
from collector.model_policy import ModelPolicy
from collector.retry import Retrier, RetryPolicy, degrade
from collector.settings import DEFAULTS

MS = 1_000_000


def ndjson(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def sse(*objs) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n" for o in objs)


def chat(content="", thinking="", done=False, **extra):
    """One /api/generate chunk (the "ollama" backend)."""
    out = {"model": "m", "response": content, "done": done, **extra}
    if thinking:
        out["thinking"] = thinking
    return out


class TestAttemptOllama:
    def test_thinking_then_answer_notices_and_timings(self):
        att = AttemptState("ollama", t0_ns=0)
        seen = []
        seen += att.feed(ndjson(chat(thinking="hmm")), 100 * MS)
        seen += att.feed(ndjson(chat("Hel")), 300 * MS)
        seen += att.feed(ndjson(chat("lo")), 350 * MS)
        seen += att.feed(ndjson(chat(done=True, eval_count=2, eval_duration=50 * MS, load_duration=2_000 * MS)),
                         400 * MS)
        seen += att.feed(b"", 410 * MS)
        assert seen == [("thinking", 100 * MS), ("content", 300 * MS)]
        assert att.ok and att.closed and "".join(att.text) == "Hello" and "".join(att.thinking) == "hmm"
        assert att.chunk_t_ns == [100 * MS, 300 * MS, 350 * MS, 400 * MS]
        m = att.client_metrics(request_t0_ns=-100 * MS, end_ns=410 * MS)
        assert m.latency_s == pytest.approx(0.51) and m.first_token_s == pytest.approx(0.4)
        assert m.first_thinking_s == pytest.approx(0.2) and m.first_chunk_s == pytest.approx(0.2)
        assert m.attempt_s == pytest.approx(0.1) and m.cold is True and m.chunks == 4

    def test_a_chunk_split_anywhere_gives_the_same_answer(self):
        body = ndjson(chat("你好"), chat(", world"), chat(done=True))
        whole = AttemptState("ollama", 0)
        whole.feed(body, 1)
        whole.feed(b"", 2)
        for cut in range(1, len(body)):
            att = AttemptState("ollama", 0)
            att.feed(body[:cut], 1)
            att.feed(body[cut:], 1)
            att.feed(b"", 2)
            assert att.text and "".join(att.text) == "".join(whole.text) == "你好, world" and att.ok

    def test_inline_think_tags_are_split_out(self):
        att = AttemptState("ollama", 0)
        notices = att.feed(ndjson(chat("<think>plan</think>\n\nAnswer"), chat(done=True)), 5)
        att.feed(b"", 6)
        assert "".join(att.thinking) == "plan" and "".join(att.text) == "Answer"
        assert [k for k, _ in notices] == ["thinking", "content"]

    def test_eof_without_done_is_truncated_and_keeps_text(self):
        att = AttemptState("ollama", 0)
        att.feed(ndjson(chat("partial")), 1)
        att.feed(b"", 2)
        assert not att.ok and att.error_kind == F.TRUNCATED and "".join(att.text) == "partial"

    def test_midstream_oom_line_is_classified(self):
        att = AttemptState("ollama", 0)
        att.feed(ndjson(chat("a"), {"error": "CUDA error: out of memory"}), 1)
        att.feed(b"", 2)
        assert att.error_kind == F.OOM and "".join(att.text) == "a"

    def test_http_error_body_is_classified(self):
        att = AttemptState("ollama", 0)
        att.http_error(404, b'{"error":"model \\"x\\" not found, try pulling it first"}')
        assert att.closed and att.error_kind == F.NOT_FOUND and att.error.startswith("HTTP 404: model")
        assert att.feed(ndjson(chat("late")), 1) == [] and not att.text  # nothing after close


class TestAttemptOpenAI:
    def test_done_marker_and_usage(self):
        att = AttemptState("openai", 0)
        delta = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
        usage = {"choices": [], "usage": {"completion_tokens": 1, "prompt_tokens": 3}}
        notices = att.feed(b": ping\n\n" + sse(delta, usage, b"[DONE]"), 7)
        att.feed(b"", 8)
        assert notices == [("content", 7)] and att.ok and "".join(att.text) == "Hi"
        assert att.api.get("completion_tokens") == 1

    def test_a_whole_answer_has_no_first_token_instant(self):
        """A non-streamed answer (the proxy passes ``stream: false`` through): its text and usage count,
        but the first token's time is unknown, so TTFT/TPOT/client tokens/s stay empty (they were
        TTFT = latency, TPOT 0.016 ms, 67000 tok/s on the demo's server)."""
        from analyzer.throughput import throughput
        att = AttemptState("openai", 0)
        body = {"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"},
                                           "finish_reason": "length"}],
                "usage": {"completion_tokens": 16, "prompt_tokens": 3}}
        assert att.whole(json.dumps(body).encode(), 3_000 * MS) == []
        assert att.ok and att.done and "".join(att.text) == "Hi there" and att.api.get("completion_tokens") == 16
        m = att.client_metrics(request_t0_ns=0, end_ns=3_001 * MS)
        assert m.latency_s == pytest.approx(3.001)
        assert m.first_token_s is None and m.first_chunk_s is None and m.chunks == 0
        from shared.messages import ReqEnd
        end = ReqEnd(rid="r", ok=True, text="Hi there", api=att.api, client=m)
        t = throughput(end, m.latency_s, m.first_token_s, m.first_chunk_s)
        assert t["output_tokens"] == 16 and t["client_toks_per_s"] is None and t["toks_per_s"] is None
        assert t["e2e_toks_per_s"] == pytest.approx(16 / 3.001)

    def test_missing_done_marker_is_truncated(self):
        att = AttemptState("openai", 0)
        att.feed(sse({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}), 1)
        att.feed(b"", 2)
        assert att.error_kind == F.TRUNCATED

    def test_runaway_line_is_a_bad_response(self):
        att = AttemptState("openai", 0)
        att._parser.lines.max_line_bytes = 16
        att.feed(b"data: " + b"x" * 64, 1)
        assert att.closed and att.error_kind == F.BAD_RESPONSE


class TestRetrier:
    def test_busy_backs_off_doubling_then_stops(self):
        r = Retrier(RetryPolicy(busy_retries=3, backoff_s=0.5, backoff_max_s=1.5), Params(), can_set_ctx=True)
        notes = [r.after(F.BUSY) for _ in range(4)]
        assert notes == [{"wait_s": 0.5}, {"wait_s": 1.0}, {"wait_s": 1.5}, None] and r.retries == 3

    def test_oom_degrades_params_in_place(self):
        p = Params(num_ctx=2048, max_tokens=64)
        r = Retrier(RetryPolicy(min_num_ctx=1024), p, can_set_ctx=True)
        assert r.after(F.OOM) == {"num_ctx": 1024} and p.num_ctx == 1024
        assert r.after(F.OOM) == {"max_tokens": 32} and r.degraded == {"num_ctx": 1024, "max_tokens": 32}

    def test_no_think_retries_once_without_think(self):
        r = Retrier(RetryPolicy(), Params(think=True), can_set_ctx=True)
        assert r.after(F.NO_THINK) == {"think": None} and r.params.think is None
        assert r.after(F.NO_THINK) is None and r.degraded == {"think": None}

    @pytest.mark.parametrize("kind", [F.TIMEOUT, F.NOT_FOUND, F.MIDSTREAM, F.CONNECTION, F.BAD_RESPONSE])
    def test_other_failures_stop(self, kind):
        r = Retrier(RetryPolicy(), Params(), can_set_ctx=True)
        assert r.after(kind) is None and r.retries == 0

    def test_reconnect_only_once(self):
        r = Retrier(RetryPolicy(), Params(), can_set_ctx=True)
        assert (r.reconnect(), r.reconnect(), r.retries) == (True, False, 1)


class TestDegrade:
    def test_num_ctx_halves_to_floor_then_max_tokens(self):
        p = Params(num_ctx=2048, max_tokens=64)
        pol = RetryPolicy(min_num_ctx=512, min_max_tokens=16)
        steps = []
        while (s := degrade(p, pol, can_set_ctx=True)) is not None:
            steps.append(s)
        assert steps == [{"num_ctx": 1024}, {"num_ctx": 512}, {"max_tokens": 32}, {"max_tokens": 16}]

    def test_openai_degrades_only_max_tokens(self):
        p = Params(max_tokens=40)
        assert degrade(p, RetryPolicy(min_max_tokens=16), can_set_ctx=False) == {"max_tokens": 20}
        assert p.num_ctx is None


def settings(**over):
    out = {k: {"value": v, "source": "default"} for k, v in DEFAULTS.items()}
    for k, v in over.items():
        out[k] = {"value": v, "source": "cli"}
    return out


class TestModelPolicy:
    CASE = {"prompt": "p", "task": "qa", "load": "short", "max_tokens": 200}

    def test_lowered_values_stick_for_later_requests(self):
        pol = ModelPolicy(settings(num_ctx=4096))
        assert pol.params(self.CASE).num_ctx == 4096
        pol.remember({"num_ctx": 1024, "max_tokens": 64}, error_kind=None)
        p = pol.params(self.CASE)
        assert (p.num_ctx, p.max_tokens) == (1024, 64)
        assert pol.params(dict(self.CASE, max_tokens=32)).max_tokens == 32  # already lower: kept

    def test_a_request_that_still_ran_out_of_memory_teaches_nothing(self):
        pol = ModelPolicy(settings())
        pol.remember({"num_ctx": 512}, error_kind=F.OOM)
        assert pol.sticky == {}

    def test_warmup_keeps_only_num_ctx(self):
        pol = ModelPolicy(settings())
        pol.remember({"num_ctx": 512, "max_tokens": 8}, error_kind=None, warmup=True)
        assert pol.sticky == {"num_ctx": 512}
        assert pol.warmup_params(self.CASE, 16).max_tokens == 16

    def test_not_found_skips_the_model_once(self):
        pol = ModelPolicy(settings())
        assert pol.after(None) is False and not pol.skipped
        assert pol.after(F.NOT_FOUND) is True and pol.skipped
        assert pol.after(F.NOT_FOUND) is False  # logged once
