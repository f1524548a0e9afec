"""The stub servers themselves answer like the real ones (so other suites can rely on them)."""
import json
import subprocess
import sys
import time
import urllib.request

import aiohttp
import pytest

from tests.conftest import ROOT, free_port
from tests.stubs import ollama_stub, openai_stub, serve

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)


@pytest.fixture
async def ollama():
    app = ollama_stub.make_app(load_s=0.0)
    async with serve(app) as url:
        yield url, app[ollama_stub.STATE]


async def test_metadata_endpoints(ollama):
    url, _ = ollama
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/") as r:
            assert r.status == 200 and await r.text() == "Ollama is running"
        async with s.get(url + "/api/version") as r:
            assert (await r.json())["version"]
        async with s.get(url + "/api/tags") as r:
            tags = await r.json()
        names = [m["name"] for m in tags["models"]]
        assert "ok:latest" in names and "missing:latest" not in names
        cloud = [m for m in tags["models"] if m.get("remote_host")]
        assert cloud and cloud[0]["name"] == ollama_stub.CLOUD_MODEL
        assert all("sha256:" not in m["digest"] for m in tags["models"])
        async with s.post(url + "/api/show", json={"model": "think"}) as r:
            show = await r.json()
        assert "thinking" in show["capabilities"] and "digest" not in show
        async with s.post(url + "/api/show", json={"name": "nope"}) as r:
            assert r.status == 404 and (await r.json())["error"] == "model 'nope' not found"


async def test_load_and_unload_with_empty_prompt(ollama):
    url, st = ollama
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/api/generate", json={"model": "ok"}) as r:
            body = await r.json()
        assert body["done_reason"] == "load" and "ok" in st.loaded
        async with s.get(url + "/api/ps") as r:
            assert [m["name"] for m in (await r.json())["models"]] == ["ok"]
        async with s.post(url + "/api/chat", json={"model": "ok", "messages": [], "keep_alive": 0}) as r:
            body = await r.json()
        assert body["done_reason"] == "unload" and body["message"]["content"] == "" and "ok" not in st.loaded


async def test_errors_are_json_with_real_status_and_text(ollama):
    url, _ = ollama
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/api/generate", json={"model": "busy", "prompt": "x"}) as r:
            assert r.status == 503 and r.content_type == "application/json"
            assert (await r.json())["error"] == "server busy, please try again.  maximum pending requests exceeded"
        async with s.post(url + "/api/generate", json={"model": "ok", "prompt": "x", "think": True}) as r:
            assert r.status == 400 and (await r.json())["error"] == '"ok" does not support thinking'


async def test_stream_is_ndjson_with_go_escapes(ollama):
    url, _ = ollama
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/api/generate", json={"model": "inline-think", "prompt": "x",
                                                        "options": {"num_predict": 2}}) as r:
            assert r.headers["Content-Type"] == "application/x-ndjson"
            raw = await r.read()
    assert b"<think>" not in raw and b"\\u003cthink\\u003e" in raw
    lines = [json.loads(x) for x in raw.splitlines()]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] > 0 and "context" in lines[-1]


async def test_openai_usage_only_when_asked():
    async with serve(openai_stub.make_app("vllm")) as url, aiohttp.ClientSession() as s:
        async with s.post(url + "/v1/chat/completions", json={"model": "ok", "messages": [], "stream": True}) as r:
            raw = await r.read()
    assert b'"usage"' not in raw and raw.rstrip().endswith(b"data: [DONE]")


def test_runnable_as_a_module():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.stubs.ollama_stub", "--port", str(port)], cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    assert r.read() == b"Ollama is running"
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait(10)


def test_serve_in_thread_for_synchronous_callers():
    from tests.stubs import serve_in_thread
    with serve_in_thread(lambda: ollama_stub.make_app(load_s=0.0)) as url:
        with urllib.request.urlopen(url + "/api/version", timeout=5) as r:
            assert json.loads(r.read())["version"]
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/api/version", timeout=2)
