"""The GPU interface every backend implements (NVML, simulated, scripted fake).

One getter per quantity, the unit in its name and docstring. A getter that the device cannot
answer raises :class:`NotSupported` (the sampler then leaves the key absent, never 0); any other
failure raises a :class:`GPUError` subclass whose message says what failed and what to do.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

POWER_KINDS = ("instant", "average_1s", "unknown", "sim")


class GPUError(RuntimeError):
    """A GPU reading failed. ``code`` is a short, stable label used in ``errors`` lists."""

    code = "error"


class NotSupported(GPUError):
    """The device or driver does not offer this quantity (report it absent, not zero)."""

    code = "not_supported"


class NoPermission(GPUError):
    code = "no_permission"


class GPULost(GPUError):
    """The GPU fell off the bus or needs a reset; other GPUs keep being sampled."""

    code = "gpu_lost"


class GPUTimeout(GPUError):
    code = "timeout"


class GPUBackendUnavailable(GPUError):
    """The backend itself cannot start (no driver, no library)."""

    code = "unavailable"


class GPU(ABC):
    """One GPU. ``index``, ``uuid`` and ``name`` are fixed at open; getters read live values."""

    index: int
    uuid: str
    name: str
    #: how ``power_mw()`` is obtained: one of POWER_KINDS (decided once, at open)
    power_kind: str = "unknown"
    #: True only for the simulated source; every message of a simulated GPU says so
    simulated: bool = False
    #: the driver's version (NVML), sent with every tel.gpu like name and uuid; None where unknown
    driver: str | None = None

    def at(self, t_ns: int) -> None:
        """Called once per tick before the getters with the tick's time (ns, shared.timebase).

        Real GPUs ignore it; the simulated GPU advances its state to ``t_ns`` so that its
        readings belong exactly to the published timestamp."""

    @abstractmethod
    def power_mw(self) -> int:
        """Board power in milliwatts (see ``power_kind`` for instant vs averaged)."""

    @abstractmethod
    def energy_mj(self) -> float:
        """Total energy counter in millijoules since driver load (cumulative)."""

    @abstractmethod
    def util_pct(self) -> tuple[int, int]:
        """``(gpu, memory)`` utilisation in percent over the driver's last sample period."""

    @abstractmethod
    def mem_mib(self) -> tuple[float, float]:
        """``(used, total)`` device memory in MiB."""

    @abstractmethod
    def temp_c(self) -> int:
        """Core temperature in degrees Celsius."""

    @abstractmethod
    def sm_clock_mhz(self) -> int:
        """Streaming-multiprocessor clock in MHz."""

    def power_limit_w(self) -> float:
        """The enforced board power limit in W (what caps the power under load)."""
        raise NotSupported(f"power limit is not readable on GPU {self.index}")

    @abstractmethod
    def pstate(self) -> str:
        """Performance state, ``"P0"`` (fastest) to ``"P15"``."""

    @abstractmethod
    def procs_mib(self) -> dict[int, float]:
        """Compute processes on this GPU: ``{pid: used MiB}``."""

    def close(self) -> None:
        """Release backend resources (NVML shutdown is done once by the backend's opener)."""
