"""Batch-level behaviour: the recorder thread, OOM values kept per model, the server going away
mid-batch, SIGTERM, and the analyzer hand-off."""
import asyncio
import csv
import signal
import sys
import time
from collections import Counter

import pytest
from structlog.testing import capture_logs

from collector.batch_run import run_analyzer
from collector.recorder import Recorder, TelemetryTimeout
from shared.bus import Inbox, Publisher, bind_pub, connect_sub
from shared.messages import ReqStart
from shared.recording import RecordingReader, read_recording
from tests.conftest import ROOT, free_port
from tests.stubs import ollama_stub, openai_stub, serve
from tests.test_collector_cli import by_topic, collector_env, run_collector

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)


class TestRecorder:
    def test_records_telemetry_and_own_events_and_publishes(self, zctx, tmp_path):
        tel_ep, ev_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        pub = Publisher(bind_pub(zctx, tel_ep), "telemetry@t")
        sub = connect_sub(zctx, ev_ep)
        rec = Recorder(tmp_path / "raw" / "stream.msgpack", ev_ep, tel_ep, meta={"batch": "b"}, ctx=zctx)
        try:
            deadline = time.monotonic() + 5
            while not rec.heartbeat.is_set() and time.monotonic() < deadline:
                pub.publish("tel.hb", {"gpus": 0})
                pub.publish("tel.gpu", {"gpu": 0, "power_mw": 1})
                time.sleep(0.02)
            rec.wait_heartbeat(0.1)
            got = None
            deadline = time.monotonic() + 5
            while got is None and time.monotonic() < deadline:  # slow joiner: repeat until one arrives
                rec.emit(ReqStart(rid="b/m/000-qa/short/1"))
                got = Inbox().recv(sub, timeout_ms=50)
            assert got is not None and got[0] == "req.start" and got[1]["src"].startswith("collector@")
        finally:
            rec.close()
            sub.close(linger=0)
            pub.sock.close(linger=0)
        header, items, problem = read_recording(tmp_path / "raw" / "stream.msgpack")
        topics = by_topic(items)
        assert header["batch"] == "b" and problem is None
        assert topics["tel.hb"] and topics["tel.gpu"] and topics["req.start"]
        seqs = [p["seq"] for p in topics["req.start"]]
        assert seqs == list(range(len(seqs)))

    def test_missing_heartbeat_names_the_fix(self, zctx, tmp_path):
        rec = Recorder(tmp_path / "s.msgpack", None, f"tcp://127.0.0.1:{free_port()}", ctx=zctx)
        try:
            with pytest.raises(TelemetryTimeout, match="python -m telemetry.*--no-telemetry"):
                rec.wait_heartbeat(0.2)
        finally:
            rec.close()


async def test_oom_degraded_values_kept_for_the_model(tmp_path):
    app = ollama_stub.make_app(load_s=0.0)
    async with serve(app) as url:
        rc, log = await run_collector("--out", str(tmp_path), "--models", "oom-load", "--tasks", "qa", "--loads",
                                      "short", "--langs", "en", "--runs", "3", "--num-ctx", "4096", "--max-tokens",
                                      "8", "--base-url", url, "--no-telemetry", "--no-analyze", "--no-progress")
    assert rc == 0, log
    [batch] = list(tmp_path.iterdir())
    _, items, _ = read_recording(batch / "raw" / "stream.msgpack")
    topics = by_topic(items)
    starts, ends = topics["req.start"], topics["req.end"]
    assert [s["params"]["num_ctx"] for s in starts] == [4096, 1024, 1024]
    assert ends[0]["client"]["degraded"] == {"num_ctx": 1024} and ends[0]["params"]["num_ctx"] == 1024
    assert [e["client"]["retries"] for e in ends] == [2, 0, 0] and all(e["ok"] for e in ends)


def _hold_after_answers(app, answers: int) -> tuple[asyncio.Event, asyncio.Event]:
    """The stub answers ``answers`` generation requests; the next ones wait until ``release`` is set.
    Returns ``(held, release)``: ``held`` is set once a request waits (the client is then past those
    answers), so a stop "after the first requests" lands there however slow the machine, not after the last."""
    from aiohttp import web

    held, release, answered = asyncio.Event(), asyncio.Event(), []

    @web.middleware
    async def gate(request, handler):
        if request.path not in ("/api/generate", "/api/chat"):
            return await handler(request)
        if len(answered) >= answers and not release.is_set():
            held.set()
            await release.wait()
        response = await handler(request)
        answered.append(request.path)
        return response

    app.middlewares.append(gate)
    return held, release


