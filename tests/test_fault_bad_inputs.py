"""Fault: bad inputs — files a user writes and servers that misbehave. Each gives a clear error, and
nothing already collected is lost. Real ``python -m collector`` subprocesses; the misbehaving
server is a real HTTP server on 127.0.0.1 (http.server in a thread) that speaks Ollama's API for
well-behaved models and misbehaves, per model name, for the others.

Covered elsewhere, not repeated: every bad test_cases.json field at the unit level
(tests/test_collector_settings.py::TestTestCases), config.py statements that are not literals
(::TestConfigPy::test_anything_but_literal_assignments_is_a_clear_error), unknown models on Ollama
(tests/test_collector_cli.py::test_batch_records_telemetry_and_every_request_event: skipped, the
batch goes on) and on OpenAI-compatible servers (tests/test_collector_runner.py::
TestOpenAIStub::test_missing_model_in_each_error_shape), a hanging server
(tests/test_collector_cli.py::test_exp_dir_reads_test_cases_and_config_py: the ``hang`` model times out).
"""
import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.messages import REQ_END
from shared.recording import read_recording
from tests.conftest import free_port
from tests.fault_helpers import loopback, procs, read_csv  # noqa: F401

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

DEAD_URL_ARGS = ("--no-telemetry", "--no-analyze", "--no-progress")


def run_collector(procs, *args: str, timeout_s: float = 60) -> tuple[int, str]:
    p = procs.start("collector", *args)
    rc = p.wait(timeout_s)
    return rc, procs.output(p)


# --- files -----------------------------------------------------------------------------------------

BAD_CASES = {
    "malformed_json": (b'[\n  {"prompt": "x", "task_type": "qa",}\n]', "test_cases.json:2:"),
    "wrong_type_list_of_strings": (json.dumps(["What is 2+2?"]).encode(), "case [0]: expected an object, got str"),
    "wrong_type_max_tokens": (json.dumps([{"prompt": "x", "task_type": "qa", "max_tokens": "many"}]).encode(),
                              'case [0]: field "max_tokens"'),
    "empty_prompt": (json.dumps([{"prompt": "   ", "task_type": "qa"}]).encode(),
                     'case [0]: field "prompt" must be a non-empty string'),
    "not_utf8": ('[{"prompt": "caf\u00e9 ?", "task_type": "qa"}]'.encode("latin-1"), "not UTF-8 text"),
    "object_not_list": (b'{"prompt": "x"}', "expected a non-empty JSON list"),
}


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_bad_test_cases_json_is_a_clear_error_before_anything_starts(procs, tmp_path, name):
    """Exit 1, the message names the file (and the case/field or line), and says how to go on."""
    content, needle = BAD_CASES[name]
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "test_cases.json").write_bytes(content)
    rc, out = run_collector(procs, "--exp-dir", str(exp), "--models", "m", "--base-url",
                            f"127.0.0.1:{free_port()}", *DEAD_URL_ARGS)
    assert rc == 1, out
    assert "test_cases.json" in out and needle in out, out
    assert "--use-default-on-error" in out
    assert not (exp / "raw" / "stream.msgpack").exists()  # nothing was started, nothing half-written


CODE_IN_CONFIG = {  # name: (config.py text, the line the error must name)
    "expression_statement": ('__import__("pathlib").Path(r"{marker}").write_text("pwned")\n', 1),
    "call_in_assignment": ('RUNS = 1\nSEED = __import__("pathlib").Path(r"{marker}").write_text("pwned")\n', 2),
    "import_then_call": ('import os\nos.makedirs(r"{marker}")\n', 1),
    "exec_string": ('exec("open(r\'{marker}\', \'w\').write(\'pwned\')")\n', 1),
    "lambda_default": ('MODELS = (lambda p=__import__("pathlib").Path(r"{marker}").touch(): ["m"])()\n', 1),
}


