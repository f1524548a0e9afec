"""The live page in a real browser, fed by real processes: the simulated telemetry daemon
(``python -m telemetry --gpu sim``), ``python -m analyzer --live --serve`` and the collector's own
Recorder publishing a batch's events (and recording the batch, so a replay can be compared).

Headless Chromium is driven over the DevTools protocol (tests/cdp.py): it records every console
message, script error and network request. Twenty plain SSE clients read the same page's events
meanwhile. Checked: no console output, no request leaving the machine, the power figure moves, a
finished request appears with its energy before the batch ends, a hostile model name and answer are
text, no update is dropped, and at the end the rows the page shows equal a replay's results.csv."""
from __future__ import annotations

import asyncio
import base64
import csv
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from analyzer import tables
from analyzer.live_state import ROW_COLUMNS, cell
from collector.recorder import Recorder
from shared import messages as M
from shared.escape import terminal_text
from shared.recording import RecordingReader
from tests.cdp import Browser
from tests.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HOSTILE_MODEL = 'evil"><img src=x onerror="document.title=\'pwned\'">'
HOSTILE_ANSWER = ("<script>document.title='pwned'</script><img src=http://198.51.100.7/x.png "
                  "onerror=\"document.title='pwned'\"> \x1b[31mred\x1b[0m \u202eevil")
SSE_CLIENTS = 20


def _start(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace", **kw)


def _page_url(proc: subprocess.Popen, timeout_s: float = 60) -> str:
    """The URL the live analyzer prints ("live page: URL"); its other output keeps draining."""
    found: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            if line.startswith("live page: ") and not found:
                found.append(line.split(": ", 1)[1].strip())
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    assert ready.wait(timeout_s) and found, "the live analyzer never printed its page URL"
    return found[0]


async def _sse_client(url: str, out: list[tuple[str, dict]], stop: asyncio.Event) -> None:
    """A plain SSE reader (no browser): every event, in order."""
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "events", timeout=aiohttp.ClientTimeout(total=None)) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            event, data = None, None
            while not stop.is_set():
                try:
                    line = await asyncio.wait_for(r.content.readline(), 0.5)
                except asyncio.TimeoutError:
                    continue
                if not line:
                    break
                line = line.decode("utf-8").rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and event is not None:
                    out.append((event, json.loads(data)))
                    event = data = None


def _run_batch(rec: Recorder, batch: str, n: int) -> list[str]:
    """A small batch through the collector's Recorder: overlapping requests, one hostile model."""
    rec.emit(M.BatchStart(batch=batch, planned=n, backend="ollama", base_url="http://127.0.0.1:11434",
                          config={"runs": {"value": 1, "source": "default"}}), flush=True)
    rids = []
    for i in range(n):
        model = HOSTILE_MODEL if i == 1 else f"m{i % 2}"
        rid = f"{batch}/{i}"
        rids.append(rid)
        rec.emit(M.ReqStart(rid=rid, model=model, task="qa", load="short", run=1, case=0, prompt="q?"), flush=True)
        time.sleep(0.25)
        rec.emit(M.ReqFirstToken(rid=rid, kind="content", attempt=0), flush=True)
        # as the collector sends it while a stream lasts (≤ 2/s); the results must not change for it
        rec.emit(M.ReqProgress(rid=rid, attempt=0, chunks_so_far=12 + i, tokens_so_far=12 + i, tokens_basis="chunks",
                               chars_so_far=40), flush=True)
        time.sleep(1.5 if i == 0 else 0.5)  # the first long enough for the page to show its tokens so far
        rec.emit(M.ReqEnd(rid=rid, ok=True, text=HOSTILE_ANSWER if i == 1 else "Paris.",
                          api={"eval_count": 20 + i, "eval_duration_ns": 400_000_000},
                          client=M.ClientMetrics(latency_s=0.75, first_token_s=0.25, chunks=20 + i)), flush=True)
        time.sleep(0.6)
    return rids


