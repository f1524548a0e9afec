"""telemetry/gpu/nvml.py through its real code path, with a fake ``pynvml`` module underneath.

No NVIDIA GPU is needed: tests/fake_pynvml.py has the same functions, constants and error
classes as nvidia-ml-py and answers from scripted devices.
"""
from __future__ import annotations

import sys
import threading
import time

import pytest
from structlog.testing import capture_logs

from shared.bus import Inbox, connect_sub
from shared.messages import TEL_GPU, TEL_HB, TEL_HOST, validate
from telemetry.daemon import Daemon, DaemonConfig
from telemetry.gpu.base import GPUBackendUnavailable, GPUError, GPULost, NoPermission, NotSupported
from telemetry.gpu.nvml import NvmlBackend
from telemetry.host import HostReader
from telemetry.sampler import GpuReader
from tests import fake_pynvml as fake


@pytest.fixture
def nvml(monkeypatch):
    """Install the fake pynvml; returns a function that sets up devices and opens the backend."""
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    backends = []

    def open_with(*devices, init_error=None):
        fake.reset(list(devices), init_error=init_error)
        backend = NvmlBackend()
        backends.append(backend)
        return backend

    yield open_with
    for b in backends:
        b.shutdown()
    fake.reset([])


class TestPowerKind:
    def test_instant_field_is_preferred(self, nvml):
        """Where NVML_FI_DEV_POWER_INSTANT answers, power comes from it and power_kind is 'instant'."""
        gpu = nvml(fake.FakeDevice(power_mw=300_000, instant=True, instant_mw=412_345)).gpus[0]
        assert gpu.power_kind == "instant"
        assert gpu.power_mw() == 412_345
        assert fake._devices[0].calls["nvmlDeviceGetPowerUsage"] == 0

    @pytest.mark.parametrize("arch,name,kind", [
        (fake.NVML_DEVICE_ARCH_HOPPER, "NVIDIA H100 80GB HBM3", "average_1s"),
        (fake.NVML_DEVICE_ARCH_ADA, "NVIDIA GeForce RTX 4090", "average_1s"),
        (fake.NVML_DEVICE_ARCH_AMPERE, "NVIDIA A100-SXM4-40GB", "instant"),
        (fake.NVML_DEVICE_ARCH_VOLTA, "Tesla V100-SXM2-16GB", "instant"),
        (fake.NVML_DEVICE_ARCH_UNKNOWN, "Mystery", "unknown"),
    ], ids=["hopper", "ada", "ga100", "volta", "unknown_arch"])
    def test_usage_call_kind_follows_the_architecture(self, nvml, arch, name, kind):
        """Without the instant field, the usage call is averaged over 1 s on Ampere-and-newer except GA100."""
        gpu = nvml(fake.FakeDevice(name=name, arch=arch, instant=False, power_mw=222_000)).gpus[0]
        assert gpu.power_kind == kind
        assert gpu.power_mw() == 222_000

    def test_architecture_query_failing_gives_unknown(self, nvml):
        dev = fake.FakeDevice(instant=False, fail={"nvmlDeviceGetArchitecture": fake.NVML_ERROR_NOT_SUPPORTED})
        assert nvml(dev).gpus[0].power_kind == "unknown"


