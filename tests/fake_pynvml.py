"""A fake ``pynvml`` module: the same functions, constants and error classes as nvidia-ml-py,
answering from scripted devices instead of a driver. Used to test telemetry/gpu/nvml.py (the real
NVML code path) on machines without an NVIDIA GPU.

In-process: ``monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml)`` after ``reset([...])``.
For a subprocess: write a ``pynvml.py`` shim (see :func:`write_shim`) into a directory on
PYTHONPATH and describe the devices as JSON in the ``FAKE_PYNVML`` environment variable.
"""
from __future__ import annotations

import json
import math
import os
import random
import string
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

# Constants with the same values as nvidia-ml-py.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_UNKNOWN = 999
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_FI_DEV_POWER_INSTANT = 186
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG = 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
NVML_VALUE_TYPE_SIGNED_INT = 5
NVML_VALUE_TYPE_UNSIGNED_SHORT = 6
NVML_DEVICE_ARCH_VOLTA = 5
NVML_DEVICE_ARCH_TURING = 6
NVML_DEVICE_ARCH_AMPERE = 7
NVML_DEVICE_ARCH_ADA = 8
NVML_DEVICE_ARCH_HOPPER = 9
NVML_DEVICE_ARCH_UNKNOWN = 0xFFFFFFFF


class NVMLError(Exception):
    """Like pynvml's: ``NVMLError(code)`` builds the subclass for that code; ``.value`` is the code."""

    _valClassMapping: dict[int, type] = {}

    def __new__(cls, value):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, *args):
        super().__init__(*args)

    def __str__(self):
        return f"fake NVML error {self.value}"