async def test_live_page_in_chromium_with_twenty_sse_viewers(tmp_path, zctx):
    tel_ep, ev_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    out_root, rec_dir = tmp_path / "live", tmp_path / "replay"
    daemon = _start(["-m", "telemetry", "--gpu", "sim", "--endpoint", tel_ep, "--gpu-hz", "50", "--host-hz", "5",
                     "--clock-endpoint", "none", "--watch", "--server-port", "0", "--duration", "120"])
    live = _start(["-m", "analyzer", "--live", "--serve", "127.0.0.1:0", "--telemetry-endpoint", tel_ep,
                   "--events-endpoint", ev_ep, "--out-root", str(out_root), "--no-quality", "--no-plots",
                   "--grace-s", "0.5", "--exit-after-s", "110", "--report-lang", "en",
                   # the recorder joins the bus about a second before batch.start: with a shorter look-back
                   # the live analysis and the replay hold the same telemetry
                   "--lookback-s", "0.5"])
    rec = None
    try:
        url = _page_url(live)
        assert urlsplit(url).hostname == "127.0.0.1"
        stop = asyncio.Event()
        streams: list[list] = [[] for _ in range(SSE_CLIENTS)]
        clients = [asyncio.create_task(_sse_client(url, s, stop)) for s in streams]
        async with Browser(tmp_path) as browser:
            page = await browser.open(url)
            await page.wait_for("window.__live && window.__live.snapshots >= 1", 20, "the first snapshot")
            # the power figure moves while the daemon runs
            await page.wait_for("window.__live.state.gpus.length >= 1 && window.__live.state.gpus[0].points.length >= 3",
                                30, "power points of the simulated GPU")
            first = await page.eval("JSON.stringify(window.__live.state.gpus[0].points.slice(-1))")
            label = await page.eval("document.querySelector('#power .series-label').textContent")
            assert "SIMULATED" in label and "/" in label  # host / uuid, the simulated source labelled
            await page.wait_for(f"JSON.stringify(window.__live.state.gpus[0].points.slice(-1)) !== {json.dumps(first)}",
                                10, "a new power point")
            assert await page.eval("document.querySelectorAll('#power svg polyline').length") >= 1
            assert await page.eval("getComputedStyle(document.getElementById('sim')).display") == "block"
            ticks0 = await page.eval("window.__live.ticks")
            await asyncio.sleep(2.0)
            assert await page.eval("window.__live.ticks") - ticks0 >= 4  # at least two updates a second

            rec = Recorder(rec_dir / "raw" / "stream.msgpack", ev_ep, tel_ep, meta={"batch": "live-b"}, ctx=zctx,
                           clock_probe_s=None)
            rec.wait_heartbeat(20)
            await asyncio.sleep(1.0)  # the live analyzer's SUB has joined the events PUB
            batch_task = asyncio.get_running_loop().run_in_executor(None, _run_batch, rec, "live-b", 5)
            # a request in flight shows its tokens so far (from req.progress)
            await page.wait_for("(function(){var td=document.querySelector('#inflight td[data-col=tokens_so_far]');"
                                "return td && td.textContent === '12';})()", 20, "tokens so far of a request in flight")
            assert "tokens so far" in await page.eval("document.getElementById('inflight').textContent")
            # a finished request appears with its energy while the batch still runs
            await page.wait_for("(function(){var td=document.querySelector('#rows-table tr.early td[data-col=gpu_energy_j]');"
                                "return td && td.textContent.length > 0;})()", 30, "an early row with its energy")
            assert await page.eval("document.querySelectorAll('#inflight td, #rows-table tr').length") >= 1
            rids = await batch_task
            # the hostile model name and answer are shown as text: no element, no script, no load
            await page.wait_for("document.querySelectorAll('#rows-table tr[data-rid]').length === 5", 20, "5 rows")
            answer = await page.eval(f"document.querySelector('#rows-table tr[data-rid=\"live-b/1\"] "
                                     f"td[data-col=answer]').textContent")
            assert answer == terminal_text(HOSTILE_ANSWER)
            assert "\\x1b[31m" in answer and "\\u202e" in answer  # controls and bidi overrides visible
            model = await page.eval("document.querySelector('#rows-table tr[data-rid=\"live-b/1\"] "
                                    "td[data-col=model]').textContent")
            assert model == HOSTILE_MODEL
            assert await page.eval("document.querySelectorAll('img, iframe, object, embed').length") == 0
            assert await page.eval("document.title") != "pwned"

            rec.emit(M.BatchEnd(batch="live-b", requests=5, ok=5, failed=0, skipped=0), flush=True)
            await page.wait_for("document.querySelectorAll('#rows-table tr.final').length === 5", 60,
                                "the batch's final rows")
            shown = await page.eval("JSON.stringify(window.__live.rows)")
            await asyncio.sleep(1.0)  # the last events reach the plain clients too
            status = await (await browser.session.get(url + "state")).json()
            await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=1600, deviceScaleFactor=1,
                            mobile=False)
            shot = await page.call("Page.captureScreenshot")  # kept in tmp_path for a look
            (tmp_path / "live-page.png").write_bytes(base64.b64decode(shot["data"]))
            # the same page in Chinese (a viewer that connects late: the current state, not the history)
            zh = await browser.open(url + "?lang=zh")
            await zh.wait_for("window.__live && window.__live.snapshots >= 1 && "
                              "document.querySelectorAll('#rows-table tr.final').length === 5", 20, "the zh page")
            assert "实时" in await zh.eval("document.title")
            assert await zh.eval("document.querySelector('#rows-table td[data-col=row_state]').textContent") == "最终（批次）"
            console = list(page.console) + list(zh.console)
            errors = list(page.exceptions) + list(zh.exceptions)
            requests = list(page.requests) + list(zh.requests)
        stop.set()
        await asyncio.gather(*clients)
    finally:
        if rec is not None:
            rec.close()
        for p in (live, daemon):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # both stop cleanly on Ctrl-C
        for p in (live, daemon):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    assert console == [] and errors == [], (console, errors)
    origin = url.rstrip("/")
    assert requests and all(r.startswith(origin + "/") for r in requests), requests  # nothing leaves the machine

    # no update dropped for any viewer, and every plain client saw every row (early and final)
    assert status["status"]["dropped"] == 0
    for s in streams:
        row_events = [d for e, d in s if e == "row"]
        assert s[0][0] == "snapshot" and not [d for e, d in s if e == "viewer" and d["dropped"]]
        assert sorted({d["rid"] for d in row_events}) == sorted(rids)
        assert len(row_events) == 2 * len(rids)  # one early row and one final row each
        assert sum(1 for e, _ in s if e == "tick") >= 10
        early = {d["rid"]: d["values"] for d in row_events if not d["final"]}
        final = {d["rid"]: d["values"] for d in row_events if d["final"]}
        for rid in rids:  # the row at the request's end already had the batch's numbers
            assert early[rid] == pytest.approx(final[rid], rel=1e-9), rid

    # the rows the page shows equal a replay of the same recording
    r = subprocess.run([sys.executable, "-m", "analyzer", "--batch", str(rec_dir), "--no-quality", "--no-plots",
                        "--lookback-s", "0.5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert any(t == M.REQ_PROGRESS for t, _ in RecordingReader(rec_dir / "raw" / "stream.msgpack"))
    with open(rec_dir / "summary" / "results.csv", encoding="utf-8-sig") as f:
        replay = {row["rid"]: row for row in csv.DictReader(f)}
    shown = json.loads(shown)
    assert sorted(shown) == sorted(replay) == sorted(rids)
    for rid, row in shown.items():
        want = replay[rid]
        assert row["final"] and row["energy_ready"]
        for col in ROW_COLUMNS:
            raw = want[col]
            if col in row["values"]:  # numbers: the same value, shown the same way
                assert tables.cell(row["values"][col]) == raw, (rid, col)  # as results.csv writes it
                # as report.html shows it (results.csv writes 50.0 as 50: the float or the int)
                shown_as = {cell(float(raw))} | ({cell(int(raw))} if raw.lstrip("-").isdigit() else set())
                assert row["cells"][col] in shown_as, (rid, col)
            elif raw in ("", "true", "false"):
                assert row["cells"][col] == raw, (rid, col)
            else:
                assert row["cells"][col] == terminal_text(raw), (rid, col)
    # the live analyzer's own batch analysis wrote the same results.csv
    live_csv = (out_root / "live-b" / "summary" / "results.csv").read_bytes()
    assert live_csv == (rec_dir / "summary" / "results.csv").read_bytes()


async def test_collector_serve_starts_the_page_and_prints_its_url(tmp_path):
    """`python -m collector --serve 127.0.0.1:0`: a child live analyzer serves the batch's page; the
    collector prints the URL, the page shows the batch's rows while it runs, and the child writes no
    files (the collector's own analysis does)."""
    from tests.stubs import ollama_stub, serve
    from tests.test_collector_cli import SimTelemetry, collector_env

    tel_ep, ev_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    async with serve(ollama_stub.make_app(load_s=0.0, token_delay_s=0.03)) as llm:
        with SimTelemetry(tel_ep):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", "--out", str(tmp_path), "--models", "ok", "--tasks", "qa",
                "--loads", "short", "--langs", "en", "--runs", "3", "--max_tokens", "16", "--no-warmup",
                "--base-url", llm.removeprefix("http://"), "--telemetry-endpoint", tel_ep, "--events-endpoint", ev_ep,
                "--no-progress", "--analyzer-args", "--no-quality --no-plots", "--serve", "127.0.0.1:0",
                cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=collector_env())
            url, lines, states = None, [], []
            try:
                async with aiohttp.ClientSession() as s:
                    while True:
                        line = await asyncio.wait_for(proc.stderr.readline(), 120)
                        if not line:
                            break
                        text_line = line.decode("utf-8", "replace")
                        lines.append(text_line)
                        if text_line.startswith("live page: ") and url is None:
                            url = text_line.split()[2]
                        if url is not None and ("request_done" in text_line or "batch_end" in text_line):
                            async with s.get(url + "state") as r:
                                states.append(await r.json())
                rc = await asyncio.wait_for(proc.wait(), 120)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    log = "".join(lines)
    assert rc == 0, log[-3000:]
    assert url is not None and urlsplit(url).hostname == "127.0.0.1", log[-3000:]
    assert states and any(st["batch"].get("planned") == 3 for st in states), states[-1:]
    last = states[-1]
    assert last["gpus"] and last["gpus"][0]["simulated"]
    [batch_dir] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (batch_dir / "summary" / "results.csv").is_file()  # the collector's own analysis
    # the page went away with the collector
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorError):
            await s.get(url + "state")


