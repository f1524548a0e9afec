"""End to end with real processes: the daemon, the recorder, tail and the Prometheus exporter
as ``python -m`` subprocesses, real ZeroMQ sockets on 127.0.0.1, real msgpack recordings.

GPU sources here are the simulated GPU (``--gpu sim``) and, for the NVML code path, the fake
``pynvml`` module (tests/fake_pynvml.py) put first on the subprocess's PYTHONPATH.
"""
from __future__ import annotations

import json
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import zmq

from shared.bus import CurveKeys, Inbox, connect_sub
from shared.messages import TEL_GPU, TEL_HB, TEL_HOST, validate
from shared.recording import read_recording
from tests import fake_pynvml
from tests.conftest import free_port
from tests.fault_helpers import procs, recorded, wait_for  # noqa: F401 - procs is a fixture

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def daemon_args(endpoint: str, *extra: str) -> list[str]:
    return ["telemetry", "--endpoint", endpoint, "--watch", "--no-rapl", *extra]


def collect(sock: zmq.Socket, seconds: float, until=None) -> list[tuple[str, dict]]:
    """Receive for up to ``seconds`` (or until ``until(msgs)`` is true); every receive has a timeout."""
    inbox, msgs = Inbox(), []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        msg = inbox.recv(sock, timeout_ms=100)
        if msg is not None:
            msgs.append(msg)
            if until is not None and until(msgs):
                break
    return msgs


def has_all_topics(msgs) -> bool:
    return {TEL_GPU, TEL_HOST, TEL_HB} <= {t for t, _ in msgs}


def seq_gaps(seqs: list[int]) -> int:
    return sum(b - a - 1 for a, b in zip(seqs, seqs[1:]) if b > a + 1)