async def test_server_going_away_stops_the_batch_and_keeps_what_finished(tmp_path):
    app = ollama_stub.make_app(load_s=0.0, token_delay_s=0.02)
    held, release = _hold_after_answers(app, 2)
    stream = tmp_path / "b" / "raw" / "stream.msgpack"
    (tmp_path / "b").mkdir()
    cm = serve(app)
    url = await cm.__aenter__()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "--exp-dir", str(tmp_path / "b"), "--models", "ok", "--tasks", "qa",
        "--loads", "short", "--langs", "en", "--runs", "20", "--max-tokens", "5", "--keepalive", "5m",
        "--base-url", url, "--no-telemetry", "--no-analyze", "--no-progress", cwd=str(ROOT),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=collector_env())
    stopped = False
    try:
        await asyncio.wait_for(held.wait(), 120)  # two answered, the third waits at the server
        deadline = time.monotonic() + 60
        while not (stream.exists() and sum(1 for t, _ in RecordingReader(stream) if t == "req.end") >= 2):
            assert time.monotonic() < deadline, "the first two requests' req.end were never recorded"
            await asyncio.sleep(0.05)
        await cm.__aexit__(None, None, None)  # the server goes away mid-batch
        stopped = True
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        release.set()
        if not stopped:
            await cm.__aexit__(None, None, None)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = err.decode("utf-8", errors="replace")
    assert proc.returncode == 3, log
    assert "Is the server running" in log
    _, items, problem = read_recording(stream)
    topics = by_topic(items)
    ok = [e for e in topics["req.end"] if e["ok"]]
    assert problem is None and len(ok) >= 2
    assert any(e.get("error_kind") in ("connection", "truncated") for e in topics["req.end"])
    [be] = topics["batch.end"]
    assert be["interrupted"] is True and be["skipped"] > 0 and be["ok"] == len(ok)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM handling is POSIX-only (Ctrl-C works everywhere)")
async def test_sigterm_ends_the_batch_cleanly(tmp_path):
    app = ollama_stub.make_app(load_s=0.0)
    stream = tmp_path / "b" / "raw" / "stream.msgpack"
    (tmp_path / "b").mkdir()
    async with serve(app) as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", "--exp-dir", str(tmp_path / "b"), "--models", "hang", "--tasks", "qa",
            "--loads", "short", "--langs", "en", "--base-url", url, "--no-telemetry", "--no-analyze",
            "--no-progress", cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            env=collector_env())
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if stream.exists() and any(t == "req.start" for t, _ in RecordingReader(stream)):
                    break
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert rc == 130
    _, items, problem = read_recording(stream)
    [be] = by_topic(items)["batch.end"]
    assert problem is None and be["interrupted"] is True


def test_analyzer_failure_is_a_warning_with_the_command(tmp_path):
    missing = tmp_path / "no_such_batch"
    with capture_logs() as logs:
        assert run_analyzer(missing) is False
    warn = [e for e in logs if e["event"] == "analyzer_failed"]
    assert warn and warn[0]["log_level"] == "warning"
    assert warn[0]["run_later"] == f"python -m analyzer --batch {missing}"


async def test_resume_refuses_flags_that_contradict_the_saved_settings(tmp_path):
    app = ollama_stub.make_app(load_s=0.0)
    async with serve(app) as url:
        (tmp_path / "b").mkdir()
        base = ["--exp-dir", str(tmp_path / "b"), "--models", "ok", "--loads", "short", "--langs", "en",
                "--max-tokens", "4", "--base-url", url, "--no-telemetry", "--no-analyze", "--no-progress"]
        rc, log = await run_collector(*base, "--tasks", "qa")
        assert rc == 0, log
        rc, log = await run_collector(*base, "--tasks", "qa")
        assert rc == 1 and "--resume" in log  # an existing recording is never overwritten
        rc, log = await run_collector(*base, "--tasks", "code", "--resume")
        assert rc == 1 and "--tasks code (this batch was started with qa)" in log
        rc, log = await run_collector(*base, "--tasks", "qa", "--resume", "--max-tokens", "9")
        assert rc == 1 and "--max-tokens 9 (this batch was started with 4)" in log
        rc, log = await run_collector(*base, "--tasks", "qa", "--resume")  # the same flags: fine
        assert rc == 0, log
    _, items, _ = read_recording(tmp_path / "b" / "raw" / "stream.msgpack")
    topics = by_topic(items)
    assert len(topics["req.end"]) == 1 and len(topics["batch.start"]) == 2
    assert topics["batch.end"][-1]["requests"] == 0