@pytest.mark.parametrize("name", list(CODE_IN_CONFIG))
def test_config_py_with_code_is_refused_and_never_executed(procs, tmp_path, name):
    """The code would create a file; the file never appears, with or without --use-default-on-error."""
    marker = tmp_path / "PWNED"
    exp = tmp_path / "exp"
    exp.mkdir()
    text, line = CODE_IN_CONFIG[name]
    (exp / "config.py").write_text(text.format(marker=marker), encoding="utf-8")
    rc, out = run_collector(procs, "--exp-dir", str(exp), "--dry-run")
    assert rc == 1 and f"config.py:{line}:" in out, out
    assert "not allowed" in out or "never executed" in out
    assert not marker.exists()
    rc, out = run_collector(procs, "--exp-dir", str(exp), "--dry-run", "--use-default-on-error", "--models", "m")
    assert rc == 0, out
    assert "cases: built-in task set" in out and "FALLBACK (--use-default-on-error)" in out
    assert not marker.exists()  # proof: read with ast, never run


# --- servers ---------------------------------------------------------------------------------------

GOOD_TOKENS = ["Paris", " is", " the", " capital", "."]


class MisbehavingOllama(BaseHTTPRequestHandler):
    """Ollama's /api/version, /api/tags, /api/show and /api/generate; behaviour of generate by model:
    good*: a correct NDJSON stream; garbage: 200 then random non-JSON, non-UTF-8 bytes and close;
    nonutf8: a correct stream whose text has invalid UTF-8 bytes; badjson: 200 with a JSON body
    that is not a chunk; hang: headers, one chunk, then nothing."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection closes
    models = ("good-a", "garbage", "nonutf8", "badjson", "hang", "good-b")
    release = threading.Event()

    def log_message(self, *args):  # keep test output quiet
        pass

    def _json(self, obj, status=200):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/api/version":
            return self._json({"version": "0.0.0-misbehaving"})
        if self.path == "/api/tags":
            return self._json({"models": [{"name": m, "model": m, "digest": "0" * 64,
                                           "details": {"family": "llama", "parameter_size": "1B"}}
                                          for m in self.models]})
        self._json({"error": "not found"}, 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/api/show":
            return self._json({"details": {"family": "llama"}, "capabilities": ["completion"], "model_info": {}})
        if self.path != "/api/generate":
            return self._json({"error": "not found"}, 404)
        model = body.get("model", "").removesuffix(":latest")  # Ollama: x and x:latest are one model
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()

        def line(obj) -> bytes:
            return json.dumps(obj).encode() + b"\n"

        if model == "garbage":
            self.wfile.write(b"\xff\xfe\x00garbage\x80\x81 not json at all {{{\n\xc3\x28\n")
        elif model == "badjson":
            self.wfile.write(line({"unexpected": ["shape"], "done": "maybe"}))
        elif model == "hang":
            self.wfile.write(line({"model": model, "response": "I will", "done": False}))
            self.wfile.flush()
            self.release.wait(30)  # bounded: the test releases it at teardown
        elif model == "nonutf8":
            chunk = b'{"model":"nonutf8","response":"caf\xe9 \xff ok","done":false}\n'
            self.wfile.write(chunk)
            self.wfile.write(line({"model": model, "response": "", "done": True, "done_reason": "stop",
                                   "eval_count": 2, "eval_duration": 1000}))
        else:
            for tok in GOOD_TOKENS:
                self.wfile.write(line({"model": model, "response": tok, "done": False}))
            self.wfile.write(line({"model": model, "response": "", "done": True, "done_reason": "stop",
                                   "eval_count": len(GOOD_TOKENS), "eval_duration": 5_000_000,
                                   "prompt_eval_count": 3, "prompt_eval_duration": 1_000_000}))


@pytest.fixture
def misbehaving_server():
    MisbehavingOllama.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), MisbehavingOllama)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        MisbehavingOllama.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_misbehaving_server_fails_those_requests_clearly_and_keeps_the_good_ones(procs, tmp_path, misbehaving_server):
    """garbage / bad JSON / hang (timeout) fail with a kind and a message; non-UTF-8 text is kept with
    replacement characters; the good models before and after are complete in the recording and the CSV."""
    batch = tmp_path / "b"
    batch.mkdir()
    rc, out = run_collector(procs, "--exp-dir", str(batch), "--models", *MisbehavingOllama.models, "--tasks", "qa",
                            "--loads", "short", "--langs", "en", "--max-tokens", "8", "--keepalive", "5m",
                            "--timeout", "2", "--base-url", misbehaving_server, "--no-telemetry", "--no-progress",
                            "--events-endpoint", loopback(),
                            "--analyzer-args", "--no-quality --no-plots --no-progress", timeout_s=90)
    assert rc == 4, out  # some requests failed: the batch says so in its exit code
    _, items, problem = read_recording(batch / "raw" / "stream.msgpack")
    assert problem is None
    ends = {p["rid"].split("/")[1].removesuffix(":latest"): p for t, p in items if t == REQ_END}
    assert set(ends) == set(MisbehavingOllama.models)  # every model got its request, none lost
    for good in ("good-a", "good-b"):
        assert ends[good]["ok"] and ends[good]["text"] == "".join(GOOD_TOKENS)
    for bad in ("garbage", "badjson", "hang"):
        e = ends[bad]
        assert e["ok"] is False and e["error_kind"] and e["error"], e
    assert ends["hang"]["error_kind"] == "timeout" and ends["hang"]["text"] == "I will"  # partial text kept
    assert ends["nonutf8"]["ok"] and "\ufffd" in ends["nonutf8"]["text"] and "ok" in ends["nonutf8"]["text"]
    rows = {r["rid"].split("/")[1].removesuffix(":latest"): r for r in read_csv(batch / "summary" / "results.csv")}
    assert set(rows) == set(MisbehavingOllama.models)
    assert rows["good-a"]["status"] == rows["good-b"]["status"] == "ok"
    assert rows["garbage"]["status"] == "failed" and rows["garbage"]["error"]


def test_a_server_that_is_not_http_at_all_is_a_clear_error(procs, tmp_path):
    """A TCP server that answers every connection with binary garbage: the collector stops with a
    message naming the server, instead of hanging or crashing with a traceback."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    srv.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.sendall(b"\x00\xff\xfe\x80 GARBAGE \xc3\x28\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        rc, out = run_collector(procs, "--out", str(tmp_path), "--models", "m", "--base-url",
                                f"127.0.0.1:{port}", "--timeout", "5", "--events-endpoint", loopback(),
                                *DEAD_URL_ARGS)
    finally:
        stop.set()
        thread.join(5)
        srv.close()
    assert rc == 3, out  # as for an unreachable server: nothing started, nothing to keep
    assert "server_unusable" in out and f"127.0.0.1:{port}" in out, out[-3000:]  # the message names the server
    assert "Traceback" not in out, out[-3000:]
    assert time.monotonic() - started < 60


def test_a_server_that_never_answers_anything_times_out_clearly(procs, tmp_path):
    """A TCP server that accepts and then says nothing: the collector must give up (after --timeout)
    with a message naming the server, not wait forever."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    c = procs.start("collector", "--out", str(tmp_path), "--models", "m", "--base-url", f"127.0.0.1:{port}",
                    "--timeout", "2", "--events-endpoint", loopback(), *DEAD_URL_ARGS)
    try:
        try:
            rc = c.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("the collector was still waiting 10 s after a --timeout 2 server stopped answering")
    finally:
        srv.close()
    out = procs.output(c)
    assert rc == 3 and "server_unusable" in out and f"127.0.0.1:{port}" in out, out[-3000:]
    assert "no answer within 2 s" in out and "Traceback" not in out
