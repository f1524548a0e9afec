"""Turn readings from the GPU interface into ``tel.gpu`` bodies (shared.messages.TelGpu). No sockets, no clocks.

Fast quantities (power, energy) are read on every tick; slow ones (utilisation, memory,
temperature, SM clock, pstate, processes) only on ticks flagged ``slow``. A quantity that raises
NotSupported is left absent from then on (never a fake zero); any other failure is named in the
body's ``errors`` list for that tick and the other quantities and GPUs are still read.
"""
from __future__ import annotations

from typing import Any, Callable

from shared.messages import TelGpu

from telemetry.gpu.base import GPU, GPUError, NotSupported


def _put_power(g: GPU, b: TelGpu) -> None:
    b.power_mw = g.power_mw()


def _put_energy(g: GPU, b: TelGpu) -> None:
    b.energy_mj = g.energy_mj()


def _put_util(g: GPU, b: TelGpu) -> None:
    b.util_gpu_pct, b.util_mem_pct = g.util_pct()


def _put_mem(g: GPU, b: TelGpu) -> None:
    b.mem_used_mib, b.mem_total_mib = g.mem_mib()


def _put_temp(g: GPU, b: TelGpu) -> None:
    b.temp_c = g.temp_c()


def _put_clock(g: GPU, b: TelGpu) -> None:
    b.sm_clock_mhz = g.sm_clock_mhz()


def _put_power_limit(g: GPU, b: TelGpu) -> None:
    b.power_limit_w = g.power_limit_w()


def _put_pstate(g: GPU, b: TelGpu) -> None:
    b.pstate = g.pstate()


def _put_procs(g: GPU, b: TelGpu) -> None:
    b.procs = g.procs_mib()


Getter = Callable[[GPU, TelGpu], None]
FAST: tuple[tuple[str, Getter], ...] = (("power", _put_power), ("energy", _put_energy))
SLOW: tuple[tuple[str, Getter], ...] = (("util", _put_util), ("mem", _put_mem), ("temp", _put_temp),
                                        ("clock", _put_clock), ("pstate", _put_pstate), ("procs", _put_procs),
                                        ("power_limit", _put_power_limit))


def slow_every(fast_hz: float, slow_hz: float) -> int:
    """Every how many fast ticks the slow quantities are read (at least 1)."""
    if slow_hz <= 0 or fast_hz <= 0:
        raise ValueError(f"rates must be positive, got fast {fast_hz} Hz, slow {slow_hz} Hz")
    return max(1, round(fast_hz / slow_hz))


class GpuReader:
    """Reads one GPU into ``tel.gpu`` bodies; remembers unsupported quantities and the last errors."""

    def __init__(self, gpu: GPU):
        self.gpu = gpu
        self.unsupported: set[str] = set()
        self.errors_total = 0

    def header(self) -> TelGpu:
        g = self.gpu
        return TelGpu(gpu=g.index, uuid=g.uuid, name=g.name, power_kind=g.power_kind, simulated=g.simulated or None,
                      driver=g.driver)

    def read(self, t_ns: int, slow: bool) -> tuple[dict[str, Any], list[tuple[str, GPUError]]]:
        """One tick: the message body and ``(field, exception)`` behind each ``errors`` entry (for logging)."""
        g = self.gpu
        body = self.header()
        failures: list[tuple[str, GPUError]] = []
        try:
            g.at(t_ns)
        except GPUError as exc:
            failures.append(("tick", exc))
            body.errors = [f"tick: {exc.code}"]
            self.errors_total += 1
            return body.to_msg(), failures
        for label, put in FAST + (SLOW if slow else ()):
            if label in self.unsupported:
                continue
            try:
                put(g, body)
            except NotSupported:
                self.unsupported.add(label)
            except GPUError as exc:
                failures.append((label, exc))
                body.errors = (body.errors or []) + [f"{label}: {exc.code}"]
        self.errors_total += len(failures)
        return body.to_msg(), failures

    def labels(self, slow: bool) -> list[str]:
        """The fields a tick reads (fast, plus slow when ``slow``), minus unsupported ones."""
        return [label for label, _ in FAST + (SLOW if slow else ()) if label not in self.unsupported]
