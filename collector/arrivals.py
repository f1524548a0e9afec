"""Open-loop arrivals: when each request of a level should start, and a scheduler that starts them
then, bounded by ``--max-concurrency`` (as vLLM's ``bench serve``).

The schedule is pure (offsets in seconds from the level's start). The scheduler never delays a
start silently: every start records how late it was against its schedule (``lag_ms``) and
whether it waited for a free concurrency slot (``blocked``); :func:`late_summary` counts them.
"""
from __future__ import annotations

import asyncio
import random
import statistics
from dataclasses import dataclass
from typing import Awaitable, Callable

from shared.messages import now_ns

ARRIVALS = ("poisson", "constant")
# A start this much after its scheduled time counts as late (event-loop jitter stays below it).
LATE_MS = 10.0


def offsets(kind: str, n: int, rate: float, seed: int | None = 0) -> list[float]:
    """Start offsets (s) of ``n`` requests at ``rate`` requests/s; the first starts at 0.

    ``poisson``: exponential gaps of mean 1/rate from ``random.Random(seed)`` (the same seed gives the
    same schedule, so a resumed or repeated level is comparable); ``constant``: every 1/rate s."""
    if kind not in ARRIVALS:
        raise ValueError(f"arrival {kind!r}: use one of {', '.join(ARRIVALS)}")
    if not rate > 0:
        raise ValueError(f"request rate {rate!r}: must be > 0 requests per second")
    if n <= 0:
        return []
    if kind == "constant":
        return [i / rate for i in range(n)]
    rng = random.Random(seed)
    out, t = [0.0], 0.0
    for _ in range(n - 1):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def gaps(starts: list[float]) -> list[float]:
    return [b - a for a, b in zip(starts, starts[1:])]


def cv(values: list[float]) -> float | None:
    """Coefficient of variation (std / mean): 1 for exponential gaps, 0 for even spacing."""
    if len(values) < 2:
        return None
    m = statistics.fmean(values)
    return statistics.stdev(values) / m if m > 0 else None


@dataclass
class Start:
    index: int           # position in the level's job list
    scheduled_s: float   # offset it should have started at
    started_s: float     # offset it did start at
    blocked: bool        # it waited for a --max-concurrency slot

    @property
    def lag_ms(self) -> float:
        return max(0.0, (self.started_s - self.scheduled_s) * 1000.0)

    @property
    def late(self) -> bool:
        return self.blocked or self.lag_ms > LATE_MS


def late_summary(starts: list[Start]) -> dict[str, float | int | None]:
    """What the level's log and batch.end say about starts that missed their schedule."""
    lags = sorted(s.lag_ms for s in starts)
    return {"starts": len(starts), "late": sum(s.late for s in starts), "blocked": sum(s.blocked for s in starts),
            "lag_ms_median": statistics.median(lags) if lags else None,
            "lag_ms_max": lags[-1] if lags else None}


def _now_s() -> float:
    return now_ns()[0] / 1e9


async def run_open_loop(schedule: list[float], max_concurrency: int | None,
                        start: Callable[[int, Start], Awaitable[None]],
                        stop: asyncio.Event | None = None, t0_s: float | None = None) -> list[Start]:
    """Start ``start(i, record)`` at ``schedule[i]`` s from now whether or not earlier ones finished,
    with at most ``max_concurrency`` in flight (None: unbounded). Returns once every started request
    has finished (the level is drained). A start that must wait for a slot begins as soon as one
    frees and is marked ``blocked``; ``stop`` set: the rest are not started. ``t0_s``: the schedule's
    zero on :func:`shared.messages.now_ns`'s clock, in s (default: now)."""
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    t0 = _now_s() if t0_s is None else t0_s
    records: list[Start] = []
    tasks: list[asyncio.Task] = []

    async def one(i: int, rec: Start) -> None:
        try:
            await start(i, rec)
        finally:
            if sem is not None:
                sem.release()

    try:
        for i, at in enumerate(schedule):
            delay = t0 + at - _now_s()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop is not None and stop.is_set():
                break
            blocked = sem is not None and sem.locked()
            if sem is not None:
                await sem.acquire()
            rec = Start(i, at, _now_s() - t0, blocked)
            records.append(rec)
            tasks.append(asyncio.create_task(one(i, rec)))
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for t in tasks:  # interrupted (Ctrl-C): cancel what is in flight, the caller records it
            if not t.done():
                t.cancel()
    return records