async def test_table_cells_wrap_between_words_never_inside_one(tmp_path):
    """Column headers, model names and numbers stay whole words: a narrow column may wrap at spaces
    and hyphens but never shows "statu|s", "J/toke|n" or "1,14|1" (only a word longer than a cell's max width may
    break)."""
    from analyzer.live_page import PageHub, PageServer
    from analyzer.live_state import LiveState

    hub = PageHub(LiveState(), lang="en")
    server = PageServer(hub, "127.0.0.1", 0)
    url = await asyncio.to_thread(server.start)
    try:
        row = {"rid": "r1", "model": "smollm2-135m-instruct", "task": "summary", "status": "ok",
               "gpu_energy_j": 1141.25, "total_energy_j": 1437.5, "output_tokens": 7, "j_per_token": 163.0,
               "ttft_ms": 4080.0, "toks_per_s": 14.1, "gpu_simulated": True}
        await asyncio.to_thread(hub.on_row, M.AnaRow(rid="r1", batch="b", row=row, energy_ready=True))
        async with Browser(tmp_path) as browser:
            page = await browser.open(url)
            await page.call("Emulation.setDeviceMetricsOverride", width=1000, height=900, deviceScaleFactor=1,
                            mobile=False)
            await page.wait_for("document.querySelectorAll('#rows-table td').length > 0", 20, "the row")
            # every word of every header and cell is laid out on one line (one client rect per word)
            split = await page.eval("""(function(){var out=[];
              document.querySelectorAll('table.data th, table.data td').forEach(function(c){
                var t=c.firstChild; if(!t||t.nodeType!==3) return; var s=t.data, re=/[^\\s-]+/g, m;
                while((m=re.exec(s))){ if(m[0].length>30) continue; var r=document.createRange();
                  r.setStart(t,m.index); r.setEnd(t,m.index+m[0].length);
                  var tops={}; Array.prototype.forEach.call(r.getClientRects(),function(q){tops[Math.round(q.top)]=1;});
                  if(Object.keys(tops).length>1) out.push(m[0]); }});
              return JSON.stringify(out);})()""")
            assert json.loads(split) == []
    finally:
        await asyncio.to_thread(server.stop)


