"""The subscribers' pure parts: tail's table and JSON lines, the Prometheus collector."""
from __future__ import annotations

import json
import time

from prometheus_client import CollectorRegistry, generate_latest

from shared.bus import Inbox, bind_pub, connect_sub
from shared.messages import TEL_GPU, TEL_HB, TEL_HOST, Stamper, encode
from telemetry.prometheus import TelemetryMetrics
from telemetry.tail import TailState, to_json_line

stamp = Stamper("telemetry@test").stamp


def gpu_msg(**fields):
    return TEL_GPU, stamp({"gpu": 0, "uuid": "GPU-x", "name": "Fake", "power_kind": "instant", **fields})


class TestTailState:
    def test_slow_fields_persist_between_fast_ticks(self):
        """A fast tick (power only) does not blank the temperature shown from the last slow tick."""
        st = TailState()
        st.update(*gpu_msg(power_mw=100_000, temp_c=61, pstate="P2"))
        st.update(*gpu_msg(power_mw=250_000))
        table = st.render()
        assert "250.0" in table and " 61 " in table and "P2" in table

    def test_absent_fields_render_as_dash_not_zero(self):
        st = TailState()
        st.update(*gpu_msg(power_mw=90_000))
        row = st.render().splitlines()[1]
        assert "-" in row.split()[3]  # energy column
        assert " 0.0 " not in row

    def test_counts_seq_gaps_per_source(self):
        st = TailState()
        for seq in (1, 2, 5, 6):
            st.update(TEL_HOST, {"v": 1, "src": "a", "seq": seq, "t": 0, "wall": 0, "cpu_pct": 1.0})
        st.update(TEL_HOST, {"v": 1, "src": "b", "seq": 100, "t": 0, "wall": 0, "cpu_pct": 1.0})
        assert st.seq_gaps == 2 and st.messages == 5

    def test_simulated_and_errors_are_visible(self):
        st = TailState()
        st.update(*gpu_msg(power_mw=1, simulated=True, errors=["temp: gpu_lost"]))
        st.update(TEL_HB, stamp({"sources": {"gpu0": {"target_hz": 100.0, "achieved_hz": 99.5,
                                                     "jitter_ms_p99": 0.4, "dropped_ticks": 3}},
                                 "simulated": True}))
        text = st.render()
        assert "[SIMULATED]" in text and "temp: gpu_lost" in text
        assert "gpu0 99.5/100 Hz" in text and "drop 3" in text and "SIMULATED GPU" in text


def test_json_line_round_trips_with_int_keys_as_strings():
    """procs maps pid (int) -> MiB; JSON turns the pid into a string key, nothing else changes."""
    topic, payload = gpu_msg(power_mw=5, procs={123: 4.5}, name="模型")
    back = json.loads(to_json_line(topic, payload))
    assert back["topic"] == TEL_GPU and back["procs"] == {"123": 4.5} and back["name"] == "模型"
    assert back["seq"] == payload["seq"]


class TestTelemetryMetrics:
    def _scrape(self, metrics: TelemetryMetrics) -> str:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(metrics)
        return generate_latest(reg).decode()

    def test_gauges_in_base_units_with_labels(self):
        m = TelemetryMetrics()
        m.update(*gpu_msg(power_mw=123_456, energy_mj=5_000, mem_used_mib=1024.0, sm_clock_mhz=1500))
        m.update(TEL_HOST, stamp({"cpu_pct": 12.5, "cpu_pct_per_core": [10.0, 15.0], "rapl_uj": {"z/pkg": 2_000_000}}))
        text = self._scrape(m)
        labels = 'gpu="0",host="test",name="Fake",simulated="false",uuid="GPU-x"'
        assert f"genai_gpu_power_watts{{{labels}}} 123.456" in text
        assert f"genai_gpu_energy_joules_total{{{labels}}} 5.0" in text
        assert f"genai_gpu_memory_used_bytes{{{labels}}} 1.073741824e+09" in text
        assert f"genai_gpu_sm_clock_hertz{{{labels}}} 1.5e+09" in text
        assert 'genai_host_cpu_core_percent{core="1",host="test"} 15.0' in text
        assert 'genai_host_rapl_energy_joules_total{host="test",zone="z/pkg"} 2.0' in text

    def test_absent_fields_export_no_sample(self):
        """A GPU without an energy counter has no energy sample at all (not 0)."""
        m = TelemetryMetrics()
        m.update(*gpu_msg(power_mw=1_000))
        text = self._scrape(m)
        assert "genai_gpu_power_watts{" in text
        assert "genai_gpu_energy_joules_total{" not in text
        assert "genai_gpu_temperature_celsius{" not in text


