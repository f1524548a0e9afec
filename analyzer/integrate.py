"""Energy integrals over sorted sample arrays (pure numpy; times in seconds, power in W, energy in J).

Everything here is expressed as a *cumulative* function F(x) = energy from the first sample to
time x, evaluated at arbitrary times. A window's energy is then F(b) - F(a), and splitting
energy between concurrent requests only needs F at the window edges (see windows.split_windows).

- Power only: F is the trapezoid integral of the piecewise-linear power trace, so window edges
  that fall between samples are interpolated, not dropped.
- Counter (NVML total-energy, mJ): the counter refreshes every ~20-100 ms; the refresh instants
  are fitted to a period (``fit_refreshes``). Between two refresh points the counter gives the
  exact energy of the interval; where the window edge cuts an interval, that interval's counter
  energy is apportioned by a power step the counter itself places (``CounterEnergy.steps``), else
  by the power samples' shape (by time when there is no power trace). Before the first / after
  the last refresh point the power integral extends the counter. With instant power the
  analyzer instead corrects the power samples by each interval's counter residual
  (``CounterEnergy.with_power_shape``, analyzer.fused). ``edge_uncertainty`` and
  ``common_uncertainty`` bound the error.

Zero or one sample: F is NaN everywhere except at the single sample (0 J) — callers turn NaN
into "not available", never into 0 J.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable

import numpy as np

from analyzer import fused as fusion
from analyzer.search import clip_index, search_sorted

# If the counter advanced on at least this share of samples it is read on demand (fresh at t_k).
_FRESH_COUNTER_SHARE = 0.9
# Refresh fitting: refreshes per fitted segment (the firmware clock drifts against ours by ppm,
# so one line over an hour would not hold), fewest refreshes a segment needs, and the share of
# refreshes the fitted line must place inside their observed interval (± the slack) to be trusted.
FIT_SEGMENT = 400
FIT_MIN_REFRESHES = 12
FIT_INSIDE_SHARE = 0.9
FIT_SLACK_S = 0.0005
# Counter resolution: NVML's total-energy counter counts whole mJ.
COUNTER_RESOLUTION_J = 0.001
# A refresh interval whose mean power lies between its neighbours', with the intervals beyond
# them this flat relative to the jump, holds a power step: the counter then places the step.
STEP_FLAT = 0.25
STEP_MIN_W = 5.0


def dedupe_sorted(t_s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop NaN values and equal timestamps (keep the last reading at a time); input sorted by t."""
    t_s = np.asarray(t_s, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(t_s)
    if not ok.all():  # (the usual case: nothing to drop, no copy)
        t_s, y = t_s[ok], y[ok]
    if t_s.size > 1:
        keep = np.ones(t_s.size, dtype=bool)
        keep[:-1] = t_s[1:] != t_s[:-1]
        if not keep.all():
            t_s, y = t_s[keep], y[keep]
    return t_s, y



def cumulative_trapezoid(t_s: np.ndarray, y: np.ndarray, dt: np.ndarray | None = None) -> np.ndarray:
    """C[i] = integral of the linear interpolation of y from t[0] to t[i] (same length as t); ``dt``:
    np.diff(t_s) when the caller has it."""
    c = np.zeros(t_s.size, dtype=np.float64)
    if t_s.size > 1:
        np.cumsum((np.diff(t_s) if dt is None else dt) * (y[1:] + y[:-1]) * 0.5, out=c[1:])
    return c


@dataclass(frozen=True)
class Trace:
    """A sorted, de-duplicated (t_s, y) trace with its cumulative trapezoid integral."""

    t_s: np.ndarray
    y: np.ndarray

    @classmethod
    def build(cls, t_s, y) -> "Trace":
        t_s, y = dedupe_sorted(t_s, y)
        return cls(t_s, y)

    @cached_property
    def cum(self) -> np.ndarray:
        """The cumulative trapezoid integral at each sample (a gauge read only for its peaks needs none)."""
        return cumulative_trapezoid(self.t_s, self.y, self.dt)

    @property
    def n(self) -> int:
        return int(self.t_s.size)

    @cached_property
    def dt(self) -> np.ndarray:
        """Per sample interval, its length (s): the integral, the slopes, the spacing and the fused
        shape each need it."""
        return np.diff(self.t_s)

    @cached_property
    def slopes(self) -> np.ndarray:
        """Per sample interval, its linear slope (y·s⁻¹)."""
        return np.diff(self.y) / self.dt

    @cached_property
    def jumps(self) -> np.ndarray:
        """Per sample interval, the size of its change |Δy| (the fused shape's variance, paired jumps
        and steps each need it)."""
        return np.abs(np.diff(self.y))

    @cached_property
    def spacing_s(self) -> float:
        """The median sample spacing (s): the shape's users each need it."""
        return float(np.median(self.dt))

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

    def integral_at(self, x, below: np.ndarray | None = None) -> np.ndarray:
        """F(x) = integral of y from t[0] to x (y·s); NaN outside the sampled span. ``below``: the
        samples at or before each x (np.searchsorted(t, x, "right")) when the caller has them."""
        x = np.asarray(x, dtype=np.float64)
        if self.n == 0:
            return np.full(x.shape, np.nan)
        if self.n == 1:
            return np.where(x == self.t_s[0], 0.0, np.nan)
        t, y = self.t_s, self.y
        i = clip_index((search_sorted(t, x, side="right") if below is None else below) - 1, 0, t.size - 2)
        dt = x - t[i]
        y_i = y[i]
        # many points (a grid, rows of shifts): the slopes of the whole trace, once, then picked
        part = self.slopes[i] if x.size * 4 >= t.size else (y[i + 1] - y_i) / (t[i + 1] - t[i])
        # cum + dt·(y_i + y_x)/2 with y_x = y_i + slope·dt, worked in place (the same operations)
        part *= dt
        part += y_i
        part += y_i
        part *= dt
        part *= 0.5
        out = self.cum[i]
        out += part
        outside = (x < t[0]) | (x > t[-1])
        if not out.ndim:
            return np.where(outside, np.nan, out)
        out[outside] = np.nan
        return out


def refresh_points(t_s: np.ndarray, counter_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times (s) and values (J) at which a cumulative energy counter was seen to refresh, by the midpoint
    rule alone (what ``fit_refreshes`` falls back to; the analyzer uses that).

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
class RefreshFit:
    """Where a held reading (energy counter, held power) refreshed, and how well that is known."""

    r_s: np.ndarray          # refresh instants, s
    y: np.ndarray            # the new value at each refresh
    err_s: np.ndarray        # bound on each instant's error, s
    period_s: float          # refresh period (fitted; else median spacing), NaN when unknown
    method: str              # periodic_fit | midpoint | periodic_fit+midpoint | fresh | none
    fitted: np.ndarray | None = None  # per refresh: on a fitted line (its error is common to its neighbours)
    segment: np.ndarray | None = None  # per refresh: which fitted line (-1: a midpoint)
    drift_s: np.ndarray | None = None  # per refresh: its line's period error bound × its number


def _fit_segment(lo: np.ndarray, hi: np.ndarray, n: np.ndarray) -> tuple[float, float, Callable] | None:
    """Fit refresh k at phi + period·n_k to the intervals (lo_k, hi_k] that must hold it.

    Least squares on the interval midpoints (unbiased when the sampling phase does not lock to
    the refresh period). Returns (phi, period, err(n)): the error bound at refresh number n is the
    larger of the fit's standard error (×3) and half the width of the phase interval that every
    refresh (2 % trimmed) allows (when sampling locks to the refresh phase that width stays as
    wide as a sample period and the bound says so), plus the slack for reads late after their
    stamp. None when the line does not put the refreshes inside their intervals."""
    mid = 0.5 * (lo + hi)
    A = np.vstack([n, np.ones_like(n)]).T
    (period, phi), *_ = np.linalg.lstsq(A, mid, rcond=None)
    pred = phi + period * n
    inside = (pred >= lo - FIT_SLACK_S) & (pred <= hi + FIT_SLACK_S)
    if inside.mean() < FIT_INSIDE_SHARE or not period > 0:
        return None
    resid = mid - pred
    s2 = float(resid @ resid) / max(n.size - 2, 1)
    n_mean = float(n.mean())
    sxx = max(float((n - n_mean) @ (n - n_mean)), 1e-12)
    lo_phase = np.quantile(lo - period * n, 0.98)
    hi_phase = np.quantile(hi - period * n, 0.02)
    phase_half = max(0.5 * float(hi_phase - lo_phase), 0.0)

    def err(k: np.ndarray) -> np.ndarray:
        se = np.sqrt(s2 * (1.0 / n.size + (k - n_mean) ** 2 / sxx))
        return np.maximum(3.0 * se, phase_half) + FIT_SLACK_S

    err.slope = 3.0 * np.sqrt(s2 / sxx)  # bound on the period's error: refreshes far apart drift apart
    return float(phi), float(period), err


def _coherent_numbers(mid: np.ndarray, period: float) -> np.ndarray | None:
    """Refresh numbers of the instants ``mid`` (each off its refresh by up to ± a quarter period):
    the period and phase that line the instants up best (largest |mean exp(2πi·t/p)|), searched
    coarse over the first 50 and fine over all, then each instant's nearest refresh number.
    Counting steps between neighbours instead (rint of their spacing / period) slips by one
    whenever two neighbours' errors add past half a period: at 100 Hz on a 20 ms counter, often.
    None when the instants do not line up (coherence under 0.5: not periodic)."""
    t = mid - mid[0]
    p = period
    for head, span in ((min(50, t.size), 0.1), (t.size, 0.005)):
        cand = p * (1.0 + np.linspace(-span, span, 101))
        z = np.exp(2j * np.pi * t[None, :head] / cand[:, None]).mean(axis=1)
        p = float(cand[int(np.argmax(np.abs(z)))])
    z = np.exp(2j * np.pi * t / p).mean()
    if abs(z) < 0.5:
        return None
    phi = np.angle(z) / (2 * np.pi) * p
    n = np.rint((t - phi) / p)
    return n - n[0]


ORDER_PASSES = 64  # placed_in_order: passes over the crossings before the strict rule


def placed_in_order(r: np.ndarray) -> np.ndarray:
    """Which of the refreshes placed for the changes (in the order the changes were seen) to keep.
    The changes were seen in time order, so their refreshes are too; a change placed at or before the
    one seen before it (two on one refresh, a stamp far off, a line and midpoints crossing at a segment
    join) is numbered wrong, or its neighbour is, and its reading would be tied to the wrong instant:
    both go, pass after pass until the rest are in order (dropping a refresh only merges two intervals;
    the energies stay exact). Sorted instead, a counter's readings could run backwards, and the whole
    run's counter be judged unusable."""
    at = np.arange(r.size)
    for _ in range(ORDER_PASSES):
        x = r[at]
        crossed = x[1:] <= x[:-1]
        if not crossed.any():
            break
        at = at[~(np.concatenate([crossed, [False]]) | np.concatenate([[False], crossed]))]
    else:  # (a tangle: only those after every one before them and before every one after)
        x = r[at]
        at = at[(x > np.concatenate([[-np.inf], np.maximum.accumulate(x)[:-1]]))
                & (x < np.concatenate([np.minimum.accumulate(x[::-1])[::-1][1:], [np.inf]]))]
    keep = np.zeros(r.size, dtype=bool)
    keep[at] = True
    return keep


def fit_refreshes(t_s, y, spacing_s: float | None = None) -> RefreshFit:
    """Refresh instants of a reading that holds its value between refreshes (a counter, held power).

    The firmware refreshes periodically: the period and phase are fitted per segment of the run
    (``_fit_segment``) on the intervals narrower than 0.6 period, then every change, narrow or not,
    is placed on the fitted line at the last refresh before it was seen. The line is trusted over a
    single interval: a read delayed after its stamp (a busy host) makes an interval that misses its
    refresh, and a sampling gap makes one that spans several refreshes; the line still places them.
    Where a segment does not fit, the midpoint of each interval is used (error: half its width).
    A reading that changes on (nearly) every sample is fresh when read: its sample times, error 0.
    ``spacing_s``: the median spacing of ``t_s`` when the caller has it (a fresh reading's period).
    """
    n_in = np.size(t_s)
    t_s, v = dedupe_sorted(t_s, y)
    empty = np.zeros(0)
    if t_s.size < 2:
        return RefreshFit(empty, empty, empty, float("nan"), "none")
    changed = np.flatnonzero(np.diff(v) != 0) + 1
    if changed.size == 0:
        return RefreshFit(empty, empty, empty, float("nan"), "none")
    if changed.size >= _FRESH_COUNTER_SHARE * (t_s.size - 1):
        if spacing_s is None or t_s.size != n_in:  # (samples dropped: not the caller's spacing)
            spacing_s = float(np.median(np.diff(t_s)))
        return RefreshFit(t_s.copy(), v.copy(), np.zeros(t_s.size), spacing_s, "fresh",
                          np.ones(t_s.size, dtype=bool))
    lo, hi = t_s[changed - 1], t_s[changed]
    mid = 0.5 * (lo + hi)
    r, err = mid.copy(), 0.5 * (hi - lo)
    period = float(np.median(np.diff(mid))) if mid.size > 1 else float("nan")
    if mid.size < FIT_MIN_REFRESHES or not period > 0:
        return RefreshFit(r, v[changed], err, period, "midpoint", np.zeros(r.size, dtype=bool))
    narrow = (hi - lo) <= 0.6 * period
    idx_n = np.flatnonzero(narrow)
    # Refresh numbers of the narrow intervals: a step is one period (or several, when unseen).
    steps = np.maximum(np.rint(np.diff(mid[idx_n]) / period), 1.0)
    n_narrow = np.concatenate([[0.0], np.cumsum(steps)])
    on_line = np.zeros(mid.size, dtype=bool)
    seg_id = np.full(mid.size, -1)
    drift = np.zeros(mid.size)
    fitted, periods = 0, []
    segments = 0
    for start in range(0, mid.size, FIT_SEGMENT):
        sl = slice(start, min(start + FIT_SEGMENT, mid.size))
        if mid.size - start < FIT_MIN_REFRESHES and start > 0:
            continue  # a short tail: placed by the previous segment's line below
        segments += 1
        stop = mid.size if mid.size - sl.stop < FIT_MIN_REFRESHES else sl.stop
        sl = slice(start, stop)
        sel = (idx_n >= sl.start) & (idx_n < sl.stop)
        got = None
        if sel.sum() >= FIT_MIN_REFRESHES:
            k = idx_n[sel]
            n0 = n_narrow[sel][0]
            got = _fit_segment(lo[k], hi[k], n_narrow[sel] - n0)
            if got is None:  # the counted steps slipped (sampling as coarse as the period): renumber
                # every change a refresh (sampling faster than the refresh): span / count is the period;
                # the median spacing of the narrow intervals runs long when the spacing takes two values
                seen = mid[sl]
                p0 = min(period, float(seen[-1] - seen[0]) / max(seen.size - 1, 1))
                n_seg = _coherent_numbers(mid[k], p0)
                got = None if n_seg is None else _fit_segment(lo[k], hi[k], n_seg)
                if got is not None:
                    n_narrow[sel] = n_seg + n0
        if got is None:
            continue
        phi, p, err_fn = got
        # a wide interval (a sampling gap) holds several refreshes: its change is the last one
        # before it was seen; a narrow one keeps its number (a read late after its stamp)
        n_here = np.floor((hi[sl] + FIT_SLACK_S - phi) / p)
        n_here[narrow[sl]] = n_narrow[sel] - n0
        r[sl], err[sl] = phi + p * n_here, err_fn(n_here)
        on_line[sl] = True
        seg_id[sl] = segments
        drift[sl] = err_fn.slope * n_here
        fitted += 1
        periods.append(p)
    method = "periodic_fit" if fitted >= segments else "midpoint" if fitted == 0 else "periodic_fit+midpoint"
    if periods:
        period = float(np.median(periods))
    values = v[changed]
    keep = placed_in_order(r)
    return RefreshFit(r[keep], values[keep], err[keep], period, method, on_line[keep], seg_id[keep], drift[keep])


@dataclass(frozen=True)
class CounterEnergy:
    """Cumulative energy from a refreshing counter, with a power trace for shape and edges."""

    r_s: np.ndarray          # refresh times
    e_j: np.ndarray          # counter at those times, J
    power: Trace | None      # instant power (W), or None when the GPU reports none
    span: tuple[float, float]  # sample span: no extrapolation beyond it
    err_s: np.ndarray | None = None   # bound on each refresh instant's error, s
    period_s: float = float("nan")    # refresh period, s
    method: str = "midpoint"          # how the refreshes were located (RefreshFit.method)
    fitted: np.ndarray | None = None  # RefreshFit.fitted
    segment: np.ndarray | None = None  # RefreshFit.segment
    drift_s: np.ndarray | None = None  # RefreshFit.drift_s
    fused: fusion.Fused | None = None  # instant power corrected by the counter (``with_power_shape``)

    def with_power_shape(self, noise_w: float, delay_s: float, trace: Trace | None = None) -> "CounterEnergy":
        """Between the refreshes, the instant power trace corrected by the counter's interval energies
        (analyzer.fused) instead of apportioning each interval's energy by the power's share."""
        if self.power is None or not self.usable:
            return self
        # a fresh counter's refresh points are its samples: its period is their median spacing
        fused = fusion.build(self.r_s, self.e_j, self.power if trace is None else trace, noise_w, delay_s,
                             self.err_s, self.fitted, self.period_s if self.method == "fresh" else None)
        return self if fused is None else replace(self, fused=fused)

    @property
    def usable(self) -> bool:
        return self.r_s.size >= 2 and bool(np.all(np.diff(self.e_j) >= 0))

    @cached_property
    def mean_w(self) -> np.ndarray:
        """Mean power of each refresh interval from the counter alone, W."""
        length = np.diff(self.r_s)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diff(self.e_j) / length

    @cached_property
    def err_median_s(self) -> float:
        """A typical refresh error bound (s): each window edge set's common part uses it."""
        return float(np.median(self.err_s))

    @cached_property
    def steps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per refresh interval: (step instant s, level before, level after); s NaN where none.

        A step between two flat levels (the neighbours' mean powers) is placed where the interval's
        exact counter energy puts it: level_before·(s − r0) + level_after·(r1 − s) = ΔE. The power
        reading cannot do this as well: it is held, sampled, or averaged over a second."""
        m = self.mean_w
        n = m.size
        s = np.full(n, np.nan)
        if n < 5:
            return s, s.copy(), s.copy()
        left, right = np.full(n, np.nan), np.full(n, np.nan)
        # each level extrapolated from its two intervals to this one (a slope before a drop)
        left[2:-2] = 2 * m[1:-3] - m[:-4]
        right[2:-2] = 2 * m[3:-1] - m[4:]
        jump = right - left
        flat_l = np.full(n, np.inf)
        flat_r = np.full(n, np.inf)
        flat_l[2:-2] = np.abs(m[:-4] - m[1:-3])
        flat_r[2:-2] = np.abs(m[4:] - m[3:-1])
        lo_lvl, hi_lvl = np.fmin(left, right), np.fmax(left, right)
        tol = STEP_FLAT * np.abs(jump)
        is_step = ((np.abs(jump) > STEP_MIN_W) & (flat_l <= tol) & (flat_r <= tol)
                   & (m >= lo_lvl - tol) & (m <= hi_lvl + tol))
        k = np.flatnonzero(is_step)  # (placed only where a step is: few intervals)
        r0, r1 = self.r_s[k], self.r_s[k + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            at = r0 + ((self.e_j[k + 1] - self.e_j[k]) - right[k] * (r1 - r0)) / (left[k] - right[k])
        s[k] = np.clip(at, r0, r1)
        return s, left, right

    @cached_property
    def next_to_step(self) -> np.ndarray:
        """Intervals beside a placed step (not steps themselves): flat levels, apportioned by time,
        since a held or averaged power reading still shows the step's smear there."""
        step = np.isfinite(self.steps[0])
        near = np.zeros(step.size, dtype=bool)
        near[1:] |= step[:-1]
        near[:-1] |= step[1:]
        return near & ~step

    def cumulative_at(self, x) -> np.ndarray:
        """F(x) in J relative to the first refresh point; NaN outside the sample span."""
        x = np.asarray(x, dtype=np.float64)
        r, e = self.r_s, self.e_j
        has_power = self.power is not None and self.power.n >= 2
        if self.fused is not None:
            inside = self.fused.cumulative_at(np.clip(x, r[0], r[-1])) + e[0]
        else:
            inside = self._apportioned(x, has_power)
        # Outside [r_first, r_last]: extend with power, else with the neighbouring interval's mean power
        # (none there, where the refreshes span the samples: every x between them)
        below, above = x < r[0], x > r[-1]
        if not (below | above).any():
            out = inside
        else:
            before = e[0] - (r[0] - x) * (e[1] - e[0]) / (r[1] - r[0])
            after = e[-1] + (x - r[-1]) * (e[-1] - e[-2]) / (r[-1] - r[-2])
            if has_power:  # the power's integral where it is finite, the interval's mean power elsewhere
                p_x = self.power.integral_at(x)
                by_power = e[0] - (self.power.integral_at(r[0]) - p_x)
                before = np.where(np.isfinite(by_power), by_power, before)
                by_power = e[-1] + (p_x - self.power.integral_at(r[-1]))
                after = np.where(np.isfinite(by_power), by_power, after)
            out = np.where(below, before, np.where(above, after, inside))
        lo, hi = self.span
        return np.where((x < lo) | (x > hi), np.nan, out - e[0])

    def _apportioned(self, x: np.ndarray, has_power: bool) -> np.ndarray:
        """The counter at x inside [r_first, r_last]: its interval's energy apportioned by a step the
        counter placed, else by the power's share, else by time."""
        r, e = self.r_s, self.e_j
        j = np.clip(np.searchsorted(r, x, side="right") - 1, 0, r.size - 2)
        r0, r1, e0, e1 = r[j], r[j + 1], e[j], e[j + 1]
        frac_t = (x - r0) / (r1 - r0)
        if has_power:
            fx, f0, f1 = (self.power.integral_at(v) for v in (x, r0, r1))
            denom = f1 - f0
            with np.errstate(invalid="ignore", divide="ignore"):
                frac_p = (fx - f0) / denom
            frac = np.where(np.isfinite(frac_p) & (denom > 0), frac_p, frac_t)
            frac = np.where(self.next_to_step[j], frac_t, frac)
        else:
            frac = frac_t
        st, lv0, lv1 = self.steps
        s_j, a_j, b_j = st[j], lv0[j], lv1[j]
        step_here = np.isfinite(s_j)
        if step_here.any():
            xc = np.clip(x, r0, r1)
            with np.errstate(invalid="ignore", divide="ignore"):
                g = a_j * (np.minimum(xc, s_j) - r0) + b_j * np.maximum(xc - s_j, 0.0)
                g1 = a_j * (s_j - r0) + b_j * (r1 - s_j)
                frac_s = g / g1
            frac = np.where(step_here & np.isfinite(frac_s) & (g1 > 0), frac_s, frac)
        return e0 + (e1 - e0) * frac


LATE_READ_SAMPLES = 8  # how many later samples a counter reading is checked against (drop_late_reads)


def drop_late_reads(t_s: np.ndarray, counter: np.ndarray, ahead: int = LATE_READ_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """The samples of a cumulative counter less those read late after their stamp (a busy host): such a
    reading holds a refresh that came after the next samples' stamps, so it is above one of the next
    ``ahead`` samples and reached again by another of them. Kept, the counter ran backwards there and
    the whole run's counter was unusable (its energy fell back to the power trapezoid). A counter reset
    (a driver reload: back to about zero from a whole run's joules) is never reached again so soon, and
    still shows."""
    n = counter.size
    if n < 2 or not (np.diff(counter) < 0).any():  # (the usual case: never backwards, nothing to drop)
        return t_s, counter
    low, high = np.full(n, np.inf), np.full(n, -np.inf)  # the least and the most of the next ``ahead``
    for k in range(1, min(ahead, n - 1) + 1):
        low[:-k] = np.minimum(low[:-k], counter[k:])
        high[:-k] = np.maximum(high[:-k], counter[k:])
    keep = ~((counter > low) & (counter <= high))
    return t_s[keep], counter[keep]


def counter_energy(t_s, energy_mj, power: Trace | None, spacing_s: float | None = None) -> CounterEnergy:
    """Build the counter-based cumulative energy from raw (t_s, energy_mj) samples (``spacing_s``: the
    median spacing of ``t_s`` when the caller has it)."""
    t_d, e_d = dedupe_sorted(t_s, energy_mj)
    t_d, e_d = drop_late_reads(t_d, e_d)
    fit = fit_refreshes(t_d, e_d / 1000.0, spacing_s if t_d.size == np.size(t_s) else None)
    span = (float(t_d[0]), float(t_d[-1])) if t_d.size else (float("nan"), float("nan"))
    return CounterEnergy(fit.r_s, fit.y, power, span, fit.err_s, fit.period_s, fit.method, fit.fitted, fit.segment,
                         fit.drift_s)


def _per_interval(t: np.ndarray, y: np.ndarray, r: np.ndarray, ufunc) -> np.ndarray:
    """ufunc-reduce of y over the samples in each interval [r_k, r_k+1) (the last runs to the end);
    NaN where an interval holds none. Callers widen it to the neighbours with ``_around``."""
    b = search_sorted(t, r, side="left")
    start, stop = b[:-1], b[1:]
    has = stop > start
    if not has.any():
        return np.full(start.size, np.nan)
    return np.where(has, ufunc.reduceat(y, np.minimum(start, t.size - 1)), np.nan)


def _around(v: np.ndarray, ufunc) -> np.ndarray:
    """ufunc (np.fmax / np.fmin) over each element and its two neighbours."""
    pad = np.concatenate([[v[0]], v, [v[-1]]])
    return ufunc(ufunc(pad[:-2], pad[1:-1]), pad[2:])


def edge_uncertainty(ce: CounterEnergy, x, delay_s: float, sample_t_s: np.ndarray | None = None,
                     noise_w: float = 0.0, spacing_s: float | None = None) -> np.ndarray:
    """Bound on the error of ``ce.cumulative_at(x)`` (J) at each instant x.

    Within a refresh interval the counter's energy is exact; what is uncertain is how much of it
    falls before x. Per interval (J):

    - refresh-time error bound × the power change next to the interval (counter mean powers,
      exact): a refresh placed δ off shifts F by δ × P, which cancels between a window's edges
      except for the power change (``common_uncertainty`` adds the change between the edges);
      a refresh located by a midpoint, independently of its neighbours, adds δ × P itself;
    - shape, where the counter placed a step (``CounterEnergy.steps``): the step instant moves
      by δ × (level before + level after) / jump (δ × jump / jump for refreshes on one fitted
      line, whose errors move together), so δ × (level before + level after) joules (δ × jump);
      plus the levels' curvature × the interval;
    - shape elsewhere: the shape reading's delay (``delay_s``: hold, sample spacing, widened by
      sample gaps; at most half the interval) × the power change / 2, plus the power's departure
      from a straight line (largest second difference of the counter means around the interval,
      steps placed by the counter left out) × interval / 40 × min(1, (``spacing_s`` / interval)²):
      a shape read every ``spacing_s`` follows curvature down to its spacing (the counter's own
      mean line: spacing = interval);
    - the shape reading's noise (``noise_w``, W) × √(delay + spacing) × interval / 2);
    - the counter's 1 mJ resolution.

    Steady or linearly changing power: every term but noise and resolution is near zero, as is
    the error. A bound, not a standard deviation: the bench checks the error falls inside it.
    """
    return edge_uncertainty_fn(ce, delay_s, sample_t_s, noise_w, spacing_s)(x)


def edge_uncertainty_fn(ce: CounterEnergy, delay_s: float, sample_t_s: np.ndarray | None = None,
                        noise_w: float = 0.0, spacing_s: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``edge_uncertainty`` as a function of x: the per-interval terms computed once for many calls."""
    r = ce.r_s
    if r.size < 2:
        return lambda x: np.full(np.shape(x), np.nan)
    m = ce.mean_w
    n = m.size
    pad = np.concatenate([[m[0]], m, [m[-1]]])
    d1 = np.fmax(np.abs(pad[1:-1] - pad[:-2]), np.abs(pad[2:] - pad[1:-1]))
    err = ce.err_s if ce.err_s is not None else np.zeros(r.size)
    t_err = np.maximum(err[:-1], err[1:])
    fitted = ce.fitted if ce.fitted is not None else np.zeros(r.size, dtype=bool)
    together = fitted[:-1] & fitted[1:]
    indep = np.where(together, 0.0, t_err * np.abs(m))
    terms = (ce, delay_s, sample_t_s, noise_w, spacing_s, d1, t_err, together, indep)
    if ce.fused is None:
        per_interval = _interval_bounds(*terms)

        def at(x) -> np.ndarray:
            k = np.searchsorted(r, np.asarray(x, dtype=np.float64), side="right") - 1
            return per_interval[np.clip(k, 0, n - 1)]
        return at
    # the shape's part comes from the fused variance model; the refresh instants' part stays. The
    # whole per-interval bound holds only outside the refresh points (the span's ends): worked out
    # the first time an x lies there (never, where the refreshes span the samples)
    timing = np.nan_to_num(d1 * t_err + indep, nan=0.0) + COUNTER_RESOLUTION_J
    outside: list[np.ndarray] = []

    def at_fused(x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        k = np.clip(np.searchsorted(r, x, side="right") - 1, 0, n - 1)
        inside = (x >= r[0]) & (x <= r[-1])
        if not inside.all() and not outside:
            outside.append(_interval_bounds(*terms))
        other = outside[0][k] if outside else 0.0
        return np.where(inside, timing[k] + ce.fused.shape_uncertainty(np.clip(x, r[0], r[-1])), other)
    return at_fused


def _interval_bounds(ce: CounterEnergy, delay_s: float, sample_t_s: np.ndarray | None, noise_w: float,
                     spacing_s: float | None, d1: np.ndarray, t_err: np.ndarray, together: np.ndarray,
                     indep: np.ndarray) -> np.ndarray:
    """``edge_uncertainty``'s bound per refresh interval, every term (J)."""
    r, m = ce.r_s, ce.mean_w
    n = m.size
    length = np.diff(r)
    d2 = np.zeros(n)
    if n >= 3:
        d2[1:-1] = np.abs(m[2:] - 2 * m[1:-1] + m[:-2])
    st, lv0, lv1 = ce.steps
    step = np.isfinite(st)
    explained = step | ce.next_to_step
    near = np.zeros(n, dtype=bool)
    near[1:] |= step[:-1]
    near[:-1] |= step[1:]
    # curvature a placed step does not explain; around a step: its levels' curvature (±3 intervals)
    d2_rest = np.where(step | near, 0.0, d2)
    curv = _around(d2_rest, np.fmax)
    side_all = _around(curv, np.fmax)
    tau = np.minimum(delay_s, 0.5 * length)
    if sample_t_s is not None and sample_t_s.size > 1:
        # a sample gap in or next to the interval: the shape is unknown across it
        gaps = np.concatenate([[0.0], np.diff(sample_t_s)])  # gaps[i]: spacing before sample i
        big = _around(_per_interval(sample_t_s, gaps, r, np.maximum), np.fmax)
        tau = np.maximum(tau, np.minimum(0.5 * np.nan_to_num(big, nan=0.0), 0.5 * length))
    with np.errstate(invalid="ignore"):
        levels = np.where(together, np.abs(lv1 - lv0), np.abs(lv0) + np.abs(lv1))
        step_term = t_err * levels + side_all * length
    spacing = length if spacing_s is None else np.minimum(spacing_s, length)
    curv_len = length / 40 * np.minimum(1.0, (spacing / length) ** 2)
    shape = np.where(step, step_term, np.where(explained, side_all * length, d1 * tau / 2 + curv * curv_len))
    noise = 0.0 if not noise_w else noise_w * np.sqrt(np.maximum(delay_s, 0.005) * length / 2)
    noise = np.where(step | explained, 0.0, noise)
    return np.nan_to_num(d1 * t_err + shape + noise + indep, nan=0.0) + COUNTER_RESOLUTION_J


def common_uncertainty(ce: CounterEnergy, a, b) -> np.ndarray:
    """The part of the refresh-time error shared by a window's two edges (J): a typical refresh
    error bound × the change of the counter's mean power between the intervals holding a and b;
    edges on two different fitted lines add each one's error bound × its power."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    r = ce.r_s
    if r.size < 2 or ce.err_s is None:
        return np.full(np.broadcast(a, b).shape, np.nan)
    m = ce.mean_w
    ka = np.clip(np.searchsorted(r, a, side="right") - 1, 0, m.size - 1)
    kb = np.clip(np.searchsorted(r, b, side="right") - 1, 0, m.size - 1)
    out = ce.err_median_s * np.abs(m[kb] - m[ka])
    if ce.segment is not None:
        # edges on two fitted lines (segments of the run): their errors no longer move together
        apart = (ce.segment[ka] != ce.segment[kb]) & (ce.segment[ka] >= 0) & (ce.segment[kb] >= 0)
        out = out + np.where(apart, ce.err_s[ka] * np.abs(m[ka]) + ce.err_s[kb] * np.abs(m[kb]), 0.0)
        if ce.drift_s is not None:
            # on one line: a period error moves the two edges' refreshes apart by slope × their distance
            together = (ce.segment[ka] == ce.segment[kb]) & (ce.segment[ka] >= 0)
            out = out + np.where(together, np.abs(ce.drift_s[kb] - ce.drift_s[ka]) * np.abs(m[kb]), 0.0)
    return out