async def test_resume_continues_with_the_batch_own_settings_even_renamed(tmp_path):
    """Observed: a --runs 3 batch resumed without --runs finished with runs 2-3 never done; a renamed
    batch re-ran everything. Now: interrupted, renamed, resumed with only --exp-dir and --resume."""
    app = ollama_stub.make_app(load_s=0.0, token_delay_s=0.05)
    held, release = _hold_after_answers(app, 1)
    async with serve(app) as url:
        first = tmp_path / "first"
        first.mkdir()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", "--exp-dir", str(first), "--models", "ok", "--tasks", "qa",
            "--loads", "short", "--langs", "en", "--runs", "3", "--max-tokens", "8", "--keepalive", "5m",
            "--base-url", url, "--no-telemetry", "--no-analyze", "--no-progress", cwd=str(ROOT),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=collector_env())
        stream = first / "raw" / "stream.msgpack"
        try:
            await asyncio.wait_for(held.wait(), 120)  # the second request waits at the server
            deadline = time.monotonic() + 60
            while not (stream.exists() and any(t == "req.end" for t, _ in RecordingReader(stream))):
                assert time.monotonic() < deadline, "the first request's req.end was never recorded"
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGINT)  # Ctrl-C after the first request
            _, err = await asyncio.wait_for(proc.communicate(), 120)
        finally:
            release.set()  # the held request goes on (its client is gone), and the resumed runs are not held
            if proc.returncode is None:
                proc.kill()
        log = err.decode("utf-8", "replace")
        assert proc.returncode == 130, log
        assert f"python -m collector --exp-dir {first} --resume" in log and "batch INTERRUPTED" in log
        moved = tmp_path / "renamed"
        first.rename(moved)
        rc, log = await run_collector("--exp-dir", str(moved), "--resume", "--base-url", url, "--no-telemetry",
                                      "--no-analyze", "--no-progress", timeout_s=180)
        assert rc == 0, log
        assert "batch complete: planned 3 / ok 3" in log
        rc, log = await run_collector("--exp-dir", str(moved), "--resume", "--base-url", url, "--no-telemetry",
                                      "--no-analyze", "--no-progress", timeout_s=180)
        assert rc == 0 and "(3 before this start)" in log, log  # nothing left: nothing re-run
    _, items, _ = read_recording(moved / "raw" / "stream.msgpack")
    topics = by_topic(items)
    ok = Counter(p["rid"] for p in topics["req.end"] if p["ok"])
    assert sorted(ok) == [f"first/ok:latest/000-qa/short/{r}" for r in (1, 2, 3)]  # one identity, the batch's own
    assert set(ok.values()) == {1}
    assert all(p["params"]["max_tokens"] == 8 for p in topics["req.start"])  # saved settings, not defaults


async def test_a_start_that_sent_nothing_does_not_block_the_same_command(tmp_path):
    """Server down at the first try: the same command works once it is up (no --resume needed)."""
    exp = tmp_path / "exp"
    exp.mkdir()
    port = free_port()
    args = ["--exp-dir", str(exp), "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en",
            "--max-tokens", "4", "--base-url", f"127.0.0.1:{port}", "--no-telemetry", "--no-analyze", "--no-progress"]
    rc, log = await run_collector(*args)
    assert rc == 3 and "Is the server running" in log
    assert sorted(p.name for p in exp.iterdir()) == []  # no recording, no config.json left behind
    async with serve(ollama_stub.make_app(load_s=0.0), port=port):
        rc, log = await run_collector(*args)
    assert rc == 0, log
    assert (exp / "config.json").is_file()