class TestReceive:
    """Inbox.drain over a real PUB/SUB pair on 127.0.0.1."""

    def _pair(self, zctx, endpoint):
        pub, sub = bind_pub(zctx, endpoint), connect_sub(zctx, endpoint, ["tel."])
        for _ in range(100):  # slow joiner: wait until a probe gets through
            pub.send_multipart([b"tel.probe", b"\x80"])
            if sub.poll(20):
                while sub.poll(20):
                    sub.recv_multipart()
                break
            time.sleep(0.01)
        else:
            raise AssertionError("subscription never became live")
        return pub, sub

    def test_drains_queued_messages_and_counts_bad_frames(self, zctx, endpoint):
        pub, sub = self._pair(zctx, endpoint)
        try:
            for i in range(5):
                pub.send_multipart([b"tel.gpu", encode(stamp({"gpu": i}))])
            pub.send_multipart([b"tel.gpu", b"\xc1not msgpack"])
            inbox, got = Inbox(), []
            for _ in range(20):
                got += list(inbox.drain(sub, timeout_ms=200))
                if len(got) == 5 and inbox.dropped_invalid == 1:
                    break
            assert [p["gpu"] for _, p in got] == [0, 1, 2, 3, 4]
            assert inbox.dropped_invalid == 1
            assert list(inbox.drain(sub, timeout_ms=50)) == []  # nothing queued: returns after the timeout
        finally:
            pub.close(linger=0)
            sub.close(linger=0)

    def test_batch_is_bounded(self, zctx, endpoint):
        pub, sub = self._pair(zctx, endpoint)
        try:
            for i in range(30):
                pub.send_multipart([b"tel.host", encode(stamp({"cpu_pct": float(i)}))])
            inbox = Inbox()
            assert sub.poll(2000)
            time.sleep(0.2)  # let all 30 arrive
            first = list(inbox.drain(sub, timeout_ms=1000, max_batch=10))
            rest = list(inbox.drain(sub, timeout_ms=1000, max_batch=100))
            assert len(first) == 10 and len(rest) == 20
        finally:
            pub.close(linger=0)
            sub.close(linger=0)


