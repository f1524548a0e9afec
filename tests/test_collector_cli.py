"""``python -m collector`` as a real subprocess: real ZeroMQ bus (an in-test telemetry publisher
that sends tel.hb/tel.gpu like the simulated daemon), the Ollama stub over real HTTP, a real
recording read back with shared.recording."""
import asyncio
import json
import os
import re
import sys
import threading
import time
from collections import Counter

import pytest
import zmq

from collector.batch_run import run_analyzer
from shared import messages as M
from shared.batch import BatchDir
from shared.bus import Inbox, Publisher, bind_pub, connect_sub
from shared.recording import RecordingError, RecordingReader, read_recording
from tests.conftest import ROOT, free_port
from tests.stubs import ollama_stub, serve

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

REQ_START_KEYS = {"rid", "model", "task", "load", "run", "case", "case_hash", "warmup", "prompt", "params"}
REQ_END_KEYS = {"rid", "ok", "text", "api", "client"}
CLIENT_KEYS = {"latency_s", "chunks", "chunk_t_ns", "retries"}


class SimTelemetry:
    """Publishes tel.hb (5 Hz) and tel.gpu (50 Hz, simulated: true) from a thread until stopped."""

    def __init__(self, endpoint: str, curve=None):
        self.endpoint = endpoint
        self.curve = curve
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        ctx = zmq.Context()
        sock = bind_pub(ctx, self.endpoint, self.curve)
        try:
            pub = Publisher(sock, "telemetry@test")
            self.ready.set()
            i = 0
            while not self.stop.is_set():
                pub.publish("tel.gpu", {"gpu": 0, "uuid": "GPU-sim-0", "power_mw": 50_000 + i, "power_kind": "sim",
                                        "simulated": True})
                if i % 10 == 0:  # the slow fields, then the heartbeat
                    pub.publish("tel.gpu", {"gpu": 0, "uuid": "GPU-sim-0", "power_mw": 50_000 + i, "power_kind": "sim",
                                            "power_limit_w": 300.0, "driver": "550.54.15", "simulated": True})
                    pub.publish("tel.hb", {"gpu_source": "sim", "simulated": True, "gpus": 1, "uptime_s": i / 50})
                i += 1
                time.sleep(0.02)
        finally:
            sock.close(linger=0)
            ctx.term()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def collector_env(**extra: str) -> dict:
    """Environment for a collector subprocess: the bus on random loopback ports, never the defaults
    (another collector or test may hold 5556/5557)."""
    return {**os.environ, "GENAI_EVENTS_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
            "GENAI_TELEMETRY_ENDPOINT": f"tcp://127.0.0.1:{free_port()}", **extra}


