"""How a batch loads the server (pure): the levels it runs, each closed loop (a fixed number of
parallel streams) or open loop (arrivals at a rate), from --concurrency, --request-rate,
--sweep, --sweep-order, --max-concurrency and --arrival.

Without a sweep there is one unnamed level (rids and rows unchanged, as in the seed); a sweep
names every level (its number, e.g. 4) and the batch's request matrix runs once per level.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

# keep_alive a sweep uses unless the user set one: the model stays loaded across its levels, so
# the sweep measures serving, not loading
SWEEP_KEEP_ALIVE = "10m"


@dataclass(frozen=True)
class Level:
    kind: str                   # "concurrency" (closed loop) | "rate" (open loop, requests/s)
    value: int | float
    swept: bool = False         # one level of a --sweep: rids, resume keys and rows carry it
    max_concurrency: int | None = None  # open loop: at most this many in flight
    arrival: str = "poisson"

    @property
    def open_loop(self) -> bool:
        return self.kind == "rate"

    @property
    def label(self) -> str:
        """The level in a request id: ``c4`` (4 parallel streams), ``r0.5`` (0.5 requests/s)."""
        return f"{'c' if self.kind == 'concurrency' else 'r'}{self.value:g}"

    @property
    def number(self) -> int | float | None:
        """``sweep_level``: the level's number in a sweep; None outside one."""
        return self.value if self.swept else None


def value(settings: dict[str, dict[str, Any]], key: str) -> Any:
    return settings[key]["value"]


def levels(settings: dict[str, dict[str, Any]]) -> list[Level]:
    """The batch's levels in run order (``--sweep-order random``: shuffled by --arrival-seed, so a
    resume runs them in the same order)."""
    sweep = value(settings, "sweep")
    mc, arrival = value(settings, "max_concurrency"), value(settings, "arrival")
    if sweep:
        out = [Level(sweep["kind"], v, True, mc, arrival) for v in sweep["levels"]]
        if value(settings, "sweep_order") == "random":
            random.Random(value(settings, "arrival_seed")).shuffle(out)
        return out
    rate = value(settings, "request_rate")
    if rate:
        return [Level("rate", rate, False, mc, arrival)]
    return [Level("concurrency", value(settings, "concurrency"))]


def sweep_defaults(settings: dict[str, dict[str, Any]]) -> list[str]:
    """A sweep keeps the model loaded and warms it up per level unless the user chose otherwise
    (a flag or config.py). Changes ``settings`` in place; returns what it changed, for the log."""
    if not value(settings, "sweep"):
        return []
    changed = []
    if settings["keep_alive"]["source"] == "default":
        settings["keep_alive"] = {"value": SWEEP_KEEP_ALIVE, "source": "default (sweep)"}
        changed.append(f"keep_alive {SWEEP_KEEP_ALIVE}")
    if settings["warmup"]["source"] == "default":
        settings["warmup"] = {"value": True, "source": "default (sweep)"}
        changed.append("warmup on (one per model and level)")
    return changed


def level_seed(seed: int, model: str, level: Level) -> str:
    """The seed of one level's Poisson schedule: the same model and level give the same arrivals."""
    return f"{seed}/{model}/{level.label}"


def overridden(settings: dict[str, dict[str, Any]]) -> list[str]:
    """Settings a sweep overrides (said in the log, not refused)."""
    if value(settings, "sweep") and settings["concurrency"]["source"] != "default":
        return [f"--concurrency {value(settings, 'concurrency')} ({settings['concurrency']['source']}): the sweep sets "
                "each level's load instead"]
    return []


def conflicts(settings: dict[str, dict[str, Any]]) -> list[str]:
    """Load settings that say nothing together, each with the fix (empty when fine)."""
    out = []
    sweep = value(settings, "sweep")
    if sweep and value(settings, "request_rate"):
        out.append("--request-rate with --sweep: a rate sweep sets each level's rate (--sweep rate=...); "
                   "drop one of them")
    if value(settings, "request_rate") and settings["concurrency"]["source"] == "cli":
        out.append("--request-rate with --concurrency: an open loop is bounded by --max-concurrency; use that")
    is_open = bool(value(settings, "request_rate")) or bool(sweep and sweep["kind"] == "rate")
    if value(settings, "max_concurrency") and not is_open:
        out.append("--max-concurrency bounds open-loop arrivals: use it with --request-rate or --sweep rate=...; "
                   "for parallel streams use --concurrency or --sweep concurrency=...")
    return out