async def test_wrong_backend_is_named_with_the_fix(tmp_path):
    """Observed: OLLAMA_HOST at an OpenAI-compatible server gave 'model not found, ollama pull' and exit 0;
    --backend openai at Ollama gave a 405 per request. Now: one clear refusal before any request."""
    async with serve(openai_stub.make_app("llamacpp")) as oai, serve(ollama_stub.make_app(load_s=0.0, v1=True)) as oll:
        rc, log = await run_collector("--out", str(tmp_path), "--models", "ok", "--no-telemetry", "--no-analyze",
                                      env={"OLLAMA_HOST": oai.removeprefix("http://")})
        assert rc == 3 and "looks like an OpenAI-compatible server (llamacpp)" in log and "--backend openai" in log
        rc, log = await run_collector("--out", str(tmp_path), "--backend", "openai", "--base-url", oll,
                                      "--models", "ok", "--no-telemetry", "--no-analyze")
        assert rc == 3 and "looks like an Ollama server" in log and "--backend ollama" in log
        assert f"--base-url {oll}/v1" in log  # the way to measure its OpenAI-compatible API on purpose
        # Ollama's /v1 named on purpose (--backend openai and a /v1 URL): a warning, and it runs
        rc, log = await run_collector("--out", str(tmp_path), "--backend", "openai", "--base-url", oll + "/v1",
                                      "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en",
                                      "--max-tokens", "4", "--no-telemetry", "--no-analyze", "--no-progress")
        assert rc == 0 and "ollama_openai_api" in log and "native API (--backend ollama)" in log, log
        assert "looks like an Ollama server" not in log
        # control: the right backend at each works, and an OpenAI base URL ending in /v1 is understood
        rc, log = await run_collector("--out", str(tmp_path), "--backend", "openai", "--base-url", oai + "/v1",
                                      "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en",
                                      "--max-tokens", "4", "--no-telemetry", "--no-analyze", "--no-progress")
        assert rc == 0, log
    assert not [p for p in tmp_path.iterdir() if not any(p.rglob("stream.msgpack"))]  # refused starts left nothing


async def test_openai_model_the_server_does_not_list_is_refused(tmp_path):
    """Observed: --models gpt-4o was answered by SmolLM2 and stored as gpt-4o. Now it is refused up front;
    what is run records the model name the server reports, and only what was sent is in params."""
    async with serve(openai_stub.make_app("llamacpp")) as url:
        rc, log = await run_collector("--out", str(tmp_path), "--backend", "openai", "--base-url", url,
                                      "--models", "gpt-4o", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en",
                                      "--max-tokens", "4", "--keepalive", "5m", "--warmup", "--no-telemetry",
                                      "--no-analyze", "--no-progress")
    assert rc == 4, log
    assert "models_missing" in log and "gpt-4o" in log and "GET /v1/models" in log
    assert "warmup_with_keepalive_0" not in log
    [batch] = list(tmp_path.iterdir())
    topics = by_topic(read_recording(batch / "raw" / "stream.msgpack")[1])
    assert {p["model"] for p in topics["req.start"]} == {"ok"}
    assert all(e["served_model"] == "ok" for e in topics["req.end"])
    for p in topics["req.start"]:
        assert "keep_alive" not in p["params"] and "num_ctx" not in p["params"]  # never sent to /v1
        assert p["params"]["cache_prompt"] is False  # llama.cpp: no KV-cache reuse across runs by default
    assert topics["batch.start"][0]["server"] == "llamacpp"


async def test_prompt_cache_is_off_by_default_and_hits_are_reported(tmp_path):
    """Observed on llama.cpp: repeated runs of one prompt hit the KV cache (TTFT 0.018 s vs 0.228 s),
    skewing the mean and variance repeated runs exist for. Off by default; when on, every hit is a
    column and a report note."""
    for mode in ("off", "on"):
        async with serve(openai_stub.make_app("llamacpp")) as url:  # a fresh server: an empty KV cache
            rc, log = await run_collector("--out", str(tmp_path / mode), "--backend", "openai", "--base-url", url,
                                          "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en",
                                          "--runs", "3", "--max-tokens", "4", "--prompt-cache", mode,
                                          "--no-telemetry", "--no-progress", "--analyzer-args",
                                          "--no-quality --no-plots --no-progress")
            assert rc == 0, log
    rows = {}
    for mode in ("off", "on"):
        [batch] = list((tmp_path / mode).iterdir())
        with open(batch / "summary" / "results.csv", encoding="utf-8-sig", newline="") as fh:
            rows[mode] = sorted(csv.DictReader(fh), key=lambda r: int(r["run"]))
        report = (batch / "summary" / "report.md").read_text(encoding="utf-8")
        assert ("2 request(s) reused prompt tokens from the server's cache" in report) == (mode == "on")
    assert [r["prompt_cached_tokens"] for r in rows["off"]] == ["0", "0", "0"]
    assert [r["prompt_cached_tokens"] for r in rows["on"]] == ["0", "11", "11"]
    assert {r["prompt_cache"] for r in rows["off"]} == {"false"} and {r["prompt_cache"] for r in rows["on"]} == {"true"}


