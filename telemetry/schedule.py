"""Deadline scheduling bookkeeping for one sampling source. Pure: the caller passes the time.

Tick ``k`` is due at ``start_ns + k * period_ns`` (no drift: a late tick does not shift later
ones). A sampler that wakes after a later deadline has passed runs only the latest due tick and
counts the skipped ones as dropped, instead of bunching them. Jitter is how late a run tick
started relative to its deadline.

Dither (GPU sources): tick ``k`` is moved later by frac(k·φ) of a period (φ the golden ratio: an
even, deterministic spread). Without it, 100 Hz ticks lock to a GPU counter that refreshes every
50 ms, every refresh is seen at the same phase and its located instant is off by the same few ms
all run long; dithered, the phase sweeps and the analyzer's refresh fit averages it out.
"""
from __future__ import annotations

import math
import threading

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
RATE_LOW = 0.95  # a source running fewer than 95 % of its due ticks is below its target rate


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted, non-empty list."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class DeadlineSchedule:
    """Deadlines, jitter and dropped ticks of one source; thread-safe between runner and reporter."""

    def __init__(self, rate_hz: float, start_ns: int, dither: bool = False):
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ValueError(f"sampling rate must be a positive number of Hz, got {rate_hz!r}")
        self.rate_hz = rate_hz
        self.period_ns = max(1, round(1e9 / rate_hz))
        self.start_ns = start_ns
        self.dither = dither
        self._next_k = 0
        self._lock = threading.Lock()
        self.samples = 0
        self.dropped = 0
        # Window since the last report (for achieved rate and jitter percentiles).
        self._win_start_ns = start_ns
        self._win_samples = 0
        self._win_missed_start = 0  # dropped + overdue ticks when the window began
        self._win_jitter_ns: list[int] = []

    def deadline_ns(self, k: int | None = None) -> int:
        """When tick ``k`` (default: the next one to run) is due, in ns on the shared clock (shared.timebase)."""
        k = self._next_k if k is None else k
        offset = int(((k * _GOLDEN) % 1.0) * self.period_ns) if self.dither else 0
        return self.start_ns + k * self.period_ns + offset

    def _latest_due(self, now_ns: int) -> int:
        """The last tick whose deadline is at or before ``now_ns`` (offsets stay under a period)."""
        q = (now_ns - self.start_ns) // self.period_ns
        return q if self.deadline_ns(q) <= now_ns else q - 1

    def begin(self, now_ns: int) -> int | None:
        """Start the tick due at ``now_ns``: returns its index, or None if none is due yet.

        Earlier due ticks that were not run are counted as dropped."""
        with self._lock:
            if now_ns < self.deadline_ns():
                return None
            latest = self._latest_due(now_ns)
            self.dropped += latest - self._next_k
            self._next_k = latest + 1
            self.samples += 1
            self._win_samples += 1
            self._win_jitter_ns.append(now_ns - self.deadline_ns(latest))
            return latest

    def _pending_dropped(self, now_ns: int) -> int:
        # Ticks already overdue that the (possibly stuck) sampler can no longer run in time.
        latest = self._latest_due(now_ns)
        return max(0, latest - self._next_k)

    def report(self, now_ns: int) -> dict:
        """Heartbeat entry for this source; starts a new window for rate and jitter."""
        with self._lock:
            span_ns = now_ns - self._win_start_ns
            missed = self.dropped + self._pending_dropped(now_ns)
            out = {
                "target_hz": self.rate_hz,
                "achieved_hz": self._win_samples * 1e9 / span_ns if span_ns > 0 else 0.0,
                "dropped_ticks": missed,
                "samples": self.samples,
            }
            # Ticks run of ticks due in the window: exact where achieved_hz counts ±1 sample at the edges
            # (±10 % at 10 Hz over a second); below RATE_LOW the target rate is not being reached.
            due = self._win_samples + (missed - self._win_missed_start)
            if due > 0:
                out["rate_ratio"] = round(self._win_samples / due, 4)
                out["rate_low"] = self._win_samples / due < RATE_LOW
            self._win_missed_start = missed
            if self._win_jitter_ns:
                jit = sorted(self._win_jitter_ns)
                out["jitter_ms_p50"] = percentile(jit, 50) / 1e6
                out["jitter_ms_p99"] = percentile(jit, 99) / 1e6
            self._win_start_ns = now_ns
            self._win_samples = 0
            self._win_jitter_ns = []
            return out