def _make_error_classes() -> None:
    module = sys.modules[__name__]
    for name in [n for n in dir(module) if n.startswith("NVML_ERROR_")]:
        code = getattr(module, name)
        cls_name = "NVMLError_" + string.capwords(name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        cls = type(cls_name, (NVMLError,), {"__new__": (lambda c: lambda typ, *a: NVMLError.__new__(typ, c))(code)})
        NVMLError._valClassMapping[code] = cls
        setattr(module, cls_name, cls)


_make_error_classes()


# ---------------------------------------------------------------------------------------------
# Power traces with an exact integral, played against the monotonic clock (shared by every
# process on the machine, so a benchmark can compute the truth for any window it picks).

def trace_power_w(tr: dict, t_s: float) -> float:
    """True board power (W) of trace ``tr`` at ``t_s`` seconds after its ``t0_ns``.

    Shapes: square, ramp (sawtooth), sine, and ``pulses``: ``idle_w`` with rectangular pulses
    ``[[start_s, length_s, watts], ...]`` (sorted, disjoint, inside ``period_s``) repeated every
    period: decode steps and prefills of 10–100 ms, alone or in trains."""
    shape, period = tr["shape"], tr["period_s"]
    if shape == "square":  # high for the first half of each period
        return tr["high_w"] if (t_s % period) < period / 2 else tr["low_w"]
    if shape == "ramp":  # sawtooth: low → high over each period, then back down at once
        return tr["low_w"] + (tr["high_w"] - tr["low_w"]) * ((t_s % period) / period)
    if shape == "sine":
        return tr["mean_w"] + tr["amp_w"] * math.sin(2 * math.pi * t_s / period)
    if shape == "pulses":
        r = t_s % period
        return next((w for start, length, w in tr["pulses"] if start <= r < start + length), tr["idle_w"])
    raise ValueError(f"unknown trace shape {shape!r}: square | ramp | sine | pulses")


def trace_energy_j(tr: dict, t_s: float) -> float:
    """Exact ∫ power from 0 to ``t_s`` (J) of trace ``tr``."""
    shape, period = tr["shape"], tr["period_s"]
    k, r = divmod(t_s, period)
    if shape == "square":
        half = period / 2
        return k * half * (tr["high_w"] + tr["low_w"]) + min(r, half) * tr["high_w"] + max(r - half, 0.0) * tr["low_w"]
    if shape == "ramp":
        lo, hi = tr["low_w"], tr["high_w"]
        return k * period * (lo + hi) / 2 + lo * r + (hi - lo) * r * r / (2 * period)
    if shape == "sine":
        w = 2 * math.pi / period
        return tr["mean_w"] * t_s + tr["amp_w"] * (1 - math.cos(w * t_s)) / w
    if shape == "pulses":
        return k * _pulses_energy_j(tr, period) + _pulses_energy_j(tr, r)
    raise ValueError(f"unknown trace shape {shape!r}: square | ramp | sine | pulses")


def _pulses_energy_j(tr: dict, r: float) -> float:
    """∫ power over [0, r] of one period of a ``pulses`` trace (r ≤ period)."""
    extra = sum((w - tr["idle_w"]) * min(max(r - start, 0.0), length) for start, length, w in tr["pulses"])
    return tr["idle_w"] * r + extra


def trace_last_refresh_s(t_s: float, period_s: float, phase_s: float) -> float:
    """The last refresh instant at or before ``t_s`` of a reading refreshed every ``period_s``."""
    return phase_s + math.floor((t_s - phase_s) / period_s) * period_s


class TracePlayer:
    """Readings of a GPU playing ``tr``: the energy counter holds the exact integral at its last
    refresh (every ``refresh_s``, phase ``refresh_phase_s``); power is held between its own
    refreshes (``hold_s``, ``hold_phase_s``), ``instant`` (the value then) or ``average_1s`` (the
    mean over the second before), plus Gaussian noise of ``noise_w`` (one draw per refresh)."""

    def __init__(self, tr: dict):
        self.tr = tr
        self.t0_ns = int(tr["t0_ns"])

    def now_s(self) -> float:
        return (time.monotonic_ns() - self.t0_ns) / 1e9

    def energy_mj(self) -> int:
        tr = self.tr
        t_r = trace_last_refresh_s(self.now_s(), tr["refresh_s"], tr.get("refresh_phase_s", 0.0))
        return int(tr.get("base_mj", 1_000_000) + round(trace_energy_j(tr, t_r) * 1000.0))

    def power_mw(self) -> int:
        tr = self.tr
        hold = tr.get("hold_s", 0.0)
        t = self.now_s()
        t_h = trace_last_refresh_s(t, hold, tr.get("hold_phase_s", 0.0)) if hold > 0 else t
        if tr.get("kind", "instant") == "average_1s":
            w = trace_energy_j(tr, t_h) - trace_energy_j(tr, t_h - 1.0)
        else:
            w = trace_power_w(tr, t_h)
        noise = tr.get("noise_w", 0.0)
        if noise:
            w += random.Random(round(t_h * 1e6) ^ tr.get("seed", 0)).gauss(0.0, noise)
        return int(round(max(w, 0.0) * 1000.0))


class FakeDevice:
    """One scripted GPU. ``energy_mj=None`` / ``instant=False`` model GPUs without those readings.

    ``fail``: {function name: NVML error code} raised on every call; ``fail_after``: {function
    name: (n, code)} raised from the n-th call on (an error mid-run); ``hang``: {function name:
    threading.Event} blocks that call until the event is set (a stuck driver call). ``trace``: power
    and energy counter played from a trace against the monotonic clock (see TracePlayer)."""

    def __init__(self, name: str = "NVIDIA H100 80GB HBM3", uuid: str = "GPU-fake-0",
                 arch: int = NVML_DEVICE_ARCH_HOPPER, power_mw: int | Callable[[], int] = 150_000,
                 instant: bool = True, instant_mw: int | None = None,
                 energy_mj: int | Callable[[], int] | None = 1_000_000, energy_step_mj: int = 0,
                 util: tuple[int, int] = (40, 10), mem_b: tuple[int, int] = (2 << 30, 80 << 30),
                 temp_c: int = 55, sm_clock_mhz: int = 1755, pstate: int = 0, power_limit_mw: int = 700_000,
                 procs: list[tuple[int, int | None]] = (), fail: dict[str, int] | None = None,
                 fail_after: dict[str, tuple[int, int]] | None = None, hang: dict[str, threading.Event] | None = None,
                 trace: dict | None = None):
        self.name, self.uuid, self.arch = name, uuid, arch
        if trace is not None:  # power and counter from a played trace (see TracePlayer)
            player = TracePlayer(trace)
            power_mw, energy_mj, energy_step_mj = player.power_mw, player.energy_mj, 0
            instant = trace.get("kind", "instant") == "instant"
        self.power_mw, self.instant, self.instant_mw = power_mw, instant, instant_mw
        self.energy_mj, self.energy_step_mj = energy_mj, energy_step_mj
        self.util, self.mem_b, self.temp_c, self.sm_clock_mhz, self.pstate = util, mem_b, temp_c, sm_clock_mhz, pstate
        self.power_limit_mw = power_limit_mw
        self.procs = list(procs)
        self.fail = dict(fail or {})
        self.fail_after = {k: tuple(v) for k, v in (fail_after or {}).items()}
        self.hang = dict(hang or {})
        self.calls: Counter[str] = Counter()

    def enter(self, fn: str) -> None:
        """Bookkeeping run at the start of every fake NVML call on this device."""
        self.calls[fn] += 1
        if fn in self.hang:
            self.hang[fn].wait()
        if fn in self.fail:
            raise NVMLError(self.fail[fn])
        if fn in self.fail_after and self.calls[fn] >= self.fail_after[fn][0]:
            raise NVMLError(self.fail_after[fn][1])


_devices: list[FakeDevice] = []
_init_error: int | None = None
_initialised = False


def reset(devices: list[FakeDevice] | None = None, init_error: int | None = None) -> None:
    """Install the scripted devices (and optionally make nvmlInit fail with ``init_error``)."""
    global _devices, _init_error, _initialised
    _devices = list(devices or [])
    _init_error = init_error
    _initialised = False


def configure_from_env(var: str = "FAKE_PYNVML") -> None:
    """Read ``{"devices": [FakeDevice kwargs...], "init_error": code}`` from an env variable."""
    spec = json.loads(os.environ.get(var, "{}"))
    reset([FakeDevice(**d) for d in spec.get("devices", [])], spec.get("init_error"))


def write_shim(directory: Path) -> Path:
    """Write ``pynvml.py`` into ``directory`` that loads this fake configured from $FAKE_PYNVML."""
    shim = Path(directory) / "pynvml.py"
    shim.write_text("import sys\nimport fake_pynvml\nfake_pynvml.configure_from_env()\n"
                    "sys.modules['pynvml'] = fake_pynvml\n", encoding="utf-8")
    return shim


def _value(v):
    return v() if callable(v) else v


def _check_init() -> None:
    if not _initialised:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)