class TestSimDaemon:
    def test_publishes_valid_gpu_host_and_heartbeat_messages(self, procs, zctx, endpoint):
        """--gpu sim: tel.gpu/tel.host/tel.hb arrive with valid envelopes, all marked simulated; exit 0."""
        daemon = procs.start(*daemon_args(endpoint, "--gpu", "sim", "--duration", "5"))
        sub = connect_sub(zctx, endpoint, ["tel."])
        try:
            msgs = collect(sub, 8, until=lambda m: has_all_topics(m) and sum(t == TEL_HB for t, _ in m) >= 2)
        finally:
            sub.close(linger=0)
        assert has_all_topics(msgs), f"got topics {sorted({t for t, _ in msgs})}; stderr: {procs.stderr(daemon)}"
        for topic, payload in msgs:
            validate(topic, payload, strict=True)  # every key the daemon sends is declared in the contract
            assert payload["src"].startswith("telemetry@")
        gpu = [p for t, p in msgs if t == TEL_GPU]
        assert all(p["simulated"] is True and p["power_kind"] == "sim" and p["power_mw"] >= 30_000 for p in gpu)
        assert any("temp_c" in p for p in gpu) and any("temp_c" not in p for p in gpu)  # slow fields every 10th
        hb = [p for t, p in msgs if t == TEL_HB][-1]
        assert hb["simulated"] is True and hb["gpu_source"] == "sim" and hb["gpus"] == 1
        assert set(hb["sources"]) == {"gpu0", "host"}
        assert {"target_hz", "achieved_hz", "dropped_ticks", "samples"} <= hb["sources"]["gpu0"].keys()
        assert hb["sources"]["gpu0"]["target_hz"] == 100.0
        assert daemon.wait(15) == 0
        assert "telemetry_start" in procs.stderr(daemon)

    @pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
    def test_signal_stops_cleanly_with_exit_code_0(self, procs, zctx, endpoint, sig):
        """SIGTERM/SIGINT end the daemon through its normal shutdown (stop line logged, rc 0)."""
        if sys.platform == "win32":
            pytest.skip("POSIX signals; Ctrl-C on Windows goes through the same SIGINT handler")
        daemon = procs.start(*daemon_args(endpoint, "--gpu", "sim"))
        sub = connect_sub(zctx, endpoint, ["tel.host"])
        try:
            assert collect(sub, 10, until=lambda m: True), "daemon never published"
        finally:
            sub.close(linger=0)
        daemon.send_signal(getattr(signal, sig))
        assert daemon.wait(10) == 0
        assert "telemetry_stop" in procs.stderr(daemon)

    def test_non_loopback_bind_without_keys_is_refused(self, procs):
        """Binding 0.0.0.0 without --curve-secret exits non-zero and says how to fix it."""
        daemon = procs.start(*daemon_args(f"tcp://0.0.0.0:{free_port()}", "--gpu", "none", "--duration", "2"))
        assert daemon.wait(15) == 2
        err = procs.stderr(daemon)
        assert "refusing to bind" in err and "--curve-secret" in err and "telemetry.keys" in err

    def test_curve_keys_encrypt_the_bus(self, procs, zctx, tmp_path, endpoint):
        """With --curve-secret only a subscriber holding the server's public key receives anything."""
        keys = procs.start("telemetry.keys", str(tmp_path / "keys"))
        assert keys.wait(15) == 0
        again = procs.start("telemetry.keys", str(tmp_path / "keys"))
        assert again.wait(15) == 2 and "--force" in procs.stderr(again)
        daemon = procs.start(*daemon_args(endpoint, "--gpu", "none", "--duration", "6",
                                          "--curve-secret", str(tmp_path / "keys" / "telemetry.key_secret")))
        curve = CurveKeys.from_secret_file(tmp_path / "keys" / "subscriber.key_secret",
                                           tmp_path / "keys" / "telemetry.key")
        secure = connect_sub(zctx, endpoint, ["tel."], curve=curve)
        plain = connect_sub(zctx, endpoint, ["tel."])
        try:
            got = collect(secure, 8, until=lambda m: len(m) >= 3)
            leaked = collect(plain, 0.5)
        finally:
            secure.close(linger=0)
            plain.close(linger=0)
        assert len(got) >= 3 and all(validate(t, p) for t, p in got)
        assert leaked == []
        assert daemon.wait(15) == 0

    def test_slow_subscriber_does_not_slow_the_daemon_and_loss_shows_as_seq_gaps(self, procs, zctx, endpoint):
        """A subscriber sleeping on every message loses messages (seq gaps); a fast one sees the full rate.

        Small kernel buffers (--send-buffer-kib, RCVBUF) make the loss show within seconds; with
        the defaults TCP loopback buffers MiBs per connection and the slow subscriber lags instead."""
        ep = endpoint
        daemon = procs.start(*daemon_args(ep, "--gpu", "sim", "--gpu-hz", "1000", "--send-hwm", "100",
                                          "--send-buffer-kib", "8", "--duration", "4"))
        fast = connect_sub(zctx, ep, ["tel."])
        slow = zctx.socket(zmq.SUB)
        slow.setsockopt(zmq.LINGER, 0)
        slow.setsockopt(zmq.RCVHWM, 10)
        slow.setsockopt(zmq.RCVBUF, 4096)
        slow.setsockopt(zmq.SUBSCRIBE, b"tel.")
        slow.connect(ep)
        inbox, fast_seqs, slow_seqs = Inbox(), [], []
        try:
            end = time.monotonic() + 6
            while time.monotonic() < end and daemon.poll() is None:
                while (m := inbox.recv(fast, timeout_ms=0)) is not None:
                    fast_seqs.append(m[1]["seq"])
                m = inbox.recv(slow, timeout_ms=50)
                if m is not None:
                    slow_seqs.append(m[1]["seq"])
                    time.sleep(0.01)  # the slow consumer
            while (m := inbox.recv(fast, timeout_ms=100)) is not None:
                fast_seqs.append(m[1]["seq"])
        finally:
            fast.close(linger=0)
            slow.close(linger=0)
        assert daemon.wait(15) == 0
        assert slow_seqs and seq_gaps(slow_seqs) > 0, "the slow subscriber should have lost messages"
        assert len(fast_seqs) > 5 * len(slow_seqs)
        assert seq_gaps(fast_seqs) < 0.01 * len(fast_seqs)


