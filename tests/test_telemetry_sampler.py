"""GpuReader (readings -> tel.gpu body) against the scripted FakeGPU, and host process watching."""
from __future__ import annotations

import os

import psutil
import pytest
from structlog.testing import capture_logs

from telemetry.daemon import GpuTicker
from telemetry.gpu.base import GPULost, GPUTimeout
from telemetry.gpu.fake import FakeGPU
from telemetry.host import ProcessWatch, matches
from telemetry.sampler import GpuReader, slow_every

FAST_KEYS = {"power_mw", "energy_mj"}
SLOW_KEYS = {"util_gpu_pct", "util_mem_pct", "mem_used_mib", "mem_total_mib", "temp_c", "sm_clock_mhz",
             "pstate", "procs"}


class TestGpuReader:
    def test_fast_tick_reads_only_power_and_energy(self):
        """A fast tick carries power/energy; slow fields are not even queried."""
        g = FakeGPU(power_mw=123_000, energy_mj=456)
        body, errors = GpuReader(g).read(0, slow=False)
        assert errors == []
        assert body["power_mw"] == 123_000 and body["energy_mj"] == 456
        assert not SLOW_KEYS & body.keys()
        assert g.calls["temp_c"] == 0

    def test_slow_tick_reads_everything(self):
        body, _ = GpuReader(FakeGPU(procs_mib={4242: 512.0})).read(0, slow=True)
        assert FAST_KEYS | SLOW_KEYS <= body.keys()
        assert body["procs"] == {4242: 512.0}
        assert body["gpu"] == 0 and body["uuid"] == "FAKE-0" and body["power_kind"] == "instant"
        assert "simulated" not in body  # only the sim source says simulated

    def test_unsupported_quantity_is_absent_and_not_asked_again(self):
        """NotSupported leaves the key absent (never 0) and the getter is not called on later ticks."""
        g = FakeGPU(energy_mj=None)
        reader = GpuReader(g)
        for t in range(5):
            body, errors = reader.read(t, slow=False)
            assert "energy_mj" not in body and errors == []
        assert g.calls["energy_mj"] == 1
        assert reader.unsupported == {"energy"}

    def test_failed_read_is_named_in_errors_and_other_fields_still_read(self):
        """A lost GPU's power read fails: errors says so, energy is still read that tick."""
        body, errors = GpuReader(FakeGPU(power_mw=GPULost("power on GPU 0: gone"))).read(0, slow=False)
        assert body["errors"] == ["power: gpu_lost"]
        assert "power_mw" not in body and body["energy_mj"] == 0
        assert errors[0][0] == "power" and isinstance(errors[0][1], GPULost)

    def test_errors_are_per_tick(self):
        """A transient failure shows only on the tick it happened."""
        outcomes = iter([GPUTimeout("slow"), 5])

        def temp():
            v = next(outcomes)
            if isinstance(v, Exception):
                raise v
            return v

        reader = GpuReader(FakeGPU(temp_c=temp))
        first, _ = reader.read(0, slow=True)
        second, _ = reader.read(1, slow=True)
        assert first["errors"] == ["temp: timeout"] and "temp_c" not in first
        assert "errors" not in second and second["temp_c"] == 5
        assert reader.errors_total == 1

    def test_reader_passes_tick_time_to_the_gpu(self):
        g = FakeGPU()
        reader = GpuReader(g)
        reader.read(11, slow=False)
        reader.read(22, slow=False)
        assert g.ticks == [11, 22]


@pytest.mark.parametrize("fast,slow,every", [(100, 10, 10), (1000, 10, 100), (10, 10, 1), (5, 10, 1)])
def test_slow_every(fast, slow, every):
    """Slow fields are read every round(fast/slow) ticks, at least every tick."""
    assert slow_every(fast, slow) == every


def test_slow_every_rejects_zero():
    with pytest.raises(ValueError):
        slow_every(100, 0)


class TestProcessWatch:
    @pytest.mark.parametrize("name,cmdline,watch,hit", [
        ("ollama", [], "ollama", True),
        ("llama-server", ["/opt/llama-server", "-m", "x.gguf"], "llama-server", True),
        ("python3", ["python3", "-m", "vllm.entrypoints.openai.api_server"], "vllm", True),
        ("python3", ["python3", "-m", "pytest"], "vllm", False),
        ("bash", ["bash"], "ollama", False),
    ], ids=["by_name", "by_path", "vllm_module", "other_python", "unrelated"])
    def test_matches(self, name, cmdline, watch, hit):
        assert matches(name, cmdline, watch) is hit

    def test_reports_cpu_and_rss_of_a_watched_process(self):
        """Watching this test process's name finds it with its pid and a positive RSS."""
        me = psutil.Process(os.getpid())
        watch = ProcessWatch([me.name()])
        procs = watch.read()
        entry = procs[me.name()]
        assert os.getpid() in entry["pids"]
        assert entry["rss_mib"] > 0 and entry["cpu_pct"] >= 0.0

    def test_absent_when_nothing_matches(self):
        assert ProcessWatch(["no-such-program-xyz"]).read() == {}


class TestGpuTickerLogging:
    def test_a_gpu_failing_everything_is_logged_once_not_every_tick(self):
        """Fast and slow ticks alternate, every field fails: one warning per field, at its first failure."""
        lost = GPULost("gone")
        g = FakeGPU(**{k: lost for k in ("power_mw", "energy_mj", "util_pct", "mem_mib", "temp_c",
                                         "sm_clock_mhz", "pstate", "procs_mib")})
        ticker = GpuTicker(g, every=10)
        with capture_logs() as logs:
            for k in range(35):
                topic, body = ticker(k * 10, k)
        warnings = [e for e in logs if e["event"] == "gpu_read_failed"]
        assert len(warnings) == 1  # the first tick is slow: every field fails at once
        assert len(warnings[0]["errors"]) == 8
        assert topic == "tel.gpu" and len(body["errors"]) == 2  # k=34 is a fast tick

    def test_recovery_is_logged_once(self):
        state = {"fail": True}

        def power():
            if state["fail"]:
                raise GPUTimeout("slow driver")
            return 1_000

        ticker = GpuTicker(FakeGPU(power_mw=power), every=1)
        with capture_logs() as logs:
            ticker(0, 0)
            ticker(1, 1)
            state["fail"] = False
            ticker(2, 2)
            ticker(3, 3)
        assert [e["event"] for e in logs] == ["gpu_read_failed", "gpu_read_recovered"]
        assert logs[1]["fields"] == ["power"] and ticker.failing == {}