class TestReadings:
    def test_all_quantities_in_their_units(self, nvml):
        """Bytes become MiB, pstate becomes 'P<n>', processes without a usage figure are left out."""
        dev = fake.FakeDevice(util=(77, 33), mem_b=(3 << 30, 80 << 30), temp_c=61, sm_clock_mhz=1980, pstate=2,
                              procs=[(1234, 512 << 20), (999, None)], energy_mj=5_000, power_limit_mw=300_000)
        body, errors = GpuReader(nvml(dev).gpus[0]).read(0, slow=True)
        assert errors == []
        assert (body["util_gpu_pct"], body["util_mem_pct"]) == (77, 33)
        assert (body["mem_used_mib"], body["mem_total_mib"]) == (3072.0, 81920.0)
        assert (body["temp_c"], body["sm_clock_mhz"], body["pstate"]) == (61, 1980, "P2")
        assert body["procs"] == {1234: 512.0}
        assert body["energy_mj"] == 5_000 and body["uuid"] == "GPU-fake-0"
        assert body["power_limit_w"] == 300.0  # the enforced limit: a user cap (nvidia-smi -pl) shows here
        assert body["driver"] == fake.nvmlSystemGetDriverVersion()

    def test_gpu_without_energy_counter_has_energy_absent(self, nvml):
        """NVMLError_NotSupported on the energy counter -> key absent on every tick, never 0."""
        reader = GpuReader(nvml(fake.FakeDevice(energy_mj=None)).gpus[0])
        bodies = [reader.read(t, slow=False)[0] for t in range(3)]
        assert all("energy_mj" not in b and "errors" not in b for b in bodies)
        assert all(b["power_mw"] == 150_000 for b in bodies)

    def test_energy_counter_advances(self, nvml):
        reader = GpuReader(nvml(fake.FakeDevice(energy_mj=100, energy_step_mj=7)).gpus[0])
        assert [reader.read(t, slow=False)[0]["energy_mj"] for t in range(3)] == [100, 107, 114]

    def test_gpu_lost_mid_run_on_one_gpu_leaves_the_other_readable(self, nvml):
        """From its 3rd power read GPU 1 is lost: its ticks name the error, GPU 0 reads on."""
        backend = nvml(fake.FakeDevice(uuid="GPU-a"),
                       fake.FakeDevice(uuid="GPU-b", instant=False,
                                       fail_after={"nvmlDeviceGetPowerUsage": (3, fake.NVML_ERROR_GPU_IS_LOST)}))
        r0, r1 = (GpuReader(g) for g in backend.gpus)
        for t in range(5):
            b0, e0 = r0.read(t, slow=False)
            b1, e1 = r1.read(t, slow=False)
            assert b0["power_mw"] == 150_000 and not e0
        assert b1["errors"] == ["power: gpu_lost"] and "power_mw" not in b1
        assert e1[0][0] == "power" and isinstance(e1[0][1], GPULost) and "GPU 1" in str(e1[0][1])
        assert r1.errors_total == 3

    @pytest.mark.parametrize("code,exc_type", [
        (fake.NVML_ERROR_NO_PERMISSION, NoPermission),
        (fake.NVML_ERROR_NOT_SUPPORTED, NotSupported),
        (fake.NVML_ERROR_GPU_IS_LOST, GPULost),
        (fake.NVML_ERROR_UNKNOWN, GPUError),
    ])
    def test_nvml_errors_map_to_project_exceptions(self, nvml, code, exc_type):
        """Each NVML error code becomes its project exception, chaining the NVML original."""
        gpu = nvml(fake.FakeDevice(fail={"nvmlDeviceGetTemperature": code})).gpus[0]
        with pytest.raises(exc_type) as info:
            gpu.temp_c()
        assert isinstance(info.value.__cause__, fake.NVMLError)
        assert "nvmlDeviceGetTemperature" in str(info.value)