def nvmlInit() -> None:
    global _initialised
    if _init_error is not None:
        raise NVMLError(_init_error)
    _initialised = True


def nvmlShutdown() -> None:
    global _initialised
    _check_init()
    _initialised = False


def nvmlSystemGetDriverVersion() -> str:
    return "999.99-fake"


def nvmlDeviceGetCount() -> int:
    _check_init()
    return len(_devices)


def nvmlDeviceGetHandleByIndex(index: int) -> FakeDevice:
    _check_init()
    if not 0 <= index < len(_devices):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    _devices[index].enter("nvmlDeviceGetHandleByIndex")
    return _devices[index]


def nvmlDeviceGetName(h: FakeDevice) -> str:
    h.enter("nvmlDeviceGetName")
    return h.name


def nvmlDeviceGetUUID(h: FakeDevice) -> str:
    h.enter("nvmlDeviceGetUUID")
    return h.uuid


def nvmlDeviceGetArchitecture(h: FakeDevice) -> int:
    h.enter("nvmlDeviceGetArchitecture")
    return h.arch


def nvmlDeviceGetPowerUsage(h: FakeDevice) -> int:
    h.enter("nvmlDeviceGetPowerUsage")
    return int(_value(h.power_mw))


def nvmlDeviceGetFieldValues(h: FakeDevice, field_ids: list) -> list:
    h.enter("nvmlDeviceGetFieldValues")
    out = []
    for fid in field_ids:
        if fid == NVML_FI_DEV_POWER_INSTANT and h.instant:
            mw = h.instant_mw if h.instant_mw is not None else _value(h.power_mw)
            out.append(SimpleNamespace(fieldId=fid, nvmlReturn=NVML_SUCCESS, valueType=NVML_VALUE_TYPE_UNSIGNED_INT,
                                       value=SimpleNamespace(uiVal=int(mw))))
        else:
            out.append(SimpleNamespace(fieldId=fid, nvmlReturn=NVML_ERROR_NOT_SUPPORTED,
                                       valueType=NVML_VALUE_TYPE_UNSIGNED_INT, value=SimpleNamespace(uiVal=0)))
    return out


def nvmlDeviceGetTotalEnergyConsumption(h: FakeDevice) -> int:
    h.enter("nvmlDeviceGetTotalEnergyConsumption")
    if h.energy_mj is None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    n = h.calls["nvmlDeviceGetTotalEnergyConsumption"]
    return int(_value(h.energy_mj)) + h.energy_step_mj * (n - 1)


def nvmlDeviceGetUtilizationRates(h: FakeDevice):
    h.enter("nvmlDeviceGetUtilizationRates")
    return SimpleNamespace(gpu=h.util[0], memory=h.util[1])


def nvmlDeviceGetMemoryInfo(h: FakeDevice):
    h.enter("nvmlDeviceGetMemoryInfo")
    used, total = h.mem_b
    return SimpleNamespace(used=used, total=total, free=total - used)


def nvmlDeviceGetTemperature(h: FakeDevice, sensor: int) -> int:
    h.enter("nvmlDeviceGetTemperature")
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return h.temp_c


def nvmlDeviceGetClockInfo(h: FakeDevice, clock: int) -> int:
    h.enter("nvmlDeviceGetClockInfo")
    if clock != NVML_CLOCK_SM:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return h.sm_clock_mhz


def nvmlDeviceGetEnforcedPowerLimit(h: FakeDevice) -> int:
    h.enter("nvmlDeviceGetEnforcedPowerLimit")
    return h.power_limit_mw


def nvmlDeviceGetPerformanceState(h: FakeDevice) -> int:
    h.enter("nvmlDeviceGetPerformanceState")
    return h.pstate


def nvmlDeviceGetComputeRunningProcesses(h: FakeDevice) -> list:
    h.enter("nvmlDeviceGetComputeRunningProcesses")
    return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in h.procs]
