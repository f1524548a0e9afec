"""End to end on a real model: llama.cpp's OpenAI-compatible server (xllamacpp) serving
SmolLM2-135M-Instruct on the CPU, driven by ``python -m collector --backend openai``.
Kept to two short requests (max_tokens 16)."""
import asyncio
import json
import sys

import pytest

from collector.batch_run import run_analyzer
from shared import messages as M
from shared.recording import read_recording
from tests.conftest import ROOT
from tests.fault_helpers import procs  # noqa: F401  (fixture)
from tests.test_collector_cli import collector_env

pytest.importorskip("xllamacpp", reason="the demo extra (xllamacpp) is part of `make install`")
from demo.llm_server import MODEL_ALIAS, find_gguf, running_server  # noqa: E402

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)


@pytest.fixture(scope="module")
def llm_url():
    with running_server(ctx=1024, threads=2) as url:
        yield url


def test_gguf_is_found_inside_the_package():
    gguf = find_gguf()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 10_000_000


async def test_collector_openai_path_on_a_real_model(llm_url, tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "--backend", "openai", "--base-url", llm_url, "--models", MODEL_ALIAS,
        "--tasks", "qa", "--loads", "short", "--langs", "en", "zh", "--max_tokens", "16", "--seed", "1",
        "--temperature", "0", "--out", str(tmp_path), "--no-telemetry", "--no-analyze", "--no-progress",
        "--timeout", "120", cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=collector_env())
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = (out + err).decode("utf-8", errors="replace")
    assert proc.returncode == 0, log
    [batch] = list(tmp_path.iterdir())
    _, items, problem = read_recording(batch / "raw" / "stream.msgpack")
    assert problem is None
    ends = [p for t, p in items if t == "req.end"]
    starts = {p["rid"]: p for t, p in items if t == "req.start"}
    assert len(ends) == 2
    for e in ends:
        assert e["ok"], e.get("error")
        assert e["text"].strip()
        api = e["api"]
        assert 0 < api["completion_tokens"] <= 16 and api["prompt_tokens"] > 0
        assert api["timings"]["predicted_n"] == api["completion_tokens"] and api["timings"]["predicted_ms"] > 0
        assert "eval_count" not in api  # llama.cpp's figures keep their own names
        assert api["done_reason"] in ("stop", "length")
        M.validate("req.end", e, strict=True)
        c = e["client"]
        assert len(c["chunk_t_ns"]) == c["chunks"] and 0 <= c["attempt_s"] < 0.5  # no retry: sent at once
        assert 0 < c["first_chunk_s"] <= c["first_token_s"] < c["latency_s"]
        # the server's own generation time fits inside what the client measured
        assert api["timings"]["predicted_ms"] / 1e3 <= c["latency_s"]
        assert starts[e["rid"]]["params"]["max_tokens"] == 16
    [bs] = [p for t, p in items if t == "batch.start"]
    assert bs["backend"] == "openai" and MODEL_ALIAS in bs["models"]
    assert bs["models"][MODEL_ALIAS].get("context_length", 1) > 0
    assert not list((batch / "raw").glob("*.json"))  # raw/<rid>.json is the analyzer's to write
    assert run_analyzer(batch, ["--no-quality", "--no-plots", "--no-progress"])
    raw = json.loads(next((batch / "raw").glob("*.json")).read_text(encoding="utf-8"))
    assert raw["throughput_tokens_per_sec"] > 0


def test_proxy_in_front_of_the_real_model_with_the_openai_client(llm_url, tmp_path, procs):
    """The official openai client through the measuring proxy to the real SmolLM2 server gets what
    it gets directly (greedy decoding: the same text and finish reason; usage only when asked),
    and every request is recorded and analysed into a row with its energy (simulated GPU)."""
    import openai

    from collector.proxy_flow import RID_HEADER
    from shared.recording import RecordingReader
    from tests.fault_helpers import loopback, read_csv
    from tests.proxy_helpers import running_proxy

    tel = loopback()
    procs.start("telemetry", "--gpu", "sim", "--endpoint", tel, "--gpu-hz", "50", "--host-hz", "5", "--no-rapl",
                "--duration", "300")

    msgs = [{"role": "user", "content": "Name one colour."}]
    kw = {"model": MODEL_ALIAS, "messages": msgs, "max_tokens": 12, "temperature": 0, "seed": 1}
    direct = openai.OpenAI(base_url=llm_url + "/v1", api_key="x", max_retries=0)
    with running_proxy(llm_url, tmp_path, telemetry_endpoint=tel, telemetry_wait_s=30, live_analyzer=False,
                       analysis_endpoint=loopback()) as (url, proxy, opts):
        via = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        d = direct.chat.completions.create(**kw)
        raw = via.chat.completions.with_raw_response.create(**kw)
        v = raw.parse()
        assert raw.headers[RID_HEADER]
        assert (v.choices[0].message.content, v.choices[0].finish_reason, v.usage.completion_tokens) == \
            (d.choices[0].message.content, d.choices[0].finish_reason, d.usage.completion_tokens)
        chunks = list(via.chat.completions.create(stream=True, **kw))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == d.choices[0].message.content
        assert all(c.usage is None for c in chunks)  # not asked: not given, although the proxy asked for it
    ends = [p for t, p in RecordingReader(opts.batch.stream) if t == M.REQ_END]
    assert len(ends) == 2 and all(e["ok"] for e in ends)
    assert [e["api"]["completion_tokens"] for e in ends] == [d.usage.completion_tokens] * 2
    assert run_analyzer(opts.batch.root, ["--no-quality", "--no-plots", "--no-progress"])
    rows = read_csv(opts.batch.summary / "results.csv")
    assert len(rows) == 2 and all(r["status"] == "ok" and r["task"] == "proxy" for r in rows)
    assert {r["toks_per_s_method"] for r in rows} == {"timings.predicted_n/predicted_ms"}
    assert all(float(r["gpu_energy_j"]) > 0 and r["gpu_simulated"] == "true" for r in rows)
