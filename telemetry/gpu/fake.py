"""A scripted GPU for tests of code that uses the GPU interface (sampler, daemon).

Each quantity is a value, a callable returning the value, or an exception instance to raise;
``None`` means the device does not support it (raises NotSupported). Calls are counted.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from telemetry.gpu.base import GPU, NotSupported

_DEFAULTS: dict[str, Any] = {
    "power_mw": 100_000, "energy_mj": 0, "util_pct": (50, 20), "mem_mib": (1024.0, 8192.0),
    "temp_c": 50, "sm_clock_mhz": 1500, "pstate": "P0", "procs_mib": {},
    "power_limit_w": 450.0,
}


class FakeGPU(GPU):
    def __init__(self, index: int = 0, uuid: str | None = None, name: str = "Fake GPU",
                 power_kind: str = "instant", **script: Any):
        unknown = set(script) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"FakeGPU: unknown quantities {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
        self.index = index
        self.uuid = uuid or f"FAKE-{index}"
        self.name = name
        self.power_kind = power_kind
        self.script = {**_DEFAULTS, **script}
        self.calls: Counter[str] = Counter()
        self.ticks: list[int] = []

    def at(self, t_ns: int) -> None:
        self.ticks.append(t_ns)

    def _get(self, key: str):
        self.calls[key] += 1
        value = self.script[key]
        if value is None:
            raise NotSupported(f"{key} is not supported on fake GPU {self.index}")
        if isinstance(value, BaseException):
            raise value
        return value() if callable(value) else value

    def power_mw(self) -> int:
        return self._get("power_mw")

    def energy_mj(self) -> float:
        return self._get("energy_mj")

    def util_pct(self) -> tuple[int, int]:
        return self._get("util_pct")

    def mem_mib(self) -> tuple[float, float]:
        return self._get("mem_mib")

    def temp_c(self) -> int:
        return self._get("temp_c")

    def sm_clock_mhz(self) -> int:
        return self._get("sm_clock_mhz")

    def pstate(self) -> str:
        return self._get("pstate")

    def power_limit_w(self) -> float:
        return self._get("power_limit_w")

    def procs_mib(self) -> dict[int, float]:
        return self._get("procs_mib")
