"""Energy integrals over sorted sample arrays (pure numpy; times in seconds, power in W, energy in J).

Everything here is expressed as a *cumulative* function F(x) = energy from the first sample to
time x, evaluated at arbitrary times. A window's energy is then F(b) - F(a), and splitting
energy between concurrent requests only needs F at the window edges (see windows.split_windows).

- Power only: F is the trapezoid integral of the piecewise-linear power trace, so window edges
  that fall between samples are interpolated, not dropped.
- Counter (NVML total-energy, mJ): the counter refreshes every ~20-100 ms. Between two refresh
  points the counter gives the exact energy of the interval; where the window edge cuts an
  interval, that interval's counter energy is apportioned by the power samples' shape (by time
  when there is no power trace). Before the first / after the last refresh point the power
  integral extends the counter.

Zero or one sample: F is NaN everywhere except at the single sample (0 J) — callers turn NaN
into "not available", never into 0 J.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# If the counter advanced on at least this share of samples it is read on demand (fresh at t_k).
_FRESH_COUNTER_SHARE = 0.9


def dedupe_sorted(t_s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop NaN values and equal timestamps (keep the last reading at a time); input sorted by t."""
    t_s = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(t_s)
    t_s, y = t_s[ok], y[ok]
    if t_s.size > 1:
        keep = np.ones(t_s.size, dtype=bool)
        keep[:-1] = t_s[1:] != t_s[:-1]
        t_s, y = t_s[keep], y[keep]
    return t_s, y


def cumulative_trapezoid(t_s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """C[i] = integral of the linear interpolation of y from t[0] to t[i] (same length as t)."""
    c = np.zeros(t_s.size, dtype=np.float64)
    if t_s.size > 1:
        np.cumsum(np.diff(t_s) * (y[1:] + y[:-1]) * 0.5, out=c[1:])
    return c


@dataclass(frozen=True)
class Trace:
    """A sorted, de-duplicated (t_s, y) trace with its cumulative trapezoid integral."""

    t_s: np.ndarray
    y: np.ndarray
    cum: np.ndarray

    @classmethod
    def build(cls, t_s, y) -> "Trace":
        t_s, y = dedupe_sorted(t_s, y)
        return cls(t_s, y, cumulative_trapezoid(t_s, y))

    @property
    def n(self) -> int:
        return int(self.t_s.size)

    def span(self) -> tuple[float, float]:
        """(first, last) sample time; (nan, nan) for an empty trace."""
        if self.n == 0:
            return float("nan"), float("nan")
        return float(self.t_s[0]), float(self.t_s[-1])

    def value_at(self, x) -> np.ndarray:
        """Linearly interpolated y at x; NaN outside the sampled span."""
        x = np.asarray(x, dtype=np.float64)
        if self.n == 0:
            return np.full(x.shape, np.nan)
        out = np.interp(x, self.t_s, self.y)
        return np.where((x < self.t_s[0]) | (x > self.t_s[-1]), np.nan, out)

    def integral_at(self, x) -> np.ndarray:
        """F(x) = integral of y from t[0] to x (y·s); NaN outside the sampled span."""
        x = np.asarray(x, dtype=np.float64)
        if self.n == 0:
            return np.full(x.shape, np.nan)
        if self.n == 1:
            return np.where(x == self.t_s[0], 0.0, np.nan)
        t, y = self.t_s, self.y
        i = np.clip(np.searchsorted(t, x, side="right") - 1, 0, t.size - 2)
        dt = x - t[i]
        slope = (y[i + 1] - y[i]) / (t[i + 1] - t[i])
        y_x = y[i] + slope * dt
        out = self.cum[i] + dt * (y[i] + y_x) * 0.5
        return np.where((x < t[0]) | (x > t[-1]), np.nan, out)


def refresh_points(t_s: np.ndarray, counter_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times (s) and values (J) at which a cumulative energy counter was seen to refresh.

    A counter that holds its value for several samples refreshed somewhere between the last
    sample with the old value and the first with the new one: the midpoint is taken (error at
    most half a sample period, and the same bias at both window edges cancels on steady power).
    A counter that changes on (nearly) every sample is fresh when read: its sample time is used.
    The very first reading is a refresh point too only for a fresh counter.
    """
    t_s, e = dedupe_sorted(t_s, counter_j)
    if t_s.size < 2:
        return t_s[:0], e[:0]
    changed = np.flatnonzero(np.diff(e) != 0) + 1
    if changed.size == 0:
        return t_s[:0], e[:0]
    if changed.size >= _FRESH_COUNTER_SHARE * (t_s.size - 1):
        return t_s.copy(), e.copy()
    r = 0.5 * (t_s[changed - 1] + t_s[changed])
    return r, e[changed]


@dataclass(frozen=True)
class CounterEnergy:
    """Cumulative energy from a refreshing counter, with a power trace for shape and edges."""

    r_s: np.ndarray          # refresh times
    e_j: np.ndarray          # counter at those times, J
    power: Trace | None      # instant power (W), or None when the GPU reports none
    span: tuple[float, float]  # sample span: no extrapolation beyond it

    @property
    def usable(self) -> bool:
        return self.r_s.size >= 2 and bool(np.all(np.diff(self.e_j) >= 0))

    def cumulative_at(self, x) -> np.ndarray:
        """F(x) in J relative to the first refresh point; NaN outside the sample span."""
        x = np.asarray(x, dtype=np.float64)
        r, e = self.r_s, self.e_j
        j = np.clip(np.searchsorted(r, x, side="right") - 1, 0, r.size - 2)
        r0, r1, e0, e1 = r[j], r[j + 1], e[j], e[j + 1]
        frac_t = (x - r0) / (r1 - r0)
        has_power = self.power is not None and self.power.n >= 2
        if has_power:
            fx, f0, f1 = (self.power.integral_at(v) for v in (x, r0, r1))
            denom = f1 - f0
            with np.errstate(invalid="ignore", divide="ignore"):
                frac_p = (fx - f0) / denom
            frac = np.where(np.isfinite(frac_p) & (denom > 0), frac_p, frac_t)
        else:
            frac = frac_t
        inside = e0 + (e1 - e0) * frac
        # Outside [r_first, r_last]: extend with power, else with the neighbouring interval's mean power.
        if has_power:
            before = e[0] - (self.power.integral_at(r[0]) - self.power.integral_at(x))
            after = e[-1] + (self.power.integral_at(x) - self.power.integral_at(r[-1]))
            before = np.where(np.isfinite(before), before, e[0] - (r[0] - x) * (e[1] - e[0]) / (r[1] - r[0]))
            after = np.where(np.isfinite(after), after, e[-1] + (x - r[-1]) * (e[-1] - e[-2]) / (r[-1] - r[-2]))
        else:
            before = e[0] - (r[0] - x) * (e[1] - e[0]) / (r[1] - r[0])
            after = e[-1] + (x - r[-1]) * (e[-1] - e[-2]) / (r[-1] - r[-2])
        out = np.where(x < r[0], before, np.where(x > r[-1], after, inside))
        lo, hi = self.span
        return np.where((x < lo) | (x > hi), np.nan, out - e[0])


def counter_energy(t_s, energy_mj, power: Trace | None) -> CounterEnergy:
    """Build the counter-based cumulative energy from raw (t_s, energy_mj) samples."""
    t_d, e_d = dedupe_sorted(t_s, energy_mj)
    r, e = refresh_points(t_d, e_d / 1000.0)
    span = (float(t_d[0]), float(t_d[-1])) if t_d.size else (float("nan"), float("nan"))
    return CounterEnergy(r, e, power, span)
