"""The measuring proxy as a process, with the telemetry daemon's SIMULATED GPU: 8 concurrent
streaming clients (the official ``ollama`` client), Ctrl-C, the analyzer's rows with energy conserved;
and the row lookup fed by ``ana.row`` messages from a test publisher on a real loopback bus."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import time
import urllib.request

import numpy as np
import ollama
import pytest

from shared.bus import Publisher, bind_pub
from shared.messages import REQ_END, REQ_START, TEL_GPU, BATCH_END
from tests.fault_helpers import http_ok, loopback, procs, read_csv, recorded, start_ollama_stub, wait_for  # noqa: F401
from tests.conftest import free_port

pytestmark = pytest.mark.slow  # starts processes (stub, daemon, proxy, analyzer)


def start_daemon(procs, endpoint: str):
    return procs.start("telemetry", "--gpu", "sim", "--endpoint", endpoint, "--gpu-hz", "50", "--host-hz", "5",
                       "--no-rapl", "--duration", "120")


def get_json(url: str) -> tuple[int, dict]:
    import urllib.error
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_eight_concurrent_streams_ctrl_c_energy_conserved(procs, tmp_path):
    up = start_ollama_stub(procs, token_delay_s=0.03)
    tel = loopback()
    start_daemon(procs, tel)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "data"
    proxy = procs.start("collector.proxy", "--listen", f"127.0.0.1:{port}", "--upstream", up, "--out", str(out),
                        "--telemetry-endpoint", tel, "--telemetry-wait", "30", "--events-endpoint", loopback(),
                        "--no-live-analyzer", "--analysis-endpoint", loopback(), "--row-wait-s", "1",
                        "--analyzer-args", "--no-quality --no-plots --no-progress")
    wait_for(lambda: http_ok(url + "/api/version") or proxy.poll() is not None, 60, "the proxy to answer")
    assert proxy.poll() is None, procs.output(proxy)

    async def one(i: int) -> str:
        client = ollama.AsyncClient(host=url, headers={"X-GenAI-Power-Tag": f"user{i % 2}"})
        parts = [c.message.content async for c in await client.chat(
            model="ok", messages=[{"role": "user", "content": f"q{i}"}], stream=True, options={"num_predict": 20})]
        return "".join(parts)

    async def all8() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    texts = asyncio.run(all8())
    assert len(set(texts)) == 1 and texts[0].startswith("The answer is 42.")
    [batch] = list(out.iterdir())
    assert batch.name.startswith("proxy_1_")
    rid = next(p["rid"] for t, p in recorded(batch / "raw" / "stream.msgpack") if t == REQ_START)
    # no live analyzer publishes: the lookup waits (202), then answers without energy, saying why
    from collector.proxy_flow import rid_header
    status, body = get_json(url + "/_genai_power/requests/" + rid_header(rid))
    assert status in (200, 202)
    time.sleep(1.2)
    status, body = get_json(url + "/_genai_power/requests/" + rid_header(rid))
    assert status == 200 and body["energy_ready"] is False and "no analysed row" in body["reason"]
    assert body["row"]["output_tokens"] == 20
    proxy.send_signal(signal.SIGINT)  # Ctrl-C: batch.end, the analyzer, where the report is
    assert proxy.wait(120) == 0, procs.output(proxy)
    err = procs.stderr(proxy)
    assert f"report: {batch / 'summary' / 'report.html'}" in err and (batch / "summary" / "report.html").exists()
    items = recorded(batch / "raw" / "stream.msgpack")
    [be] = [p for t, p in items if t == BATCH_END]
    assert be["requests"] == be["ok"] == 8
    rows = read_csv(batch / "summary" / "results.csv")
    assert len(rows) == 8 and all(r["status"] == "ok" and r["task"] == "proxy" for r in rows)
    assert {r["load"] for r in rows} == {"user0", "user1"}
    energies = [float(r["gpu_energy_j"]) for r in rows]
    assert all(e > 0 for e in energies)
    assert max(int(r["concurrency_max"]) for r in rows) >= 4  # they really overlapped
    # conserved: the requests' shares add up to the counter's increase over the union of their windows
    starts = sorted(p["t"] for t, p in items if t == REQ_START)
    stops = sorted(p["t"] for t, p in items if t == REQ_END)
    windows = sorted(zip([p["t"] for t, p in items if t == REQ_START], [p["t"] for t, p in items if t == REQ_END]))
    assert all(a < max(b for _, b in windows[:i + 1]) for i, (a, _) in enumerate(windows[1:], 0)), "one union"
    gpu = [(p["t"], p["energy_mj"]) for t, p in items if t == TEL_GPU and p.get("energy_mj") is not None]
    ts, mj = np.array([g[0] for g in gpu], float), np.array([g[1] for g in gpu], float)
    total_j = (np.interp(stops[-1], ts, mj) - np.interp(starts[0], ts, mj)) / 1000.0
    assert sum(energies) == pytest.approx(total_j, rel=0.03)


def test_lookup_serves_the_live_analyzers_row(procs, tmp_path, zctx):
    """202 until the row is published on ana.row, then that row (energy) merged with the proxy's own."""
    from tests.stubs import ollama_stub, serve_in_thread
    from tests.proxy_helpers import running_proxy
    import aiohttp

    tel = loopback()
    start_daemon(procs, tel)
    ana = loopback()
    pub = Publisher(bind_pub(zctx, ana), "analyzer@test")
    with serve_in_thread(lambda: ollama_stub.make_app(load_s=0.0)) as up, \
            running_proxy(up, tmp_path, telemetry_endpoint=tel, telemetry_wait_s=30, live_analyzer=False,
                          analysis_endpoint=ana, row_wait_s=60) as (url, proxy, opts):

        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.post(url + "/v1/chat/completions", json={
                        "model": "ok", "messages": [{"role": "user", "content": "hi"}], "stream": True}) as r:
                    assert r.status == 404  # the Ollama stub has no /v1: status and body pass through
                    rid = r.headers["X-GenAI-Power-Request-Id"]
                async with s.post(url + "/api/generate", json={"model": "ok", "prompt": "hi"}) as r:
                    await r.read()
                    rid = r.headers["X-GenAI-Power-Request-Id"]
                async with s.get(url + "/_genai_power/requests/" + rid) as lk:
                    first = (lk.status, await lk.json())
                async with s.get(url + "/_genai_power/requests/nope") as lk:
                    missing = lk.status
                from collector.proxy_flow import rid_from_path
                real = rid_from_path(rid)
                for _ in range(100):  # a SUB joins late: publish until it is seen
                    pub.publish("ana.row", {"rid": real, "batch": opts.batch.root.name, "energy_ready": True,
                                            "row": {"gpu_energy_j": 1.5, "j_per_token": 0.125, "output_tokens": 11}})
                    async with s.get(url + "/_genai_power/requests/" + rid) as lk:
                        if lk.status == 200:
                            return first, missing, await lk.json()
                    await asyncio.sleep(0.05)
                raise AssertionError("the published row never reached the lookup")

        first, missing, body = asyncio.run(go())
    assert first[0] == 202 and first[1]["status"].startswith("waiting for the telemetry")
    assert missing == 404
    assert body["energy_ready"] is True and body["row"]["gpu_energy_j"] == 1.5
    assert body["row"]["ttft_ms"] > 0 and body["row"]["model"] == "ok"  # the proxy's own columns too