async def test_proxy_batch_page_reads_plainly_in_chinese(tmp_path):
    """A proxy's batch (no planned total) in Chinese: progress says "已完成 1", not "1 / ?"; the
    simulated column shows the page's word, not raw "true"; the total-energy column says it adds the
    CPU; the power axis has round ticks (0 / 100 / 200 / 300 for a 275 W peak)."""
    from analyzer.live_page import PageHub, PageServer
    from analyzer.live_state import LiveState

    hub = PageHub(LiveState(), lang="zh")
    server = PageServer(hub, "127.0.0.1", 0)
    url = await asyncio.to_thread(server.start)
    try:
        t0 = time.time_ns()
        hub.on_message(M.BATCH_START, {"batch": "proxy-1", "wall": t0}, 0.0)
        for i in range(12):  # 3 s of power, up to 275 W
            hub.on_message(M.TEL_GPU, {"src": "h1/telemetry", "uuid": "GPU-0", "power_mw": 68_800 + i * 18_800,
                                       "simulated": True, "wall": t0 + i * 250_000_000}, 0.0)
        hub.on_message(M.REQ_START, {"rid": "r1", "model": "m", "task": "proxy", "wall": t0}, 0.0)
        hub.on_message(M.REQ_END, {"rid": "r1", "ok": True, "text": "hi", "wall": t0 + 10**9}, 0.0)
        row = {"rid": "r1", "model": "m", "task": "proxy", "status": "ok", "gpu_energy_j": 12.5,
               "total_energy_j": 14.0, "output_tokens": 3, "gpu_simulated": True}
        await asyncio.to_thread(hub.on_row, M.AnaRow(rid="r1", batch="proxy-1", row=row, energy_ready=True))
        async with Browser(tmp_path) as browser:
            page = await browser.open(url)
            await page.wait_for("document.querySelectorAll('#rows-table td').length > 0 && "
                                "document.querySelectorAll('#power .ytick').length > 0", 20, "the row and the plot")
            progress = await page.eval("document.getElementById('progress').textContent")
            assert "已完成 1（" in progress and "?" not in progress, progress
            assert await page.eval("document.querySelector('#rows-table td[data-col=gpu_simulated]').textContent") == "模拟"
            heads = json.loads(await page.eval(
                "JSON.stringify(Array.from(document.querySelectorAll('#rows-table th')).map(function(t){return t.textContent;}))"))
            assert "总能耗 J（GPU + CPU）" in heads and "GPU 能耗 J" in heads, heads
            ticks = json.loads(await page.eval(
                "JSON.stringify(Array.from(document.querySelectorAll('#power .ytick')).map(function(t){return t.textContent;}))"))
            assert ticks == ["0", "100", "200", "300"], ticks
            cpu_ticks = json.loads(await page.eval(
                "JSON.stringify(Array.from(document.querySelectorAll('#cpu .ytick')).map(function(t){return t.textContent;}))"))
            assert cpu_ticks == ["0", "25", "50", "75", "100"]  # the CPU figure's fixed 0-100 % axis
            assert page.exceptions == [] and page.console == []
    finally:
        await asyncio.to_thread(server.stop)
