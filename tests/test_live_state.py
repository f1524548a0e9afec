"""The live page's state (analyzer.live_state) and its server (analyzer.live_page) without a browser:
bounded memory over a long run, a late viewer gets the current state, a slow viewer loses updates
(counted) without slowing the others, and the listen rule of --serve."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from analyzer import cli
from analyzer.live_page import QUEUE_MAX, PageHub, PageServer
from analyzer.live_state import LiveState
from shared import messages as M

T0 = 1_000_000_000_000
WALL0 = 1_790_000_000_000_000_000


def _p(t_s: float, src: str = "telemetry@box", seq: int = 0, **body) -> dict:
    return {"v": 2, "src": src, "seq": seq, "t": T0 + int(t_s * 1e9), "wall": WALL0 + int(t_s * 1e9), **body}


def _row(rid: str, j: float, final: bool = False, model: str = "m") -> M.AnaRow:
    return M.AnaRow(rid=rid, batch="b", row={"rid": rid, "model": model, "task": "qa", "status": "ok",
                                             "gpu_energy_j": j, "output_tokens": 10, "total_energy_j": j + 1},
                    energy_ready=True, final=final)


def test_a_day_of_telemetry_and_requests_stays_bounded():
    st = LiveState(window_s=300, point_hz=4, max_rows=100)
    seq = 0
    for k in range(24 * 3600 // 6):  # a day at one sample per 6 s per source, one request a minute
        t = k * 6.0
        seq += 1
        st.on_message(M.TEL_GPU, _p(t, seq=seq, gpu=0, uuid="GPU-1", power_mw=100_000.0 + k, simulated=True))
        st.on_message(M.TEL_HOST, _p(t, seq=seq, cpu_pct=10.0))
        if k % 10 == 0:
            rid = f"r{k}"
            st.on_message(M.REQ_START, _p(t, src="collector@x", seq=k, rid=rid, model="m", task="qa"))
            st.on_message(M.REQ_END, _p(t + 1, src="collector@x", seq=k + 1, rid=rid, ok=True, text="x" * 10_000))
            st.on_row(_row(rid, 5.0))
    snap = st.snapshot(st.newest_wall_s)
    [gpu] = snap["gpus"]
    assert len(gpu["points"]) <= 300 / 6 + 2 and len(snap["cpu"][0]["points"]) <= 300 / 6 + 2
    assert len(snap["rows"]) == 100 and not st._answers and not st.in_flight
    assert all(len(r["answer"]) <= 301 for r in snap["rows"])  # answers cut for the page
    assert gpu["simulated"] and gpu["label"] == "box / GPU-1"
    [tot] = snap["totals"]
    assert tot["requests"] == "1440" and tot["gpu_energy_j"] == "7,200"  # totals keep counting past the rows kept


def test_final_row_replaces_the_early_one_in_the_totals():
    st = LiveState()
    st.on_message(M.BATCH_START, _p(0, src="collector@x", batch="b", planned=2))
    st.on_row(_row("a", 10.0))
    st.on_row(_row("a", 10.5, final=True))
    st.on_row(_row("b", 1.0, model="<b>m2</b>\x1b[31m"))
    snap = st.snapshot(0)
    assert [r["rid"] for r in snap["rows"]] == ["a", "b"] and snap["rows"][0]["final"]
    by_model = {t["model"]: t for t in snap["totals"]}
    assert by_model["m"]["gpu_energy_j"] == "10.5" and by_model["m"]["requests"] == "1"
    assert "<b>m2</b>\\x1b[31m" in by_model  # control characters visible, markup left as text for the page


def test_lost_telemetry_and_failed_requests_are_problems():
    st = LiveState()
    st.on_message(M.BATCH_START, _p(0, src="collector@x", batch="b", planned=1, missing_models=["gone:1b"]))
    for seq in (1, 2, 5):
        st.on_message(M.TEL_HOST, _p(seq, seq=seq, cpu_pct=1.0))
    st.on_message(M.REQ_START, _p(1, src="collector@x", seq=1, rid="r", model="m", task="qa"))
    st.on_message(M.REQ_END, _p(2, src="collector@x", seq=2, rid="r", ok=False, error="HTTP 500"))
    probs = st.snapshot(0)["problems"]
    assert any("gone:1b" in p for p in probs) and any("HTTP 500" in p for p in probs)
    assert any("2 telemetry message(s) lost" in p for p in probs)
    assert st.snapshot(0)["batch"]["failed"] == 1


async def _events(url: str, n: int, out: list, read_delay_s: float = 0.0, rows: int | None = None) -> None:
    """Read events until ``n`` arrived (or ``rows`` row events)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "events") as r:
            event = None
            while (len(out) < n) if rows is None else (sum(1 for e, _ in out if e == "row") < rows):
                line = (await r.content.readline()).decode()
                if line.startswith("event: "):
                    event = line[7:].strip()
                elif line.startswith("data: "):
                    out.append((event, json.loads(line[6:])))
                    if read_delay_s:
                        await asyncio.sleep(read_delay_s)