class TestRecorder:
    def test_recording_replays_with_no_seq_gaps_and_closes_on_sigint(self, procs, zctx, tmp_path, endpoint):
        """~3 s through `python -m telemetry.record`: header + messages, consecutive seq, clean stop."""
        daemon = procs.start(*daemon_args(endpoint, "--gpu", "sim", "--duration", "15"))
        out = tmp_path / "raw" / "stream.msgpack"
        rec = procs.start("telemetry.record", "--out", str(out), "--endpoint", endpoint)
        # ~3 s of messages on disk (100 Hz GPU + 10 Hz host + 1 Hz heartbeat), read as the recorder flushes
        wait_for(lambda: len(recorded(out)) >= 330, 20, "330 recorded messages")
        if sys.platform != "win32":
            rec.send_signal(signal.SIGINT)
        else:  # pragma: no cover - Windows has no SIGINT delivery to a child; CTRL_BREAK needs a new group
            rec.terminate()
        assert rec.wait(10) == 0, procs.stderr(rec)
        daemon.kill()
        header, items, problem = read_recording(out)
        assert problem is None, problem  # closed cleanly: no truncated tail
        assert header["kind"] == "header" and header["recorder"] == "telemetry.record"
        assert has_all_topics(items)
        for topic, payload in items:
            validate(topic, payload, strict=True)  # every key the daemon sends is declared in the contract
        by_src: dict[str, list[int]] = {}
        for _, payload in items:
            by_src.setdefault(payload["src"], []).append(payload["seq"])
        for src, seqs in by_src.items():
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap in {src}"
        assert len(items) >= 200  # ~3 s at 100 Hz + 10 Hz + 1 Hz
        assert "record_stop" in procs.stderr(rec)


class TestSubscribers:
    def test_tail_json_prints_n_valid_lines(self, procs, endpoint):
        """`telemetry.tail --json --count 5` prints five JSON messages and exits 0 by itself."""
        daemon = procs.start(*daemon_args(endpoint, "--gpu", "sim", "--duration", "10"))
        tail = procs.start("telemetry.tail", "--endpoint", endpoint, "--json", "--count", "5")
        assert tail.wait(20) == 0, procs.stderr(tail)
        lines = procs.stdout(tail).splitlines()
        assert len(lines) == 5
        for line in lines:
            msg = json.loads(line)
            topic = msg.pop("topic")
            validate(topic, msg)
        daemon.kill()

    @pytest.mark.parametrize("mode", [[], ["--json"], ["--requests"]])
    def test_tail_without_a_daemon_says_what_it_waits_for(self, procs, endpoint, mode):
        """Nothing publishes on the endpoint: tail says so at once (stderr; stdout stays empty, JSON-clean)
        instead of a blank screen, and ends with exit 0 at --duration."""
        tail = procs.start("telemetry.tail", "--endpoint", endpoint, "--duration", "1.5", *mode)
        assert tail.wait(20) == 0, procs.stderr(tail)
        what = "batch events" if mode == ["--requests"] else "telemetry"
        assert f"waiting for {what} on {endpoint} …" in procs.stderr(tail)
        assert procs.stdout(tail) == ""

    def test_tail_table_shows_the_simulated_gpu(self, procs, endpoint):
        daemon = procs.start(*daemon_args(endpoint, "--gpu", "sim", "--duration", "10"))
        tail = procs.start("telemetry.tail", "--endpoint", endpoint, "--duration", "2.5")
        assert tail.wait(20) == 0
        text = procs.stdout(tail)
        assert "[SIMULATED]" in text and "SIM-GPU" not in text.split("\n")[0]
        assert "host cpu" in text and "hb: gpu0" in text
        daemon.kill()

    def test_prometheus_exporter_serves_live_gauges_over_http(self, procs, endpoint):
        """Scrape /metrics: GPU power gauge labelled simulated="true", energy counter, host CPU."""
        port = free_port()
        daemon = procs.start(*daemon_args(endpoint, "--gpu", "sim", "--duration", "15"))
        exporter = procs.start("telemetry.prometheus", "--port", str(port), "--endpoint", endpoint)
        text, deadline = "", time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    text = resp.read().decode("utf-8")
            except OSError:
                text = ""
            if "genai_gpu_power_watts{" in text and "genai_gpu_temperature_celsius{" in text \
                    and "genai_telemetry_achieved_hz{" in text:
                break
            time.sleep(0.2)
        labels = re.search(r'genai_gpu_power_watts\{([^}]*)\}', text).group(1)
        assert 'gpu="0"' in labels and 'simulated="true"' in labels and 'uuid="SIM-GPU-0000"' in labels, labels
        assert 'host="' in labels and 'host=""' not in labels  # the daemon's host, from its publisher id
        assert f'genai_gpu_energy_joules_total{{{labels}}}' in text
        assert "genai_host_cpu_percent{host=" in text and re.search(r"genai_telemetry_simulated\{host=\"[^\"]+\"\} 1.0", text)
        assert "# TYPE genai_gpu_energy_joules_total counter" in text
        exporter.send_signal(signal.SIGTERM if sys.platform != "win32" else signal.CTRL_BREAK_EVENT)
        assert exporter.wait(10) == 0
        daemon.kill()


