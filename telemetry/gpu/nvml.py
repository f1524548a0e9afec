"""NVIDIA GPUs through NVML (nvidia-ml-py). The ONLY module that imports ``pynvml``.

Power: the instantaneous field ``NVML_FI_DEV_POWER_INSTANT`` (via ``nvmlDeviceGetFieldValues``)
where the driver answers it, else ``nvmlDeviceGetPowerUsage``, which NVIDIA documents as a 1 s
average on Ampere (except GA100) and newer and as instantaneous on GA100 and older. The choice
is made once per GPU at open and published as ``power_kind``.
NVML errors become project exceptions (gpu/base.py) that name the call, the GPU and a fix.
"""
from __future__ import annotations

import functools
from typing import Any

from telemetry.gpu.base import (GPU, GPUBackendUnavailable, GPUError, GPULost, GPUTimeout, NoPermission,
                                NotSupported)

_MIB = 1024 * 1024
_PSTATE_UNKNOWN = 32  # NVML_PSTATE_UNKNOWN


def _pynvml():
    # Imported lazily so tests can put a fake module into sys.modules first.
    import pynvml

    return pynvml


def map_nvml_error(nv, exc: Exception, what: str, index: int | None) -> GPUError:
    """Translate one ``pynvml.NVMLError`` into the project exception for its error code."""
    code = getattr(exc, "value", None)
    where = f"GPU {index}" if index is not None else "NVML"
    if code == nv.NVML_ERROR_NOT_SUPPORTED:
        return NotSupported(f"{what} is not supported on {where}")
    if code == nv.NVML_ERROR_NO_PERMISSION:
        return NoPermission(f"{what} on {where}: insufficient permissions (run as a user allowed to query the GPU)")
    if code in (nv.NVML_ERROR_GPU_IS_LOST, getattr(nv, "NVML_ERROR_RESET_REQUIRED", -1)):
        return GPULost(f"{what} on {where}: GPU is lost or needs a reset ({exc}); check `nvidia-smi` and dmesg")
    if code == nv.NVML_ERROR_TIMEOUT:
        return GPUTimeout(f"{what} on {where} timed out ({exc})")
    return GPUError(f"{what} on {where} failed: {exc} (NVML code {code})")