class TestRequestsView:
    """`python -m telemetry.tail --requests`: one readable line per collector event."""

    def test_lines_for_each_event(self):
        from telemetry.tail import request_line

        assert request_line("req.start", {"rid": "b/m/000-qa/short/1"}) == "start  b/m/000-qa/short/1"
        ok = request_line("req.end", {"rid": "r", "ok": True, "client": {"latency_s": 1.234, "first_token_s": 0.05},
                                      "api": {"eval_count": 64}})
        assert ok.startswith("ok     r") and "latency 1.23 s" in ok and "tokens 64" in ok
        bad = request_line("req.end", {"rid": "r", "ok": False, "error_kind": "timeout", "error": "no answer"})
        assert bad.startswith("FAILED r") and "timeout: no answer" in bad
        assert "INTERRUPTED" in request_line("batch.end", {"batch": "b", "ok": 1, "interrupted": True})
        assert request_line("tel.gpu", {"gpu": 0}) is None
        progress = request_line("req.progress", {"rid": "r", "tokens_so_far": 17, "tokens_basis": "chunks",
                                                 "chars_so_far": 80})
        assert progress == "tokens r  17 so far (chunks), 80 chars"

    def test_table_marks_a_source_below_its_target_rate(self):
        st = TailState()
        st.update("tel.hb", {"src": "t@h", "seq": 0, "sources": {
            "gpu0": {"achieved_hz": 64.0, "target_hz": 100.0, "dropped_ticks": 36, "rate_low": True},
            "host": {"achieved_hz": 10.0, "target_hz": 10.0, "dropped_ticks": 0, "rate_low": False}}})
        hb = next(line for line in st.render().splitlines() if line.startswith("hb: "))
        assert hb.count("BELOW TARGET RATE") == 1 and hb.index("BELOW") < hb.index("host")

    def test_retried_attempts_are_numbered(self):
        """A retried request sends req.first_token per attempt: the lines differ by their attempt number."""
        from telemetry.tail import request_line

        lines = [request_line("req.first_token", {"rid": "r", "kind": "content", "attempt": k}) for k in range(3)]
        assert lines == ["first  r  content  (attempt 1)", "first  r  content  (attempt 2)",
                         "first  r  content  (attempt 3)"]
        end = request_line("req.end", {"rid": "r", "ok": True, "client": {"latency_s": 1.0, "retries": 2}})
        assert "after 3 attempts" in end
        assert "attempts" not in request_line("req.end", {"rid": "r", "ok": True, "client": {"retries": 0}})

    def test_waiting_line_names_the_endpoint_and_what_to_start(self):
        from telemetry.tail import waiting_line

        assert waiting_line(["tcp://127.0.0.1:5556"], False) == (
            "waiting for telemetry on tcp://127.0.0.1:5556 … (needs the daemon (python -m telemetry); Ctrl-C stops)")
        assert "batch events on tcp://h:5557 …, nothing for 10 s" in waiting_line(["tcp://h:5557"], True, 10.2)
        assert "the measuring proxy (python -m collector.proxy ...)" in waiting_line(["tcp://h:5557"], True)

    def test_a_whole_answer_through_the_proxy_says_ttft_is_not_known(self):
        """A non-streamed request (req.start proxy.stream false) has no time to first token: its line says
        why instead of "ttft - s"; a streamed one keeps its number."""
        from telemetry.tail import NotStreamed, request_line

        ns = NotStreamed()
        events = [("req.start", {"rid": "a", "proxy": {"path": "/api/generate", "stream": False}}),
                  ("req.start", {"rid": "b", "proxy": {"path": "/api/generate", "stream": True}}),
                  ("req.end", {"rid": "a", "ok": True, "client": {"latency_s": 0.5}}),
                  ("req.end", {"rid": "b", "ok": True, "client": {"latency_s": 0.5, "first_token_s": 0.125}})]
        lines = [request_line(t, p, ns.update(t, p)) for t, p in events]
        assert "ttft n/a (not streamed)" in lines[2] and "ttft -" not in lines[2], lines[2]
        assert "ttft 0.125 s" in lines[3]
        assert ns.rids == {}  # forgotten at its end: bounded

    def test_requests_per_model_totals_with_energy_rows(self):
        from telemetry.tail import ModelTotals, request_line

        t = ModelTotals()
        t.update("req.start", {"rid": "r1", "model": "smol"})
        assert t.update("req.end", {"rid": "r1", "ok": True, "api": {"completion_tokens": 7}}) == "smol"
        # before its row comes the request's energy is unknown, not zero
        assert t.line("smol") == "  smol: 1 request(s), 7 tokens, 0.0 GPU J (1 awaiting energy)"
        row = {"rid": "r1", "energy_ready": True, "row": {"gpu_energy_j": 3.25, "j_per_token": 0.5}}
        assert request_line("ana.row", row) == "energy r1  3.25 J  0.5000 J/token"
        assert t.update("ana.row", row) == "smol" and t.update("ana.row", row) is None  # counted once
        assert t.line("smol") == "  smol: 1 request(s), 7 tokens, 3.2 GPU J"
        # a row without energy (failed request, no telemetry) is not awaited for ever
        t.update("req.start", {"rid": "r3", "model": "smol"})
        t.update("req.end", {"rid": "r3", "ok": False, "api": {}})
        assert t.update("ana.row", {"rid": "r3", "energy_ready": False, "reason": "no telemetry",
                                    "row": {"model": "smol"}}) == "smol"
        assert t.line("smol") == "  smol: 2 request(s), 7 tokens, 3.2 GPU J"
        assert "none: no telemetry" in request_line("ana.row", {"rid": "r2", "energy_ready": False,
                                                                "reason": "no telemetry"})