async def test_dry_run_lists_the_plan_and_the_missing_models(tmp_path):
    async with serve(ollama_stub.make_app(load_s=0.0)) as url:
        rc, out = await run_collector("--out", str(tmp_path), "--dry-run", "--models", "ok", "nosuch", "ok:latest",
                                      "--runs", "3", "--warmup", "--base-url", url)
    assert rc == 0, out
    assert "warm-up  ok:latest" in out and "warm-up  nosuch" not in out
    assert "… and " in out and " more" in out  # 2 models x 24 cases x 3 runs: a count and the first lines
    assert "MISSING on the server (would be skipped): nosuch:latest" in out
    assert "plan: 144 request(s), 1 warm-up(s)" in out  # ok and ok:latest are one model
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
    async with serve(ollama_stub.make_app(load_s=0.0)) as url:  # not even the --out parent it would use
        rc, out = await run_collector("--out", str(tmp_path / "data"), "--dry-run", "--models", "ok", "--base-url", url)
    assert rc == 0 and not (tmp_path / "data").exists(), out


async def test_a_missing_exp_dir_is_said_plainly(tmp_path):
    """A typo in --exp-dir would otherwise run the whole built-in task set into a new directory."""
    rc, log = await run_collector("--exp-dir", str(tmp_path / "experiments_2_typo"), "--models", "ok",
                                  "--no-telemetry")
    assert rc == 1 and "exp_dir_missing" in log and "--out" in log
    assert not (tmp_path / "experiments_2_typo").exists()


async def test_slow_streams_send_progress_and_results_ignore_it(tmp_path):
    """A collector batch against a slowly streaming server: req.progress on the bus and in the recording
    (throttled, tokens growing), and the recording analyses to the same results.csv without them."""
    import shutil

    from shared import messages as M
    from shared.recording import RecordingWriter

    async with serve(ollama_stub.make_app(load_s=0.0, token_delay_s=0.12)) as url:
        rc, log = await run_collector("--out", str(tmp_path / "a"), "--models", "ok", "--tasks", "qa", "--loads",
                                      "short", "--langs", "en", "--runs", "1", "--max-tokens", "11", "--base-url", url,
                                      "--no-telemetry", "--no-progress", "--no-warmup", "--analyzer-args",
                                      "--no-quality --no-plots --no-progress")
    assert rc == 0, log
    [batch] = list((tmp_path / "a").iterdir())
    header, items, problem = read_recording(batch / "raw" / "stream.msgpack")
    assert problem is None
    progress = [p for t, p in items if t == M.REQ_PROGRESS]
    [end] = [p for t, p in items if t == M.REQ_END]
    assert 1 <= len(progress) <= end["client"]["latency_s"] / 0.5 + 1  # never per chunk (12 chunks)
    assert [p["tokens_so_far"] for p in progress] == sorted(p["tokens_so_far"] for p in progress)
    assert all(p["rid"] == end["rid"] and 0 < p["tokens_so_far"] <= 11 for p in progress), ([(p["rid"], p["tokens_so_far"]) for p in progress], end["rid"])
    for p in progress:
        M.validate(M.REQ_PROGRESS, p, strict=True)
    # the same recording without req.progress, analysed: byte-identical results
    other = tmp_path / "b" / batch.name
    shutil.copytree(batch, other, ignore=shutil.ignore_patterns("summary", "plots", "columns", "*.json"))
    (other / "raw" / "stream.msgpack").unlink()
    with RecordingWriter(other / "raw" / "stream.msgpack", meta={k: v for k, v in header.items()
                                                                   if k == "batch"}) as w:
        for t, p in items:
            if t != M.REQ_PROGRESS:
                w.write(t, p)
    assert run_analyzer(other, ["--no-quality", "--no-plots", "--no-progress"])
    assert (other / "summary" / "results.csv").read_bytes() == (batch / "summary" / "results.csv").read_bytes()