class TestBackend:
    def test_init_failure_says_what_to_do(self, nvml):
        """No driver: a clear error pointing at --gpu sim / --gpu none."""
        with pytest.raises(GPUBackendUnavailable, match="--gpu sim"):
            nvml(init_error=fake.NVML_ERROR_DRIVER_NOT_LOADED)

    def test_missing_pynvml_module_is_unavailable(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
        with pytest.raises(GPUBackendUnavailable, match="nvidia-ml-py"):
            NvmlBackend()

    def test_gpu_lost_before_start_is_skipped_and_the_others_open(self, nvml):
        """A GPU whose handle cannot be had is listed in ``skipped`` with the reason; the rest are sampled."""
        backend = nvml(fake.FakeDevice(uuid="GPU-a"),
                       fake.FakeDevice(uuid="GPU-b", fail={"nvmlDeviceGetHandleByIndex": fake.NVML_ERROR_GPU_IS_LOST}),
                       fake.FakeDevice(uuid="GPU-c"))
        assert [(g.index, g.uuid) for g in backend.gpus] == [(0, "GPU-a"), (2, "GPU-c")]
        assert backend.skipped[0][0] == 1 and "GPU is lost" in backend.skipped[0][1]

    def test_enumerates_every_device(self, nvml):
        backend = nvml(fake.FakeDevice(uuid="GPU-a"), fake.FakeDevice(uuid="GPU-b", name="NVIDIA L4"))
        assert [(g.index, g.uuid) for g in backend.gpus] == [(0, "GPU-a"), (1, "GPU-b")]
        assert backend.gpus[1].name == "NVIDIA L4"


def _collect(sock, seconds: float) -> list[tuple[str, dict]]:
    inbox, out = Inbox(), []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        msg = inbox.recv(sock, timeout_ms=100)
        if msg is not None:
            out.append(msg)
    return out


@pytest.fixture
def run_daemon(zctx, endpoint):
    """Start a Daemon in a thread on a real PUB socket; stop and join it at teardown."""
    started = []

    def start(gpus, **cfg):
        stop = threading.Event()
        daemon = Daemon(DaemonConfig(endpoint=endpoint, watch=(), rapl_root=None, **cfg), gpus, "nvml",
                        host=HostReader(watch=(), rapl_root=None), ctx=zctx)
        th = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
        th.start()
        started.append((stop, th))
        assert daemon.started.wait(5), "daemon did not start"
        return daemon

    yield start
    for stop, th in started:
        stop.set()
        th.join(5)
        assert not th.is_alive(), "daemon thread did not stop"


class TestDaemonWithNvml:
    def test_stuck_nvml_call_costs_only_its_own_ticks(self, nvml, run_daemon, zctx, endpoint):
        """GPU 1's power call hangs: GPU 0, tel.host and tel.hb keep flowing; GPU 1's ticks count as dropped."""
        release = threading.Event()
        backend = nvml(fake.FakeDevice(uuid="GPU-ok"),
                       fake.FakeDevice(uuid="GPU-stuck", instant=False, hang={"nvmlDeviceGetPowerUsage": release}))
        sub = connect_sub(zctx, endpoint, ["tel."])
        try:
            run_daemon(backend.gpus, gpu_hz=50, host_hz=10, heartbeat_s=0.3)
            msgs = _collect(sub, 1.5)
        finally:
            release.set()
            sub.close(linger=0)
        topics = [t for t, _ in msgs]
        gpu_uuids = {p["uuid"] for t, p in msgs if t == TEL_GPU}
        assert gpu_uuids == {"GPU-ok"}
        assert topics.count(TEL_HOST) >= 3 and topics.count(TEL_HB) >= 2
        last_hb = [p for t, p in msgs if t == TEL_HB][-1]
        assert last_hb["sources"]["gpu1"]["dropped_ticks"] > 0
        assert last_hb["sources"]["gpu0"]["samples"] > last_hb["sources"]["gpu1"]["samples"]
        for t, p in msgs:
            validate(t, p)

    def test_gpu_lost_mid_run_is_logged_and_reported_not_a_crash(self, nvml, run_daemon, zctx, endpoint):
        """After GPU 0 is lost its messages carry errors (logged once), GPU 1 keeps normal samples."""
        backend = nvml(fake.FakeDevice(uuid="GPU-lost", instant=False,
                                       fail_after={"nvmlDeviceGetPowerUsage": (5, fake.NVML_ERROR_GPU_IS_LOST)}),
                       fake.FakeDevice(uuid="GPU-fine"))
        sub = connect_sub(zctx, endpoint, ["tel.gpu", "tel.hb"])
        try:
            with capture_logs() as logs:
                run_daemon(backend.gpus, gpu_hz=50, heartbeat_s=0.3)
                msgs = _collect(sub, 1.2)
        finally:
            sub.close(linger=0)
        lost = [p for t, p in msgs if t == TEL_GPU and p["uuid"] == "GPU-lost"]
        fine = [p for t, p in msgs if t == TEL_GPU and p["uuid"] == "GPU-fine"]
        assert lost and all(p.get("errors") == ["power: gpu_lost"] for p in lost[-3:])
        assert fine and all("errors" not in p and p["power_mw"] == 150_000 for p in fine)
        failures = [e for e in logs if e["event"] == "gpu_read_failed"]
        assert len(failures) == 1 and failures[0]["gpu"] == 0
        hb = [p for t, p in msgs if t == TEL_HB][-1]
        assert hb["sources"]["gpu0"]["errors"] > 0 and hb["sources"]["gpu1"]["errors"] == 0


class TestFakeMatchesRealPynvml:
    """The fake is only worth something if it has the real module's names and values."""

    def test_every_fake_function_and_constant_exists_in_nvidia_ml_py_with_the_same_value(self):
        import importlib

        real = importlib.import_module("pynvml")  # nvidia-ml-py imports without a driver
        assert real is not fake
        names = [n for n in dir(fake) if n.startswith(("nvml", "NVML_", "NVMLError"))]
        assert len(names) > 40
        for name in names:
            assert hasattr(real, name), f"fake_pynvml.{name} does not exist in nvidia-ml-py"
            if name.startswith("NVML_"):
                assert getattr(real, name) == getattr(fake, name), name
        assert real.NVMLError_GpuIsLost(  # same error-class scheme: subclass per code, .value = code
        ).value == fake.NVMLError_GpuIsLost().value == fake.NVML_ERROR_GPU_IS_LOST

    def test_nvml_backend_calls_only_functions_the_fake_provides(self):
        """Every ``nv.<name>`` used by telemetry/gpu/nvml.py is answered by the fake."""
        import re
        from pathlib import Path

        import telemetry.gpu.nvml as mod

        used = set(re.findall(r"\bnv\.(\w+)", Path(mod.__file__).read_text(encoding="utf-8")))
        used |= set(re.findall(r"self\._nv\.(\w+)", Path(mod.__file__).read_text(encoding="utf-8")))
        missing = sorted(n for n in used if not hasattr(fake, n))
        assert used and missing == []