async def run_collector(*args: str, timeout_s: float = 60, env: dict | None = None) -> tuple[int, str]:
    """Run the collector CLI to completion (killed on timeout); returns (exit code, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", *args, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=collector_env(**(env or {})))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, (out + err).decode("utf-8", errors="replace")


def by_topic(items):
    out = {}
    for topic, payload in items:
        out.setdefault(topic, []).append(payload)
    return out


@pytest.fixture
async def stub():
    app = ollama_stub.make_app(load_s=0.12)
    async with serve(app) as url:
        yield url, app[ollama_stub.STATE]


async def test_batch_records_telemetry_and_every_request_event(stub, tmp_path):
    url, st = stub
    tel_ep, ev_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    events_sub = connect_sub(ctx, ev_ep, topics=("batch.",))
    try:
        with SimTelemetry(tel_ep):
            rc, log = await run_collector(
                "--out", str(tmp_path), "--models", "ok", "think", "missing", "--tasks", "qa", "code",
                "--loads", "short", "--langs", "en", "--runs", "2", "--max_tokens", "8", "--seed", "1234",
                "--warmup", "--keepalive", "5m", "--base-url", url.removeprefix("http://"),
                "--telemetry-endpoint", tel_ep, "--events-endpoint", ev_ep, "--no-analyze", "--no-progress")
        # a model the server does not have: listed before the first request, its requests skipped, exit 4
        assert rc == 4, log
        assert log.index("models_missing") < log.index("request_done") and "ollama pull missing:latest" in log
        assert "planned 12 / ok 8 / failed 0 / skipped 4" in log and "--resume" in log
        seen = []
        inbox = Inbox()
        while (msg := inbox.recv(events_sub, timeout_ms=200)) is not None:
            seen.append(msg[0])
    finally:
        events_sub.close(linger=0)
        ctx.term()
    assert "batch.end" in seen  # published on the bus, not only recorded

    [batch_dir] = list(tmp_path.iterdir())
    assert batch_dir.name.startswith("experiments_1_")
    header, items, problem = read_recording(batch_dir / "raw" / "stream.msgpack")
    assert problem is None and header["batch"] == batch_dir.name
    topics = by_topic(items)
    assert len(topics["tel.hb"]) >= 1 and len(topics["tel.gpu"]) >= 10
    assert all(p["simulated"] for p in topics["tel.gpu"])

    [bs] = topics["batch.start"]
    assert bs["batch"] == batch_dir.name and bs["backend"] == "ollama" and bs["base_url"] == url
    assert len(bs["cases"]) == 2 and bs["cases"][1]["expect"]["entry"] == "binary_search"
    assert bs["models"]["ok:latest"]["digest"] == ollama_stub.DIGEST
    assert bs["models"]["ok:latest"]["context_length"] == 32768 and bs["missing_models"] == ["missing:latest"]
    assert bs["config"]["settings"]["seed"] == {"value": 1234, "source": "cli"}
    assert bs["config"]["settings"]["temperature"]["source"] == "default"

    starts = {p["rid"]: p for p in topics["req.start"]}
    ends = {p["rid"]: p for p in topics["req.end"]}
    assert set(starts) == set(ends)
    timed = [r for r in starts if not starts[r]["warmup"]]
    assert sorted(timed) == sorted(f"{batch_dir.name}/{m}:latest/{c}/short/{r}" for m in ("ok", "think")
                                   for c in ("000-qa", "001-code") for r in (1, 2))
    assert sum(1 for p in starts.values() if p["warmup"]) == 2  # one per model found on the server
    for rid, s in starts.items():
        assert REQ_START_KEYS <= set(s), rid
        e = ends[rid]
        assert REQ_END_KEYS <= set(e) and CLIENT_KEYS <= set(e["client"])
        assert s["t"] < e["t"]
        assert s["params"]["seed"] == 1234 and s["params"]["keep_alive"] == "5m"
    ok_ends = [e for e in ends.values() if e["ok"]]
    assert len(ok_ends) == 10 == len(ends)
    for e in ok_ends:
        assert e["api"]["eval_count"] > 0 and e["client"]["first_token_s"] > 0
        assert all(starts[e["rid"]]["t"] < t <= e["t"] for t in e["client"]["chunk_t_ns"])
    assert all(e["served_model"] == starts[e["rid"]]["model"] for e in ends.values())
    think_end = ends[f"{batch_dir.name}/think:latest/000-qa/short/1"]
    assert think_end["thinking"] == "Okay, let me think." and "first_thinking_s" in think_end["client"]
    firsts = Counter((p["rid"], p["kind"]) for p in topics["req.first_token"])
    assert firsts[(f"{batch_dir.name}/think:latest/000-qa/short/1", "thinking")] == 1
    # telemetry windows: GPU samples fall inside request windows
    first_t = min(s["t"] for s in starts.values())
    last_t = max(e["t"] for e in ends.values())
    assert any(first_t < p["t"] < last_t for p in topics["tel.gpu"])

    [be] = topics["batch.end"]
    assert (be["requests"], be["ok"], be["failed"], be["skipped"], be["interrupted"]) == (8, 8, 0, 4, False)
    # every key the collector sent is declared in the contract, with its declared type
    own = [(t, p) for t, p in items if str(p["src"]).startswith("collector@")]
    # req.progress only where a stream lasted over 0.5 s (a slow machine): allowed, never required here
    assert {t for t, _ in own} - {"req.progress"} == {"batch.start", "req.start", "req.first_token", "req.end",
                                                      "batch.end"}
    for topic, payload in own:
        M.validate(topic, payload, strict=True)
    # texts per timed request from the collector; seed-style raw JSON from the analyzer alone
    rid = f"{batch_dir.name}/ok:latest/001-code/short/2"
    b = BatchDir(batch_dir)
    assert b.text_file(rid).read_text(encoding="utf-8") == ends[rid]["text"]
    assert not list(b.raw.glob("*.json")), "the collector must not write raw/<rid>.json (the analyzer owns it)"
    assert run_analyzer(batch_dir)
    raw = json.loads(b.request_json(rid).read_text(encoding="utf-8"))
    assert raw["generated_text"] == ends[rid]["text"] and raw["api_metrics"]["eval_count"] == 8
    assert raw["throughput_tokens_per_sec"] > 0
    cfg = json.loads(b.config_json.read_text(encoding="utf-8"))
    assert cfg["settings"]["runs"] == {"value": 2, "source": "cli"} and cfg["cases_source"] == "builtin"


async def test_concurrent_streams_all_recorded(stub, tmp_path):
    url, _ = stub
    rc, log = await run_collector(
        "--out", str(tmp_path), "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en", "zh",
        "--runs", "4", "--concurrency", "4", "--max-tokens", "8", "--keep-alive", "5m", "--base-url", url,
        "--no-telemetry", "--no-analyze", "--no-progress")
    assert rc == 0, log
    [batch_dir] = list(tmp_path.iterdir())
    _, items, _ = read_recording(batch_dir / "raw" / "stream.msgpack")
    topics = by_topic(items)
    ends = topics["req.end"]
    assert len(ends) == 8 and all(e["ok"] for e in ends)
    # with 4 streams in flight, some request starts before an earlier one ends
    seq = [(t, p["rid"]) for t, p in items if t in ("req.start", "req.end")]
    open_max, live = 0, set()
    for topic, rid in seq:
        live.add(rid) if topic == "req.start" else live.discard(rid)
        open_max = max(open_max, len(live))
    assert open_max > 1


async def test_kill9_then_resume_loses_nothing(tmp_path):
    app = ollama_stub.make_app(load_s=0.0, token_delay_s=0.03)
    async with serve(app) as url:
        (tmp_path / "b").mkdir()
        args = ["--exp-dir", str(tmp_path / "b"), "--models", "ok", "--tasks", "qa", "summary", "--loads", "short",
                "--langs", "en", "--runs", "3", "--max_tokens", "6", "--keepalive", "5m", "--base-url", url,
                "--no-telemetry", "--no-analyze", "--no-progress"]
        stream = tmp_path / "b" / "raw" / "stream.msgpack"
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "collector", *args, cwd=str(ROOT),
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                                                    env=collector_env())
        try:
            deadline = time.monotonic() + 30
            done_before = 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if stream.exists():
                    try:
                        done_before = sum(1 for t, p in RecordingReader(stream) if t == "req.end")
                    except RecordingError:  # created, header not written yet
                        continue
                    if done_before >= 2:
                        break
            assert done_before >= 2
            proc.kill()  # SIGKILL on POSIX: no cleanup at all
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        _, before, _ = read_recording(stream)
        finished_before = {p["rid"] for t, p in before if t == "req.end" and p["ok"]}
        assert len(finished_before) >= 2
        rc, log = await run_collector(*args, "--resume")
        assert rc == 0, log
    header, items, problem = read_recording(stream)
    assert problem is None
    ends = Counter(p["rid"] for t, p in items if t == "req.end" and p["ok"])
    assert len(ends) == 6 and all(n == 1 for n in ends.values())  # every request exactly once
    starts = by_topic(items)["batch.start"]
    assert starts[-1]["resumed"] is True and starts[-1]["already_done"] == len(finished_before)


async def test_exp_dir_reads_test_cases_and_config_py(stub, tmp_path):
    url, st = stub
    exp = tmp_path / "experiments_2"
    exp.mkdir()
    (exp / "test_cases.json").write_text(json.dumps([
        {"model": ["ok"], "prompt": "请解释牛顿第一定律。", "task_type": "knowledge_qa",
         "reference_text": "牛顿第一定律，也称为惯性定律...", "max_tokens": 5, "temperature": 0.2},
        {"model": "all", "prompt": "写一段关于人工智能的短文。", "task_type": "creative_writing", "max_tokens": 4},
    ], ensure_ascii=False), encoding="utf-8")
    (exp / "config.py").write_text('TEMPERATURE = 0.6\nSEED = 77\nKEEPALIVE = "5m"\nRUNS = 1\n', encoding="utf-8")
    rc, log = await run_collector("--exp-dir", str(exp), "--base-url", url, "--no-telemetry", "--no-analyze",
                                  "--no-progress", "--timeout", "1", "--retries", "1", "--backoff", "0.05")
    _, items, _ = read_recording(exp / "raw" / "stream.msgpack")
    topics = by_topic(items)
    starts = topics["req.start"]
    # case 0 on "ok" only; case 1 on every local generating model ("all": no cloud, no embedding)
    assert sorted(p["model"] for p in starts if p["case"] == 0) == ["ok:latest"]  # "ok" and "ok:latest": one model
    models_all = sorted(p["model"] for p in starts if p["case"] == 1)
    assert "ok:latest" in models_all and "embed:latest" not in models_all
    assert not any("cloud" in m for m in models_all)
    case0 = next(p for p in starts if p["case"] == 0)
    assert case0["params"] == {"temperature": 0.2, "max_tokens": 5, "seed": 77, "keep_alive": "5m"}
    case1 = next(p for p in starts if p["case"] == 1 and p["model"] == "ok:latest")
    assert case1["params"]["temperature"] == 0.6 and case1["task"] == "creative"
    cfg = json.loads((exp / "config.json").read_text(encoding="utf-8"))
    assert cfg["settings"]["seed"]["source"] == "config.py" and cfg["cases_source"].endswith("test_cases.json")
    bs = topics["batch.start"][0]
    assert bs["cases"][0]["task_type"] == "knowledge_qa" and bs["cases"][0]["task"] == "qa"
    # the hang model times out (--timeout 1), busy exhausts retries: failed, not fatal
    ends = {p["rid"]: p for p in topics["req.end"]}
    kinds = {p["rid"].split("/")[1]: p.get("error_kind") for p in ends.values()}
    assert kinds["hang:latest"] == "timeout" and kinds["midstream:latest"] == "midstream"
    assert kinds["drop:latest"] == "truncated" and kinds["ok:latest"] is None and kinds["busy:latest"] == "busy"
    busy_end = next(p for p in ends.values() if p["rid"].split("/")[1] == "busy:latest")
    assert busy_end["client"]["retries"] == 1
    assert rc == 4, log  # some requests failed: never exit 0 with a run missing


async def test_bad_config_py_is_a_clear_error_or_falls_back(tmp_path):
    exp = tmp_path / "experiments_3"
    exp.mkdir()
    (exp / "config.py").write_text("RUNS = 2\nimport os\n", encoding="utf-8")
    rc, log = await run_collector("--exp-dir", str(exp), "--dry-run")
    assert rc == 1 and "config.py:2" in log and "Import statement is not allowed" in log
    assert "--use-default-on-error" in log
    rc, out = await run_collector("--exp-dir", str(exp), "--dry-run", "--use-default-on-error", "--models", "m",
                                  "--base-url", f"127.0.0.1:{free_port()}")
    assert rc == 0, out
    assert "cases: built-in task set" in out and f"FALLBACK (--use-default-on-error): {exp / 'config.py'}: " in out
    assert "config.py:2: Import statement" in out
    assert out.index("plan: 24 request(s)") < out.index("settings (source):")  # the plan first
    assert re.search(r"\n  runs +1  \(default\)", out)
    assert "models: not checked (server unreachable" in out  # said, not silently passed
    rc, out = await run_collector("--exp-dir", str(exp), "--dry-run", "--use-default-on-error",
                                  "--base-url", f"127.0.0.1:{free_port()}")
    assert rc == 0 and "all:latest" not in out and "/*/000-qa/short/1" in out, out  # "all" is not a model
    assert '* = every local generating model the server lists ("all")' in out
    # only the bad file is replaced: a good test_cases.json beside a bad config.py is still used
    (exp / "test_cases.json").write_text(json.dumps([{"prompt": "Why?", "task_type": "qa"}]), encoding="utf-8")
    rc, out = await run_collector("--exp-dir", str(exp), "--dry-run", "--use-default-on-error", "--models", "m",
                                  "--base-url", f"127.0.0.1:{free_port()}")
    assert rc == 0 and f"cases: {exp / 'test_cases.json'}" in out and "1 case(s)" in out, out
    assert out.count("FALLBACK (--use-default-on-error):") == 1 and "tasks " not in out  # a case file's own tasks


async def test_no_heartbeat_is_a_clear_error(tmp_path):
    rc, log = await run_collector("--out", str(tmp_path), "--models", "ok", "--telemetry-endpoint",
                                  f"tcp://127.0.0.1:{free_port()}", "--telemetry-wait", "0.5",
                                  "--events-endpoint", f"tcp://127.0.0.1:{free_port()}", "--no-analyze")
    assert rc == 2 and "no telemetry heartbeat" in log and "--no-telemetry" in log


async def test_server_down_stops_with_the_fix(tmp_path):
    rc, log = await run_collector("--out", str(tmp_path), "--models", "ok", "--no-telemetry", "--no-analyze",
                                  "--events-endpoint", f"tcp://127.0.0.1:{free_port()}",
                                  env={"OLLAMA_HOST": f"127.0.0.1:{free_port()}"})
    assert rc == 3 and "Is the server running" in log and "OLLAMA_HOST" in log


def test_help_answers():
    import subprocess
    out = subprocess.run([sys.executable, "-m", "collector", "--help"], cwd=str(ROOT), capture_output=True,
                         text=True, encoding="utf-8", timeout=60)
    assert out.returncode == 0
    for flag in ("--max-tokens", "--exp-dir", "--use-default-on-error", "--backend", "--concurrency", "--resume",
                 "--no-telemetry", "--keepalive"):
        assert flag in out.stdout


async def test_with_the_real_telemetry_daemon_and_analyzer(stub, tmp_path):
    """The sim telemetry daemon as a subprocess, then the analyzer run at the end (quality off)."""
    url, _ = stub
    tel_ep = f"tcp://127.0.0.1:{free_port()}"
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telemetry", "--gpu", "sim", "--endpoint", tel_ep, "--duration", "60",
        "--gpu-hz", "50", "--host-hz", "5", cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        rc, log = await run_collector(
            "--out", str(tmp_path), "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en",
            "--max-tokens", "8", "--keepalive", "5m", "--base-url", url, "--telemetry-endpoint", tel_ep,
            "--telemetry-wait", "20", "--events-endpoint", f"tcp://127.0.0.1:{free_port()}", "--no-progress",
            "--analyzer-args", "--no-quality --no-plots --no-progress", timeout_s=120)
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
    assert rc == 0, log
    [batch_dir] = list(tmp_path.iterdir())
    _, items, problem = read_recording(batch_dir / "raw" / "stream.msgpack")
    topics = by_topic(items)
    assert problem is None and topics["tel.hb"] and topics["tel.gpu"] and topics["tel.host"]
    assert all(p.get("simulated") for p in topics["tel.gpu"])
    assert len(topics["req.end"]) == 1 and topics["req.end"][0]["ok"]
    # the analyzer ran as its own process on the recording; or, if it failed, said how to rerun it
    assert (batch_dir / "summary" / "results.csv").exists() or "run_later" in log


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")
async def test_telemetry_over_curve(tmp_path):
    """A CURVE-encrypted telemetry publisher: the collector subscribes with --curve-secret/--curve-server-key."""
    import zmq.auth
    from shared.bus import CurveKeys
    keys = tmp_path / "keys"
    keys.mkdir()
    server_pub, server_secret = zmq.auth.create_certificates(str(keys), "telemetry")
    _, client_secret = zmq.auth.create_certificates(str(keys), "collector")
    tel_ep = f"tcp://127.0.0.1:{free_port()}"
    with SimTelemetry(tel_ep, CurveKeys.from_secret_file(server_secret)):
        rc, log = await run_collector(
            "--out", str(tmp_path / "d"), "--models", "ok", "--tasks", "qa", "--loads", "short", "--langs", "en",
            "--base-url", f"127.0.0.1:{free_port()}", "--telemetry-endpoint", tel_ep, "--telemetry-wait", "5",
            "--curve-secret", client_secret, "--curve-server-key", server_pub,
            "--events-endpoint", f"tcp://127.0.0.1:{free_port()}", "--no-analyze")
    # heartbeats arrived over CURVE (no telemetry error); the batch then stops at the absent server
    assert rc == 3 and "no_telemetry" not in log and "Is the server running" in log, log
