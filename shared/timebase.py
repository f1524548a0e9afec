"""The one clock for every bus timestamp and every interval: ``now_ns()`` (and ``now_s()``).

Request windows, chunk arrival times, sample stamps, the daemon's deadlines and the clock probes all
come from this function, so every process on a host stamps on the same clock and windows join
samples across processes. It is ``time.perf_counter_ns``:

- Linux: ``clock_gettime(CLOCK_MONOTONIC)``, the very clock ``time.monotonic_ns`` reads (recordings
  made before this module are on the same clock); system-wide, 1 ns resolution.
- Windows: ``QueryPerformanceCounter``, system-wide and sub-microsecond. ``time.monotonic`` there is
  ``GetTickCount64`` before Python 3.13 and ticks every ~15.6 ms: TTFT, chunk gaps, window edges and
  100 Hz deadlines would all be rounded to 15.6 ms.
- macOS: ``mach_absolute_time``, the clock ``time.monotonic`` reads too.

Wall-clock time (``time.time_ns``) is for humans only and never joins anything.

Tests inject a coarser clock with :func:`injected` (e.g. :func:`coarse` at 15.6 ms) to show what a
low-resolution clock breaks; code calls :func:`now_ns` at use time, never binds the function early.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

WINDOWS_TICK_NS = 15_625_000  # the default Windows timer tick (1/64 s), what GetTickCount64 advances by

_clock: Callable[[], int] = time.perf_counter_ns


def now_ns() -> int:
    """Now on the host's shared high-resolution clock, in ns (an arbitrary origin, never wall time)."""
    return _clock()


def now_s() -> float:
    """:func:`now_ns` in seconds, for intervals and deadlines."""
    return _clock() / 1e9


def describe() -> str:
    """Which OS clock ``now_ns`` reads and its resolution, e.g. ``perf_counter: clock_gettime(CLOCK_MONOTONIC), 1e-09 s``."""
    if _clock is not time.perf_counter_ns:
        return f"injected: {getattr(_clock, '__name__', 'clock')}"
    info = time.get_clock_info("perf_counter")
    return f"perf_counter: {info.implementation}, {info.resolution:.0e} s"


def coarse(tick_ns: int = WINDOWS_TICK_NS, base: Callable[[], int] = time.perf_counter_ns) -> Callable[[], int]:
    """A clock that advances in steps of ``tick_ns`` (what ``time.monotonic`` is on Windows before 3.13)."""
    def clock() -> int:
        return base() // tick_ns * tick_ns
    clock.__name__ = f"coarse {tick_ns / 1e6:g} ms"
    return clock


@contextmanager
def injected(clock: Callable[[], int]) -> Iterator[None]:
    """Tests only: every ``now_ns()`` in this process reads ``clock`` inside the block."""
    global _clock
    old, _clock = _clock, clock
    try:
        yield
    finally:
        _clock = old


def timing_ok(version: tuple[int, ...] = tuple(sys.version_info[:2]), platform: str = sys.platform) -> str | None:
    """None when this Python times well enough for 100 Hz sampling; else why not (requires-python says >= 3.11:
    before 3.11, ``time.sleep`` on Windows sleeps in 15.6 ms steps, so a 10 ms deadline is always missed)."""
    if platform == "win32" and version < (3, 11):
        return "time.sleep on Windows before Python 3.11 sleeps in ~15.6 ms steps: 100 Hz sampling cannot be reached"
    return None
