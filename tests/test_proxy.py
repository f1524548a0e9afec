"""The measuring proxy (python -m collector.proxy) between the official ``ollama`` / ``openai`` Python
clients and the stub servers: what each client receives equals what it gets directly, and every
generation is recorded under the contract. Real aiohttp servers and clients on loopback, a real
recording; the telemetry in the slow tests is the daemon's simulated GPU.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import ollama
import openai
import pytest

from collector.proxy_flow import RID_HEADER, UsageHider, header_text, proxy_rid, rid_header, stored_text
from collector.backends import get
from shared import messages as M
from shared.bus import free_port
from tests.proxy_helpers import ends, recorded, running_proxy
from tests.stubs import ollama_stub, openai_stub, serve_in_thread

SECRET = "sk-proxy-test-secret-0123456789"


@pytest.fixture
def ollama_up():
    state: dict = {}

    def make():
        app = ollama_stub.make_app(load_s=0.0, token_delay_s=0.002)
        state["app"] = app
        return app

    with serve_in_thread(make) as url:
        yield url, state["app"][ollama_stub.STATE]


@pytest.fixture
def openai_up():
    state: dict = {}

    def make():
        app = openai_stub.make_app("llamacpp", token_delay_s=0.002)
        state["app"] = app
        return app

    with serve_in_thread(make) as url:
        yield url, state["app"][openai_stub.STATE]


class TestOllamaClient:
    def test_same_answers_as_direct_and_every_generation_recorded(self, ollama_up, tmp_path):
        up, st = ollama_up
        direct = ollama.Client(host=up)
        with running_proxy(up, tmp_path) as (url, proxy, opts):
            via = ollama.Client(host=url, headers={"X-GenAI-Power-Task": quote("摘要"), "X-GenAI-Power-Tag": "ui"})
            for c in (direct, via):  # warm the stub's model so both answers carry the same load time class
                c.generate(model="ok", prompt="warm")
            d, v = direct.generate(model="ok", prompt="hi"), via.generate(model="ok", prompt="hi")
            assert (v.response, v.done, v.done_reason, v.eval_count) == (d.response, d.done, d.done_reason, d.eval_count)
            d_chunks = list(direct.chat(model="think", messages=[{"role": "user", "content": "q"}], stream=True,
                                        think=True))
            v_chunks = list(via.chat(model="think", messages=[{"role": "user", "content": "q"}], stream=True, think=True))
            assert [(c.message.content, c.message.thinking) for c in v_chunks] == \
                [(c.message.content, c.message.thinking) for c in d_chunks]
            assert v_chunks[-1].done and v_chunks[-1].done_reason == d_chunks[-1].done_reason
            v_gen = list(via.generate(model="ok", prompt="hi", stream=True))
            assert "".join(c.response for c in v_gen) == d.response
            assert via.list() == direct.list()  # other paths untouched
            assert via.show("ok").modelfile == direct.show("ok").modelfile
            with pytest.raises(ollama.ResponseError) as err:
                via.generate(model="missing", prompt="hi")
            assert err.value.status_code == 404 and "not found" in err.value.error
        es = {e["rid"]: e for e in ends(opts)}
        starts = [p for t, p in recorded(opts) if t == M.REQ_START]
        assert len(starts) == len(es) == 5  # warm + generate + chat + streamed generate + the 404
        ours = [s for s in starts if s["task"] == "摘要"]
        assert len(ours) == 5 and all(s["load"] == "ui" for s in ours)
        assert len({s["rid"] for s in starts}) == 5  # unique per request
        chat = next(s for s in starts if s["proxy"]["path"] == "/api/chat")
        assert chat["prompt"] == "user: q" and chat["params"] == {"think": True}
        e = es[chat["rid"]]
        assert e["ok"] and e["thinking"] == "".join(ollama_stub.THINK_TOKENS) and e["api"]["eval_count"] > 0
        missing = next(s for s in starts if s["model"] == "missing")
        assert es[missing["rid"]]["error_kind"] == "not_found"
        for t, p in recorded(opts):
            M.validate(t, p, strict=True)
        assert Path(opts.batch.text_file(chat["rid"])).read_text(encoding="utf-8") == e["text"]


class TestOpenAIClient:
    def test_same_answers_usage_only_when_asked(self, openai_up, tmp_path):
        up, st = openai_up
        direct = openai.OpenAI(base_url=up + "/v1", api_key=SECRET, max_retries=0)
        with running_proxy(up, tmp_path) as (url, proxy, opts):
            via = openai.OpenAI(base_url=url + "/v1", api_key=SECRET, max_retries=0)
            msgs = [{"role": "user", "content": "hi"}]

            def streamed(c, **kw):
                chunks = list(c.chat.completions.create(model="ok", messages=msgs, stream=True, **kw))
                text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
                finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
                return text, finish, [ch.usage for ch in chunks if ch.usage is not None]

            d, v = streamed(direct), streamed(via)
            assert v == d and v[2] == []  # no usage: the client did not ask for it
            d, v = streamed(direct, stream_options={"include_usage": True}), \
                streamed(via, stream_options={"include_usage": True})
            assert v[:2] == d[:2] and v[2][0].completion_tokens == d[2][0].completion_tokens == 7
            dw = direct.chat.completions.create(model="ok", messages=msgs, max_tokens=3)
            vw = via.chat.completions.create(model="ok", messages=msgs, max_tokens=3)
            assert (vw.choices[0].message.content, vw.choices[0].finish_reason, vw.usage.completion_tokens) == \
                (dw.choices[0].message.content, dw.choices[0].finish_reason, dw.usage.completion_tokens)
            dc = list(direct.completions.create(model="ok", prompt="hi", stream=True))
            vc = list(via.completions.create(model="ok", prompt="hi", stream=True))
            assert [c.choices[0].text for c in vc if c.choices] == [c.choices[0].text for c in dc if c.choices]
            assert all(c.usage is None for c in vc)
            assert [m.id for m in via.models.list()] == [m.id for m in direct.models.list()]
            with pytest.raises(openai.NotFoundError):
                via.chat.completions.create(model="missing", messages=msgs)
        # upstream got the key, and the usage request the proxy added for the first stream
        assert all(h.get("Authorization") == f"Bearer {SECRET}" for h in st.headers)
        assert st.requests[-6]["stream_options"] == {"include_usage": True}
        es = ends(opts)
        assert len(es) == 5 and sum(e["ok"] for e in es) == 4
        # token counts recorded even where the client did not ask for usage; llama.cpp timings by name
        first = es[0]
        assert first["api"]["completion_tokens"] == 7 and first["api"]["timings"]["predicted_n"] == 7
        assert "eval_count" not in first["api"]
        assert [p for t, p in recorded(opts) if t == M.REQ_START][0]["proxy"]["usage_added"] is True
        # the key is passed upstream but never recorded
        assert SECRET.encode() not in opts.batch.stream.read_bytes()
        assert not any(SECRET in p.read_text(encoding="utf-8") for p in opts.batch.root.rglob("*.json"))


class TestPassThrough:
    async def test_other_paths_keep_status_body_and_length(self, ollama_up, tmp_path):
        up, _ = ollama_up
        with running_proxy(up, tmp_path) as (url, proxy, opts):
            async with aiohttp.ClientSession() as s:
                for method, path in (("GET", "/api/version?x=1"), ("HEAD", "/"), ("GET", "/nope"),
                                     ("POST", "/api/show")):
                    kw = {"json": {"model": "ok"}} if method == "POST" else {}
                    async with s.request(method, up + path, **kw) as d, s.request(method, url + path, **kw) as v:
                        assert (v.status, await v.read(), v.headers.get("Content-Type")) == \
                            (d.status, await d.read(), d.headers.get("Content-Type")), path
                        assert v.headers.get("Content-Length") == d.headers.get("Content-Length"), path
                        assert RID_HEADER not in v.headers
        assert ends(opts) == []  # nothing but generations is recorded


class TestFailures:
    def test_upstream_down_is_a_502_naming_it(self, tmp_path):
        dead = f"http://127.0.0.1:{free_port()}"
        with running_proxy(dead, tmp_path) as (url, proxy, opts):
            with pytest.raises(ollama.ResponseError) as err:
                ollama.Client(host=url).generate(model="ok", prompt="hi")
            assert err.value.status_code == 502 and dead in err.value.error
            with pytest.raises(openai.APIStatusError) as err2:
                openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).chat.completions.create(
                    model="ok", messages=[{"role": "user", "content": "hi"}])
            assert err2.value.status_code == 502 and dead in str(err2.value)
            with pytest.raises(ollama.ResponseError) as err3:
                ollama.Client(host=url).list()  # a pass-through path too
            assert err3.value.status_code == 502
        es = ends(opts)
        assert [e["error_kind"] for e in es] == ["connection", "connection"]

    async def test_client_disconnect_fails_the_request_and_closes_upstream(self, tmp_path):
        state: dict = {}

        def make():
            app = ollama_stub.make_app(load_s=0.0, token_delay_s=0.05)
            state["st"] = app[ollama_stub.STATE]
            return app

        with serve_in_thread(make) as up, running_proxy(up, tmp_path) as (url, proxy, opts):
            async with aiohttp.ClientSession() as s:
                resp = await s.post(url + "/api/generate", json={"model": "ok", "prompt": "hi",
                                                                   "options": {"num_predict": 60}})
                assert resp.status == 200
                await resp.content.readline()  # the first chunk arrived; the client goes away
                resp.close()
            for _ in range(100):
                if ends(opts):
                    break
                await asyncio.sleep(0.05)
            for _ in range(100):  # the upstream's next write fails once its connection is closed
                if state["st"].aborted:
                    break
                await asyncio.sleep(0.05)
        [e] = ends(opts)
        assert not e["ok"] and e["error_kind"] == "truncated" and "client disconnected" in e["error"]
        assert 0 < len(e["text"]) < 60
        assert state["st"].aborted == 1

    async def test_slow_upstream_streams_chunk_by_chunk(self, tmp_path):
        """Chunks reach the client as the server sends them, not when the answer is complete."""
        def make():
            return ollama_stub.make_app(load_s=0.3, token_delay_s=0.05)

        with serve_in_thread(make) as up, running_proxy(up, tmp_path) as (url, proxy, opts):
            async with aiohttp.ClientSession() as s:
                t0 = time.monotonic()
                async with s.post(url + "/api/chat", json={"model": "ok", "messages": [{"role": "user", "content": "x"}],
                                                           "options": {"num_predict": 12}}) as resp:
                    rid = resp.headers[RID_HEADER]
                    arrivals = []
                    async for line in resp.content:
                        arrivals.append(time.monotonic() - t0)
                        assert json.loads(line)
                assert len(arrivals) == 13
                assert arrivals[-1] - arrivals[0] > 0.4  # spread over the answer: forwarded as they came
                async with s.get(url + "/_genai_power/requests/" + rid) as lk:
                    body = await lk.json()
        assert lk.status == 200 and body["energy_ready"] is False and "no telemetry" in body["reason"]
        row = body["row"]
        assert row["output_tokens"] == 12 and row["ok"] is True and 300 <= row["ttft_ms"] < arrivals[0] * 1000 + 50
        [e] = ends(opts)
        assert e["client"]["first_token_s"] >= 0.3 and e["client"]["chunks"] == 13
        # tokens so far for live views: throttled (≤ 1 per 0.5 s), not one per chunk
        progress = [p for t, p in recorded(opts) if t == M.REQ_PROGRESS]
        assert 1 <= len(progress) <= e["client"]["latency_s"] / 0.5 + 1 and all(p["rid"] == e["rid"] for p in progress)
        tokens = [p["tokens_so_far"] for p in progress]
        assert tokens == sorted(tokens) and 0 < tokens[-1] <= 12 and progress[0]["tokens_basis"] == "chunks"
        assert all(b["t"] - a["t"] >= 500_000_000 for a, b in zip(progress, progress[1:]))
        for p in progress:
            M.validate(M.REQ_PROGRESS, p, strict=True)


class TestStorageRules:
    def test_no_text_keeps_lengths_and_hashes_only(self, ollama_up, tmp_path):
        up, _ = ollama_up
        with running_proxy(up, tmp_path, no_text=True) as (url, proxy, opts):
            r = ollama.Client(host=url).generate(model="ok", prompt="a private prompt")
        raw = opts.batch.stream.read_bytes()
        assert b"a private prompt" not in raw and r.response.encode() not in raw
        [s] = [p for t, p in recorded(opts) if t == M.REQ_START]
        [e] = ends(opts)
        assert s.get("prompt") is None and s["prompt_note"]["chars"] == len("a private prompt")
        assert s["prompt_note"]["stored"] is False and len(s["prompt_note"]["sha256"]) == 64
        assert e.get("text") is None and e["text_note"]["chars"] == len(r.response) and e["ok"]
        assert not list(opts.batch.texts.iterdir())

    def test_long_prompt_passes_whole_but_is_stored_truncated(self, ollama_up, tmp_path):
        up, st = ollama_up
        prompt = "长" * 2000  # 6000 bytes
        with running_proxy(up, tmp_path, max_stored_bytes=1000) as (url, proxy, opts):
            ollama.Client(host=url).generate(model="ok", prompt=prompt)
        assert st.requests[-1]["prompt"] == prompt
        [s] = [p for t, p in recorded(opts) if t == M.REQ_START]
        assert s["prompt"] == "长" * 333 and s["prompt_note"]["truncated"] is True
        assert s["prompt_note"]["chars"] == 2000


class TestPureRules:
    def test_rid_unique_shape_and_header_round_trip(self):
        rid = proxy_rid("proxy_1_x", "hf.co/a/b:Q4", 7, "sum/mary", "我 的")
        assert rid == "proxy_1_x/hf.co/a/b:Q4/000007-sum_mary/我_的/1"
        from collector.proxy_flow import rid_from_path
        assert rid_from_path(rid_header(rid)) == rid and "/" not in rid_header(rid)
        assert header_text(quote("摘要"), "proxy") == "摘要" and header_text(None, "proxy") == "proxy"
        assert header_text("%FF", "proxy") == "%FF"  # not UTF-8: kept as sent
        assert header_text("摘要".encode().decode("latin-1"), "proxy") == "摘要"  # raw UTF-8 works too

    def test_headers_each_way(self):
        from multidict import CIMultiDict

        from collector.proxy_flow import client_headers, upstream_headers
        sent = upstream_headers(CIMultiDict([("Authorization", "Bearer k"), ("Host", "x"), ("X-GenAI-Power-Tag", "t"),
                                             ("Accept-Encoding", "gzip"), ("Connection", "keep-alive"), ("X-A", "1")]))
        assert dict(sent) == {"Authorization": "Bearer k", "X-A": "1", "Accept-Encoding": "identity"}
        back = client_headers(CIMultiDict([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Transfer-Encoding", "chunked"),
                                           ("Content-Type", "application/x-ndjson")]))
        assert back.getall("Set-Cookie") == ["a=1", "b=2"] and "Transfer-Encoding" not in back

    def test_lookup_answer_202_until_the_row_then_the_row_or_the_reason(self):
        from collector.proxy_rows import Entry, lookup_answer
        running = Entry("r", {})
        done = Entry("r", {}, ended_s=100.0, row={"rid": "r", "output_tokens": 5})
        pub = {"rid": "r", "energy_ready": True, "row": {"gpu_energy_j": 2.0}}
        assert lookup_answer("x", None, "b", True, None, None, 0, 30)[0] == 404
        assert lookup_answer("r", running, "b", True, None, None, 0, 30)[0] == 202
        status, body = lookup_answer("r", done, "b", False, None, None, 100.0, 30)  # no telemetry: at once
        assert status == 200 and not body["energy_ready"] and "no telemetry" in body["reason"]
        assert lookup_answer("r", done, "b", True, None, None, 129.0, 30)[0] == 202  # still within the wait
        status, body = lookup_answer("r", done, "b", True, pub, None, 101.0, 30)
        assert status == 200 and body["energy_ready"] and body["row"] == {"rid": "r", "output_tokens": 5,
                                                                         "gpu_energy_j": 2.0}
        status, body = lookup_answer("r", done, "b", True, None, None, 131.0, 30)  # waited long enough
        assert status == 200 and not body["energy_ready"] and "within 30 s" in body["reason"]
        status, body = lookup_answer("r", done, "b", True, None, 2, 100.5, 30)  # the analyzer died: at once
        assert status == 200 and "exited (code 2)" in body["reason"]

    def test_stored_text_cuts_whole_characters(self):
        text, note = stored_text("ab长", no_text=False, limit_bytes=4)
        assert text == "ab" and note["truncated"] and note["bytes"] == 5
        assert stored_text("ab", no_text=False, limit_bytes=4) == ("ab", None)

    def test_usage_hider_drops_the_usage_chunk_across_split_reads(self):
        h = UsageHider(get("openai"))
        wire = (b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
                b'data: {"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
                b'data: {"choices":[],"usage":{"completion_tokens":1}}\n\n'
                b'data: [DONE]\n\n')
        out = b"".join(h.feed(wire[i:i + 7]) for i in range(0, len(wire), 7)) + h.feed(b"")
        assert out == (b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
                       b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'
                       b'data: [DONE]\n\n')


class TestStartAndStop:
    def test_ctrl_c_cuts_a_request_that_outlives_the_drain_and_records_why(self, tmp_path):
        def make():
            return ollama_stub.make_app(load_s=0.0, token_delay_s=0.2)  # 60 tokens: 12 s

        with serve_in_thread(make) as up:
            with running_proxy(up, tmp_path, drain_s=0.3) as (url, proxy, opts):
                def ask():
                    with contextlib.suppress(Exception):  # the proxy cuts it: the client sees the connection end
                        for _ in ollama.Client(host=url, timeout=30).generate(model="ok", prompt="hi", stream=True,
                                                                              options={"num_predict": 60}):
                            pass

                t = threading.Thread(target=ask, daemon=True)
                t.start()
                for _ in range(100):
                    if [p for tp, p in recorded(opts) if tp == M.REQ_START]:
                        break
                    time.sleep(0.05)
            t.join(10)
        [e] = ends(opts)
        assert not e["ok"] and e["error"] == "the proxy stopped before the answer ended"
        [be] = [p for tp, p in recorded(opts) if tp == M.BATCH_END]
        assert be["requests"] == 1 and be["failed"] == 1

    def test_non_loopback_listen_needs_allow_remote(self, tmp_path):
        import subprocess
        import sys

        from tests.conftest import ROOT
        proc = subprocess.run([sys.executable, "-m", "collector.proxy", "--listen", "0.0.0.0:11435", "--upstream",
                               "http://127.0.0.1:9", "--out", str(tmp_path / "d"), "--no-telemetry"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and "--allow-remote" in proc.stderr
        assert not (tmp_path / "d").exists()
