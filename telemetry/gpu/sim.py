"""A deterministic simulated GPU for machines without an NVIDIA GPU. SIMULATED: not a measurement.

Its power follows a load function (by default the host's CPU load) above an idle floor:
``power_mw = idle_mw + (max_mw - idle_mw) * load``. Power only changes at a tick (``at(t_ns)``)
and is constant until the next one, so the energy counter, kept as an exact integer integral in
mW·ns, equals the left Riemann sum of the published (t, power_mw) samples exactly.
Every reading it produces is marked ``simulated`` and ``power_kind = "sim"``.
"""
from __future__ import annotations

from typing import Callable

import psutil

from shared import timebase
from telemetry.gpu.base import GPU

_MW_NS_PER_MJ = 1_000_000_000  # 1 mJ = 1 mW * 1 s = 1e9 mW·ns


class HostCpuLoad:
    """Host CPU busy fraction 0..1, from ``psutil.cpu_times()`` deltas at most every ``refresh_s``.

    Kept separate from ``psutil.cpu_percent`` so it never disturbs the host sampler's readings."""

    def __init__(self, refresh_s: float = 0.1, clock: Callable[[], float] = timebase.now_s):
        self.refresh_s = refresh_s
        self._clock = clock
        self._last_t = clock()
        self._last = psutil.cpu_times()
        self._load = 0.0

    @staticmethod
    def _busy_idle(ct) -> tuple[float, float]:
        idle = ct.idle + getattr(ct, "iowait", 0.0)
        return sum(ct) - idle, idle

    def __call__(self) -> float:
        now = self._clock()
        if now - self._last_t >= self.refresh_s:
            cur = psutil.cpu_times()
            b0, i0 = self._busy_idle(self._last)
            b1, i1 = self._busy_idle(cur)
            total = (b1 - b0) + (i1 - i0)
            if total > 0:
                self._load = min(1.0, max(0.0, (b1 - b0) / total))
            self._last, self._last_t = cur, now
        return self._load


class SimGPU(GPU):
    """Synthetic GPU. ``load`` returns 0..1; ``clock_ns`` is used only if ``at()`` is never called."""

    simulated = True
    power_kind = "sim"

    def __init__(self, index: int = 0, load: Callable[[], float] | None = None, idle_mw: int = 30_000,
                 max_mw: int = 250_000, mem_total_mib: float = 24_576.0,
                 clock_ns: Callable[[], int] = timebase.now_ns):
        if not 0 <= idle_mw <= max_mw:
            raise ValueError(f"sim GPU: need 0 <= idle_mw <= max_mw, got idle_mw={idle_mw}, max_mw={max_mw}")
        self.index = index
        self.uuid = f"SIM-GPU-{index:04d}"
        self.name = "Simulated GPU (not a measurement)"
        self._load_fn = load if load is not None else HostCpuLoad()
        self.idle_mw = idle_mw
        self.max_mw = max_mw
        self.mem_total_mib = mem_total_mib
        self._clock_ns = clock_ns
        self._t_ns: int | None = None
        self._load = 0.0
        self._power_mw = idle_mw
        self._energy_mw_ns = 0  # exact integer integral of power over time

    def at(self, t_ns: int) -> None:
        """Advance to ``t_ns``: add the energy of the interval just ended, then take the new load."""
        if self._t_ns is not None:
            if t_ns < self._t_ns:
                raise ValueError(f"sim GPU: time went backwards ({t_ns} < {self._t_ns} ns)")
            self._energy_mw_ns += self._power_mw * (t_ns - self._t_ns)
        self._t_ns = t_ns
        self._load = min(1.0, max(0.0, float(self._load_fn())))
        self._power_mw = int(round(self.idle_mw + (self.max_mw - self.idle_mw) * self._load))

    def _ensure_time(self) -> None:
        if self._t_ns is None:
            self.at(self._clock_ns())

    def power_mw(self) -> int:
        """Simulated power in mW, constant from this tick to the next."""
        self._ensure_time()
        return self._power_mw

    def energy_mj(self) -> float:
        """Simulated cumulative energy in mJ: the exact integral of ``power_mw`` since the first tick."""
        self._ensure_time()
        return self._energy_mw_ns / _MW_NS_PER_MJ

    def util_pct(self) -> tuple[int, int]:
        """(gpu, memory) utilisation in percent, both following the load."""
        self._ensure_time()
        pct = int(round(self._load * 100))
        return pct, pct // 2

    def mem_mib(self) -> tuple[float, float]:
        """(used, total) MiB: a fixed 512 MiB plus up to half the memory with load."""
        self._ensure_time()
        return 512.0 + self._load * self.mem_total_mib / 2, self.mem_total_mib

    def temp_c(self) -> int:
        """30 °C idle up to 80 °C at full load (instantly; no thermal mass is modelled)."""
        self._ensure_time()
        return int(round(30 + 50 * self._load))

    def sm_clock_mhz(self) -> int:
        """210 MHz idle, 1980 MHz once loaded."""
        self._ensure_time()
        return 1980 if self._load > 0.05 else 210

    def power_limit_w(self) -> float:
        """A fixed 350 W, like a consumer card at its default limit."""
        return 350.0

    def pstate(self) -> str:
        """P0 when loaded, P8 when idle."""
        self._ensure_time()
        return "P0" if self._load > 0.05 else "P8"

    def procs_mib(self) -> dict[int, float]:
        """No processes run on a simulated GPU."""
        return {}