class TestNvmlSubprocess:
    def _env(self, tmp_path, spec: dict) -> tuple[dict, list[Path]]:
        shim_dir = tmp_path / "shim"
        shim_dir.mkdir()
        fake_pynvml.write_shim(shim_dir)
        return {"FAKE_PYNVML": json.dumps(spec)}, [shim_dir, TESTS]

    def test_daemon_keeps_sampling_the_other_gpu_when_one_is_lost(self, procs, zctx, tmp_path, endpoint):
        """--gpu nvml over the fake pynvml: GPU 1 is lost after 20 reads, GPU 0 keeps normal samples."""
        env, path = self._env(tmp_path, {"devices": [
            {"uuid": "GPU-0", "instant": True, "energy_mj": 1000, "energy_step_mj": 5},
            {"uuid": "GPU-1", "instant": False, "energy_mj": None, "arch": fake_pynvml.NVML_DEVICE_ARCH_ADA,
             "fail_after": {"nvmlDeviceGetPowerUsage": [20, fake_pynvml.NVML_ERROR_GPU_IS_LOST]}},
        ]})
        daemon = procs.start(*daemon_args(endpoint, "--gpu", "nvml", "--duration", "4"), env=env, pythonpath=path)
        sub = connect_sub(zctx, endpoint, ["tel.gpu", "tel.hb"])
        try:
            msgs = collect(sub, 8, until=lambda m: sum(t == TEL_HB for t, _ in m) >= 2)
        finally:
            sub.close(linger=0)
        assert daemon.wait(15) == 0, procs.stderr(daemon)
        g0 = [p for t, p in msgs if t == TEL_GPU and p["gpu"] == 0]
        g1 = [p for t, p in msgs if t == TEL_GPU and p["gpu"] == 1]
        assert g0 and all(p["power_kind"] == "instant" and "errors" not in p and "energy_mj" in p for p in g0)
        assert g1 and g1[0]["power_kind"] == "average_1s" and all("energy_mj" not in p for p in g1)
        assert g1[-1]["errors"] == ["power: gpu_lost"]
        hb = [p for t, p in msgs if t == TEL_HB][-1]
        assert hb["gpu_source"] == "nvml" and hb["simulated"] is False and hb["gpus"] == 2
        err = procs.stderr(daemon)
        assert err.count("gpu_read_failed") == 1  # logged when it starts, not on every tick
        assert "nvmlDeviceGetPowerUsage on GPU 1: GPU is lost" in err

    def test_explicit_nvml_without_driver_exits_with_a_clear_error(self, procs, tmp_path, endpoint):
        env, path = self._env(tmp_path, {"init_error": fake_pynvml.NVML_ERROR_DRIVER_NOT_LOADED})
        daemon = procs.start(*daemon_args(endpoint, "--gpu", "nvml", "--duration", "2"), env=env, pythonpath=path)
        assert daemon.wait(15) == 2
        assert "--gpu sim" in procs.stderr(daemon)

    def test_auto_without_driver_runs_host_only_and_says_so(self, procs, zctx, tmp_path, endpoint):
        """--gpu auto with no NVML: a warning, no tel.gpu at all (never a pretend GPU), gpu_source none."""
        env, path = self._env(tmp_path, {"init_error": fake_pynvml.NVML_ERROR_DRIVER_NOT_LOADED})
        daemon = procs.start(*daemon_args(endpoint, "--duration", "3"), env=env, pythonpath=path)
        sub = connect_sub(zctx, endpoint, ["tel."])
        try:
            msgs = collect(sub, 6, until=lambda m: any(t == TEL_HB for t, _ in m))
        finally:
            sub.close(linger=0)
        assert daemon.wait(15) == 0
        assert not [t for t, _ in msgs if t == TEL_GPU]
        hb = [p for t, p in msgs if t == TEL_HB][-1]
        assert hb["gpu_source"] == "none" and hb["gpus"] == 0 and hb["simulated"] is False
        assert "no_gpu" in procs.stderr(daemon)