def _nvml_call(what: str):
    """Decorator: run an NVML getter, mapping NVMLError to a project exception (chained)."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self: "NvmlGPU", *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except self._nv.NVMLError as exc:
                raise map_nvml_error(self._nv, exc, what, self.index) from exc

        return wrapper

    return deco


def field_value(nv, fv: Any) -> float:
    """The number inside one ``c_nvmlFieldValue_t``, chosen by its ``valueType``."""
    attr = {
        nv.NVML_VALUE_TYPE_DOUBLE: "dVal",
        nv.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        nv.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        nv.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        nv.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        nv.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
        getattr(nv, "NVML_VALUE_TYPE_UNSIGNED_SHORT", 6): "usVal",
    }.get(fv.valueType)
    if attr is None:
        raise GPUError(f"NVML field {fv.fieldId} has unknown value type {fv.valueType}")
    return getattr(fv.value, attr)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NvmlGPU(GPU):
    """One NVML device handle. Build them with :func:`open_nvml`."""

    def __init__(self, nv, index: int, handle: Any):
        self._nv = nv
        self.index = index
        self._handle = handle
        self.name = self._safe(lambda: _text(nv.nvmlDeviceGetName(handle)), f"GPU {index}")
        self.uuid = self._safe(lambda: _text(nv.nvmlDeviceGetUUID(handle)), f"unknown-{index}")
        self.power_kind = self._choose_power_kind()

    def _safe(self, fn, default):
        try:
            return fn()
        except self._nv.NVMLError:
            return default

    def _instant_field_works(self) -> bool:
        nv = self._nv
        if not hasattr(nv, "NVML_FI_DEV_POWER_INSTANT"):
            return False
        try:
            fv = nv.nvmlDeviceGetFieldValues(self._handle, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
        except (nv.NVMLError, AttributeError):  # AttributeError: old driver without the function
            return False
        return fv.nvmlReturn == nv.NVML_SUCCESS

    def _choose_power_kind(self) -> str:
        """``instant`` via the field; else the usage call's documented meaning for this architecture."""
        if self._instant_field_works():
            self._read_power = self._power_instant_field
            return "instant"
        self._read_power = self._power_usage_call
        nv = self._nv
        try:
            arch = nv.nvmlDeviceGetArchitecture(self._handle)
        except (nv.NVMLError, AttributeError):
            return "unknown"
        if arch == getattr(nv, "NVML_DEVICE_ARCH_UNKNOWN", 0xFFFFFFFF):
            return "unknown"
        if arch >= nv.NVML_DEVICE_ARCH_AMPERE:
            # GA100 parts (A100, A30) still return instantaneous power from the usage call.
            if arch == nv.NVML_DEVICE_ARCH_AMPERE and ("A100" in self.name or "A30" in self.name):
                return "instant"
            return "average_1s"
        return "instant"

    @_nvml_call("nvmlDeviceGetFieldValues(POWER_INSTANT)")
    def _power_instant_field(self) -> int:
        nv = self._nv
        fv = nv.nvmlDeviceGetFieldValues(self._handle, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
        if fv.nvmlReturn != nv.NVML_SUCCESS:
            raise nv.NVMLError(fv.nvmlReturn)
        return int(field_value(nv, fv))

    @_nvml_call("nvmlDeviceGetPowerUsage")
    def _power_usage_call(self) -> int:
        return int(self._nv.nvmlDeviceGetPowerUsage(self._handle))

    def power_mw(self) -> int:
        """Board power in mW (instant field or usage call, see ``power_kind``)."""
        return self._read_power()

    @_nvml_call("nvmlDeviceGetTotalEnergyConsumption")
    def energy_mj(self) -> float:
        """Total energy since driver load in mJ (Volta and newer; refreshes every ~20-100 ms)."""
        return int(self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    @_nvml_call("nvmlDeviceGetUtilizationRates")
    def util_pct(self) -> tuple[int, int]:
        """(gpu, memory) utilisation in percent."""
        u = self._nv.nvmlDeviceGetUtilizationRates(self._handle)
        return int(u.gpu), int(u.memory)

    @_nvml_call("nvmlDeviceGetMemoryInfo")
    def mem_mib(self) -> tuple[float, float]:
        """(used, total) device memory in MiB."""
        m = self._nv.nvmlDeviceGetMemoryInfo(self._handle)
        return m.used / _MIB, m.total / _MIB

    @_nvml_call("nvmlDeviceGetTemperature")
    def temp_c(self) -> int:
        """GPU core temperature in °C."""
        return int(self._nv.nvmlDeviceGetTemperature(self._handle, self._nv.NVML_TEMPERATURE_GPU))

    @_nvml_call("nvmlDeviceGetClockInfo(SM)")
    def sm_clock_mhz(self) -> int:
        """SM clock in MHz."""
        return int(self._nv.nvmlDeviceGetClockInfo(self._handle, self._nv.NVML_CLOCK_SM))

    @_nvml_call("nvmlDeviceGetEnforcedPowerLimit")
    def power_limit_w(self) -> float:
        """The enforced power limit (the lower of the default and any user cap) in W."""
        if not hasattr(self._nv, "nvmlDeviceGetEnforcedPowerLimit"):
            raise NotSupported("this pynvml has no nvmlDeviceGetEnforcedPowerLimit")
        return self._nv.nvmlDeviceGetEnforcedPowerLimit(self._handle) / 1000.0

    @_nvml_call("nvmlDeviceGetPerformanceState")
    def pstate(self) -> str:
        """Performance state ``P0``..``P15``."""
        p = int(self._nv.nvmlDeviceGetPerformanceState(self._handle))
        if p == _PSTATE_UNKNOWN:
            raise NotSupported(f"performance state is unknown on GPU {self.index}")
        return f"P{p}"

    @_nvml_call("nvmlDeviceGetComputeRunningProcesses")
    def procs_mib(self) -> dict[int, float]:
        """{pid: used GPU memory in MiB}; processes whose usage NVML hides are omitted."""
        out: dict[int, float] = {}
        for p in self._nv.nvmlDeviceGetComputeRunningProcesses(self._handle):
            used = getattr(p, "usedGpuMemory", None)
            if used is not None:
                out[int(p.pid)] = used / _MIB
        return out


class NvmlBackend:
    """Initialises NVML once, hands out one :class:`NvmlGPU` per device, shuts NVML down."""

    def __init__(self):
        try:
            self._nv = _pynvml()
        except ImportError as exc:
            raise GPUBackendUnavailable(
                f"cannot import pynvml ({exc}); install nvidia-ml-py, or run with --gpu sim / --gpu none") from exc
        nv = self._nv
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            raise GPUBackendUnavailable(
                f"NVML did not initialise ({exc}): no NVIDIA driver on this machine? "
                "Run with --gpu sim for a simulated GPU or --gpu none for host-only telemetry") from exc
        try:
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as exc:
            self.shutdown()
            raise map_nvml_error(nv, exc, "nvmlDeviceGetCount", None) from exc
        self.gpus: list[NvmlGPU] = []
        #: GPUs that could not be opened (e.g. lost before start): (index, reason); the rest are sampled
        self.skipped: list[tuple[int, str]] = []
        for i in range(count):
            try:
                self.gpus.append(NvmlGPU(nv, i, nv.nvmlDeviceGetHandleByIndex(i)))
            except nv.NVMLError as exc:
                self.skipped.append((i, str(map_nvml_error(nv, exc, "nvmlDeviceGetHandleByIndex", i))))
        self.driver = self._driver_version()
        for g in self.gpus:
            g.driver = self.driver

    def _driver_version(self) -> str | None:
        try:
            return _text(self._nv.nvmlSystemGetDriverVersion())
        except (self._nv.NVMLError, AttributeError):
            return None

    def shutdown(self) -> None:
        try:
            self._nv.nvmlShutdown()
        except self._nv.NVMLError:
            pass