@pytest.mark.skipif(importlib.util.find_spec("analyzer.live_rows") is None,
                    reason="needs analyzer --live --publish-endpoint (ana.row), which lands with issue 18's live rows")
def test_rows_with_energy_from_the_live_analyzer_it_starts(procs, tmp_path):
    """The proxy's own `analyzer --live` child finishes each request once the telemetry after its end
    arrived: the lookup turns from 202 to the row with energy, as the batch analysis at Ctrl-C has it."""
    up = start_ollama_stub(procs, token_delay_s=0.01)
    tel = loopback()
    start_daemon(procs, tel)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "data"
    proxy = procs.start("collector.proxy", "--listen", f"127.0.0.1:{port}", "--upstream", up, "--out", str(out),
                        "--telemetry-endpoint", tel, "--telemetry-wait", "30", "--events-endpoint", loopback(),
                        "--analysis-endpoint", loopback(), "--analyzer-args", "--no-quality --no-plots --no-progress",
                        "--serve", "127.0.0.1:0")
    wait_for(lambda: http_ok(url + "/api/version") or proxy.poll() is not None, 90, "the proxy to answer")
    assert proxy.poll() is None, procs.output(proxy)
    rids = []
    for i in range(2):
        req = urllib.request.Request(url + "/api/generate", data=json.dumps(
            {"model": "ok", "prompt": f"hi {i}", "stream": False, "options": {"num_predict": 10}}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.loads(resp.read())["done"] is True
            rids.append(resp.headers["X-GenAI-Power-Request-Id"])
    bodies = {}
    deadline = time.monotonic() + 60
    while len(bodies) < 2 and time.monotonic() < deadline:
        for rid in rids:
            status, body = get_json(url + "/_genai_power/requests/" + rid)
            if status == 200:
                bodies[rid] = body
        time.sleep(0.2)
    assert len(bodies) == 2, procs.output(proxy)
    for body in bodies.values():
        assert body["energy_ready"] is True, body
        assert body["row"]["gpu_energy_j"] > 0 and body["row"]["output_tokens"] == 10
    # --serve: the live analyzer's page, its URL printed by the proxy in its banner (on stderr, after the
    # "measuring proxy on" line, as `python -m collector --serve` prints it), shows the same rows
    err = procs.stderr(proxy).splitlines()
    assert not [line for line in procs.stdout(proxy).splitlines() if line.startswith("live page: ")]
    at = [i for i, line in enumerate(err) if line.startswith("live page: ")]
    assert len(at) == 1 and at[0] > next(i for i, line in enumerate(err) if line.startswith("measuring proxy on")), err
    assert err[at[0]].endswith("(stops when the proxy exits)")
    page = err[at[0]].split()[2]
    status, state = get_json(page + "state")
    from collector.proxy_flow import rid_from_path as _rid
    shown = {r["rid"]: r for r in state["rows"]}
    assert status == 200 and sorted(shown) == sorted(_rid(r) for r in rids), state
    for rid, body in bodies.items():
        assert shown[_rid(rid)]["values"]["gpu_energy_j"] == body["row"]["gpu_energy_j"]
    proxy.send_signal(signal.SIGINT)
    assert proxy.wait(120) == 0, procs.output(proxy)
    [batch] = list(out.iterdir())
    rows = {r["rid"]: r for r in read_csv(batch / "summary" / "results.csv")}
    from collector.proxy_flow import rid_from_path
    for rid, body in bodies.items():
        final = rows[rid_from_path(rid)]
        assert float(final["gpu_energy_j"]) == pytest.approx(body["row"]["gpu_energy_j"], rel=0.05)