def test_log_lines_never_land_inside_a_progress_bar(monkeypatch):
    """Observed: log lines overwrote the progress bar. Each line now starts a line of its own."""
    import io
    import sys

    from tqdm import tqdm

    from shared.logs import configure_logging, get_logger

    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    configure_logging("info")
    bar = tqdm(total=4, file=sys.stderr, disable=False, ncols=60, mininterval=0)
    bar.update(1)
    get_logger("test").warning("model_skipped", model="m")
    bar.update(1)
    bar.close()
    segments = [seg for line in buf.getvalue().split("\n") for seg in line.split("\r")]
    logged = [seg for seg in segments if "model_skipped" in seg]
    assert len(logged) == 1 and logged[0].startswith("20") and "%|" not in logged[0]  # timestamp first, no bar
    assert any("%|" in seg for seg in segments)  # control: the bar was drawn
    monkeypatch.undo()
    configure_logging("info")  # later tests log to the real stderr again


class TestFleetMetrics:
    def _scrape(self, metrics: TelemetryMetrics) -> str:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(metrics)
        return generate_latest(reg).decode()

    def test_two_daemons_are_two_hosts_and_requests_count_on_the_server_host(self):
        """GPUs of two daemons keep apart by host; a request counts on the LLM server's host (base_url),
        on the collector's own host when the server is on loopback."""
        from shared.messages import BATCH_START, REQ_END, REQ_START

        m = TelemetryMetrics()
        for host in ("gpu-a", "gpu-b"):
            st = Stamper(f"telemetry@{host}").stamp
            m.update(TEL_GPU, st({"gpu": 0, "uuid": f"GPU-{host}", "name": "RTX 4090", "power_mw": 100_000}))
        remote, local = Stamper("collector@laptop").stamp, Stamper("collector@gpu-b").stamp
        m.update(BATCH_START, remote({"batch": "b1", "base_url": "http://gpu-a:11434"}))
        m.update(BATCH_START, local({"batch": "b2", "base_url": "http://127.0.0.1:11434"}))
        for stamp_, rid, ok in ((remote, "b1/r1", True), (remote, "b1/r2", False), (local, "b2/r1", True)):
            m.update(REQ_START, stamp_({"rid": rid, "model": "qwen3:4b"}))
            m.update(REQ_END, stamp_({"rid": rid, "ok": ok}))
        text = self._scrape(m)
        assert 'genai_gpu_power_watts{gpu="0",host="gpu-a",name="RTX 4090",simulated="false",uuid="GPU-gpu-a"} 100.0' in text
        assert 'host="gpu-b",name="RTX 4090",simulated="false",uuid="GPU-gpu-b"} 100.0' in text
        assert 'genai_requests_total{host="gpu-a",model="qwen3:4b",status="ok"} 1.0' in text
        assert 'genai_requests_total{host="gpu-a",model="qwen3:4b",status="failed"} 1.0' in text
        assert 'genai_requests_total{host="gpu-b",model="qwen3:4b",status="ok"} 1.0' in text
        assert 'host="laptop"' not in text

    def test_proxy_traffic_per_model_requests_tokens_and_joules(self):
        """req.end gives requests and tokens (whichever name the server used); ana.row rows give joules,
        each request's once although the live analyzer may publish its row twice (early, then final)."""
        from shared.messages import BATCH_START, REQ_END, REQ_START

        m = TelemetryMetrics()
        proxy, ana = Stamper("collector@box").stamp, Stamper("analyzer@box").stamp
        m.update(BATCH_START, proxy({"batch": "proxy_1", "base_url": "http://127.0.0.1:8080", "backend": "proxy"}))
        for rid, api in (("p/1", {"completion_tokens": 7}), ("p/2", {"timings": {"predicted_n": 5}})):
            m.update(REQ_START, proxy({"rid": rid, "model": "smol"}))
            m.update(REQ_END, proxy({"rid": rid, "ok": True, "api": api}))
        for final in (False, True):
            m.update("ana.row", ana({"rid": "p/1", "energy_ready": True, "final": final, "row": {"gpu_energy_j": 2.5}}))
        m.update("ana.row", ana({"rid": "p/2", "energy_ready": False, "reason": "no telemetry", "row": {}}))
        text = self._scrape(m)
        assert 'genai_requests_total{host="box",model="smol",status="ok"} 2.0' in text
        assert 'genai_request_tokens_total{host="box",model="smol"} 12.0' in text
        assert 'genai_request_energy_joules_total{host="box",model="smol"} 2.5' in text