async def test_late_viewer_gets_current_state_and_a_slow_one_is_counted_not_waited_for():
    hub = PageHub(LiveState(), lang="en")
    server = PageServer(hub, "127.0.0.1", 0)
    url = await asyncio.to_thread(server.start)
    try:
        for i in range(5):
            await asyncio.to_thread(hub.on_row, _row(f"r{i}", float(i)))
        late: list = []
        await _events(url, 1, late)
        assert late[0][0] == "snapshot" and [r["rid"] for r in late[0][1]["rows"]] == [f"r{i}" for i in range(5)]

        # many plain viewers over HTTP while rows arrive: none loses an update
        streams = [[] for _ in range(20)]
        tasks = [asyncio.create_task(_events(url, 0, out, rows=200)) for out in streams]
        await asyncio.sleep(0.5)
        for i in range(200):
            await asyncio.to_thread(hub.on_row, _row(f"s{i}", 1.0))
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        for out in streams:
            assert [d["rid"] for e, d in out if e == "row"] == [f"s{i}" for i in range(200)]
        assert hub.dropped == 0
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_viewer_that_stops_reading_loses_updates_counted_and_others_none():
    """A viewer whose queue is full (its connection stalled) has updates dropped and counted, and is
    marked for a fresh snapshot; another viewer gets every update; the feeding side never waits."""
    from analyzer.live_page import _Viewer

    hub = PageHub(LiveState())
    hub.loop = asyncio.get_running_loop()
    stalled, reading = _Viewer(), _Viewer()
    hub.viewers |= {stalled, reading}
    got = []
    for i in range(QUEUE_MAX + 50):
        hub.on_row(_row(f"r{i}", 1.0))
        await asyncio.sleep(0)  # the fan-out runs on the server's loop
        while not reading.queue.empty():
            got.append(reading.queue.get_nowait())
    assert len(got) == QUEUE_MAX + 50 and reading.dropped == 0
    assert stalled.dropped == 50 and stalled.resync and hub.dropped == 50


async def test_page_is_self_contained_and_chinese_on_request():
    hub = PageHub(LiveState(), lang="zh")
    server = PageServer(hub, "127.0.0.1", 0)
    url = await asyncio.to_thread(server.start)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                html = await r.text()
                csp = r.headers["Content-Security-Policy"]
            async with s.get(url + "?lang=en") as r:
                en = await r.text()
    finally:
        await asyncio.to_thread(server.stop)
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert '<html lang="zh-CN"' in html and "实时：功率、请求与能耗" in html and "各模型累计" in html
    assert "Live: power, requests and energy" in en
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "<script src" not in html and "<link rel=\"stylesheet\"" not in html


@pytest.mark.parametrize("addr,ok", [("127.0.0.1:0", True), ("0.0.0.0:8765", False), ("[::1]:0", True)])
def test_serve_is_loopback_unless_allowed(addr, ok, capsys):
    rc = cli.main(["--live", "--serve", addr, "--exit-after-s", "0.2", "--telemetry-endpoint",
                   "tcp://127.0.0.1:1", "--events-endpoint", "tcp://127.0.0.1:2"])
    err = capsys.readouterr().err
    if ok:
        assert rc == 0, err
    else:
        assert rc == 2 and "--allow-remote" in err and "no authentication" in err


def test_serve_needs_live(capsys):
    assert cli.main(["--serve", "127.0.0.1:0", "--batch", "x"]) == 2
    assert "--live --serve" in capsys.readouterr().err


def test_an_answer_with_line_breaks_reads_as_words_not_backslash_n():
    """Observed with SmolLM2: "colors.\\n\\n2. White" was shown with literal \\n; the one-line excerpt
    now has spaces where the answer broke lines (controls and bidi stay visible escapes)."""
    st = LiveState()
    st.on_message(M.BATCH_START, _p(0, src="collector@x", batch="b", planned=1))
    st.on_message(M.REQ_START, _p(1, src="collector@x", seq=1, rid="r", model="m", task="qa"))
    st.on_message(M.REQ_END, _p(2, src="collector@x", seq=2, rid="r", ok=True,
                                text="1. Red.\n\n2. White.\r\n3.\tBlue \x1b[31m"))
    st.on_row(_row("r", 5.0))
    [row] = st.snapshot(0)["rows"]
    assert row["answer"] == "1. Red. 2. White. 3. Blue \\x1b[31m"


def test_requests_in_flight_show_tokens_so_far_from_progress_events():
    st = LiveState()
    st.on_message(M.REQ_START, _p(0, src="collector@x", seq=1, rid="r", model="m", task="qa"))
    [r] = st.snapshot(1)["in_flight"]
    assert r["tokens_so_far"] == "" and r["tokens_basis"] == ""  # nothing streamed yet: empty, not 0
    st.on_message(M.REQ_PROGRESS, _p(0.6, src="collector@x", seq=2, rid="r", attempt=0, chunks_so_far=9,
                                     tokens_so_far=8, tokens_basis="chunks", chars_so_far=30))
    st.on_message(M.REQ_PROGRESS, _p(1.1, src="collector@x", seq=3, rid="r", attempt=0, chunks_so_far=1500,
                                     tokens_so_far=1499, tokens_basis="chunks", chars_so_far=6000))
    st.on_message(M.REQ_PROGRESS, _p(1.2, src="collector@x", seq=4, rid="gone", tokens_so_far=5))  # never started
    [r] = st.tick(WALL0 / 1e9 + 1.5)["in_flight"]
    assert (r["rid"], r["tokens_so_far"], r["tokens_basis"], r["elapsed_s"]) == ("r", "1499", "chunks", "1.50")
    st.on_message(M.REQ_END, _p(2, src="collector@x", seq=5, rid="r", ok=True, text="x"))
    assert st.snapshot(2)["in_flight"] == []
