"""The power samples corrected by the counter's whole-interval energies (pure numpy; s, W, J).

Between two counter refreshes r_k, r_k+1 the counter knows the exact energy ΔE_k; the power
trace's trapezoid over the same interval is off by the residual ρ_k = ΔE_k − T_k. That residual is
the trapezoid's error, and it sits where the trapezoid can be wrong: on the sample intervals where
the power jumps (a burst edge somewhere between two readings), a little everywhere for noise.
So each refresh interval's residual is shared among its sample intervals in proportion to their
error variance (the best linear estimate of each part's error, given their sum):

    v_i = (|Δp_i| · (Δt_i + delay))² / 12 + (noise · Δt_i)²   (a step anywhere in the interval)

and F(x) = T(x) + the residual shares before x. Where the power is flat the trace is kept as read;
whole refresh intervals come out exactly as the counter says; a window inside one refresh interval
moves away from the plain trapezoid only by the share of residual its own jumps carry, so on
average it is never worse than the samples alone. The bound at x combines the remaining variance
(3 σ of the part before x, given the interval's sum) and the residual the variance model does not
explain (a burst between two readings: placed by the variance, but it may sit anywhere). For the
bound only, each piece also carries what the readings may misplace (the largest paired change
within reach: a held reading aliases a train of short bursts), and the split before x is
taken at its worst within reach of x.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from analyzer.search import clip_index, search_sorted, window_reduce

if TYPE_CHECKING:  # integrate imports this module
    from analyzer.integrate import Trace

STEP_MIN_W = 5.0
SIGMAS = 3.0
UNEXPLAINED_SIGMAS = 0.0  # the bound: this many standard deviations of the explained part
# The power reading's lag against the counter is searched in this range (s; positive: the power
# reading shows a change late, e.g. a reading held by the GPU and sampled stale), on this step.
LAG_RANGE_S = (-0.01, 0.03)
LAG_STEP_S = 0.0005
LAG_INTERVALS = 1000
LAG_MIN_GAIN = 0.8  # a lag is applied only when it cuts the residuals' sum of squares to this share
PARTNER_STEPS = 8  # neighbours within a paired jump's reach stepped through directly; beyond, searched
SPARSE_SHARE = 32  # paired jumps worked out per change where at most 1 in this many readings changes


def fit_lag(r_s: np.ndarray, e_j: np.ndarray, power: "Trace") -> float:
    """How late the power reading shows a change, against the counter's exact interval energies (s).

    The lag that makes the power's integral over every refresh interval closest to the counter's
    (least squares); 0 when shifting does not help clearly (steady power carries no timing)."""
    p_lo, p_hi = power.span()
    inner = (r_s + LAG_RANGE_S[0] >= p_lo) & (r_s + LAG_RANGE_S[1] <= p_hi)
    r, e = r_s[inner], e_j[inner]
    if r.size < 3:
        return 0.0
    # at most LAG_INTERVALS refresh intervals, spread over the run: the lag is one number
    k = np.arange(0, r.size - 1, max(1, (r.size - 1) // LAG_INTERVALS))
    r0, r1, de = r[k], r[k + 1], e[k + 1] - e[k]
    lags = np.arange(LAG_RANGE_S[0], LAG_RANGE_S[1] + LAG_STEP_S / 2, LAG_STEP_S)
    # every lag in one call, each interval's lags side by side (sorted: a quicker search), element
    # for element as one call per lag; then a lag's residuals summed as one row, as they were
    resid = (de[:, None] - power.integral_at(r1[:, None] + lags) + power.integral_at(r0[:, None] + lags)) ** 2
    sse = np.ascontiguousarray(resid.T).sum(axis=1)  # (a contiguous row's pairwise sum: np.sum's per row)
    best = int(np.argmin(sse))
    zero = int(np.argmin(np.abs(lags)))
    if not sse[best] < LAG_MIN_GAIN * sse[zero]:
        return 0.0
    if 0 < best < lags.size - 1:  # parabola through the minimum and its neighbours
        y0, y1, y2 = sse[best - 1], sse[best], sse[best + 1]
        den = y0 - 2 * y1 + y2
        if den > 0:
            return float(lags[best] + 0.5 * LAG_STEP_S * (y0 - y2) / den)
    return float(lags[best])


@dataclass(frozen=True)
class Fused:
    """F relative to the first refresh, on a grid u (refresh points ∪ power samples inside them)."""

    r_s: np.ndarray      # refresh points
    u: np.ndarray        # grid
    t0_j: float          # power integral at r_s[0]
    power: Trace
    d_u: np.ndarray      # residual placed before each grid point (cumulative), J
    cv_u: np.ndarray     # variance before each grid point (cumulative over the run), J²
    cv_r: np.ndarray     # the same at each refresh point
    v_k: np.ndarray      # variance of each refresh interval, J²
    rho_k: np.ndarray    # residual of each refresh interval, J
    lag_s: float = 0.0   # how late the power reading showed changes (corrected), s
    step_s: np.ndarray | None = None  # per grid piece: where its power step sits (NaN: no step)
    levels: tuple[np.ndarray, np.ndarray] | None = None  # per grid piece: power before / after its step
    f_u: np.ndarray | None = None  # F at the grid points
    reach_s: float = 0.0  # how far a change may sit from where the trace shows it (delay + spacing), s

    def cumulative_at(self, x) -> np.ndarray:
        """F(x) − F(r_0), J, for x in [r_0, r_last] (NaN outside)."""
        x = np.asarray(x, dtype=np.float64)
        out = self.power.integral_at(x) - self.t0_j + np.interp(x, self.u, self.d_u)
        if self.step_s is not None:
            # inside a piece that holds a step: the step's integral, placed where the piece's
            # corrected energy puts it, instead of the linear ramp between the two readings
            u, f_u = self.u, self.f_u
            j = np.clip(np.searchsorted(u, x, side="right") - 1, 0, u.size - 2)
            s = self.step_s[j]
            step = np.isfinite(s)
            if step.any():
                u0, u1 = u[j], u[j + 1]
                y0, y1 = self.levels[0][j], self.levels[1][j]
                xc = np.clip(x, u0, u1)
                g = y0 * (np.minimum(xc, s) - u0) + y1 * np.maximum(xc - s, 0.0)
                g1 = y0 * (s - u0) + y1 * (u1 - s)
                with np.errstate(invalid="ignore", divide="ignore"):
                    rest = (f_u[j + 1] - f_u[j] - g1) * (xc - u0) / (u1 - u0)
                out = np.where(step, f_u[j] + g + rest, out)
        return np.where((x < self.r_s[0]) | (x > self.r_s[-1]), np.nan, out)

    def shape_uncertainty(self, x) -> np.ndarray:
        """Bound (J) on the error of F(x) from the shape inside its refresh interval."""
        x = np.asarray(x, dtype=np.float64)
        k = np.clip(np.searchsorted(self.r_s, x, side="right") - 1, 0, self.v_k.size - 1)
        v = self.v_k[k]
        lo, hi = self.r_s[k], self.r_s[np.minimum(k + 1, self.r_s.size - 1)]
        # the trace shows a change up to reach_s away from where it happened (a held or late reading,
        # a burst between two samples): the variance before x is only known to lie between its
        # values reach_s either side, and the bound takes the worst split in that range
        vb_lo = np.clip(np.interp(np.maximum(x - self.reach_s, lo), self.u, self.cv_u) - self.cv_r[k], 0.0, v)
        vb_hi = np.clip(np.interp(np.minimum(x + self.reach_s, hi), self.u, self.cv_u) - self.cv_r[k], 0.0, v)
        vb = np.clip(0.5 * v, vb_lo, vb_hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(v > 0, vb / v, 0.5)
            sigma = np.sqrt(np.where(v > 0, vb * (v - vb) / v, 0.0))
        unexplained = np.maximum(np.abs(self.rho_k[k]) - UNEXPLAINED_SIGMAS * np.sqrt(v), 0.0)
        return SIGMAS * sigma + unexplained * np.maximum(w, 1.0 - w)


def build(r_s: np.ndarray, e_j: np.ndarray, power: Trace, noise_w: float, delay_s: float,
          err_s: np.ndarray | None = None, fitted: np.ndarray | None = None,
          spacing_s: float | None = None) -> Fused | None:
    """The fused F for refresh points (r_s, e_j) and an instant-power trace; None where the power
    trace does not span the refreshes (the caller keeps the counter's own rule).

    ``err_s``/``fitted``: the refresh instants' error bounds and whether each lies on a fitted line.
    A refresh located only by a midpoint (± several ms) makes its counter value an uncertain
    observation of the energy up to an uncertain instant; there the correction is smoothed
    (``_smooth``) instead of forcing the trace through every value. ``spacing_s``: the refresh points'
    median spacing when the caller has it."""
    if r_s.size < 2 or power.n < 2:
        return None
    lag = fit_lag(r_s, e_j, power)
    if lag:
        # shifted, the trace still spans the refreshes: its end reading held to the old end
        lo, hi = power.span()
        t, y = power.t_s - lag, power.y
        t = np.concatenate([[lo], t, [hi]])
        y = np.concatenate([y[:1], y, y[-1:]])
        keep = (t >= lo) & (t <= hi)
        power = type(power).build(t[keep], y[keep])
    u, below_t, below_r, at_r = _grid(r_s, power.t_s)
    t_u = power.integral_at(u, below_t)
    if not np.all(np.isfinite(t_u)):
        return None
    length = np.diff(u)
    area = np.diff(t_u)
    # each grid piece lies in one sample interval i (its parent) and one refresh interval k
    mid = 0.5 * (u[1:] + u[:-1])
    if not ((mid > u[:-1]).all() and (mid < u[1:]).all()):  # a piece too short to hold its midpoint
        below_t = below_r = None
    i = clip_index((search_sorted(power.t_s, mid, side="right") if below_t is None else below_t[:-1]) - 1,
                   0, power.n - 2)
    # per sample interval (fewer than the pieces), then picked by each piece's parent
    dt_i = power.dt
    delay = max(float(delay_s), 0.0) if np.isfinite(delay_s) else 0.0
    v_i = (power.jumps * (dt_i + delay)) ** 2 / 12.0 + (noise_w * dt_i) ** 2
    # a piece of a sample interval carries its share of the parent's variance (by time); a tiny
    # floor so a flat, clean trace spreads its residual by time rather than by nothing
    v = v_i[i]
    v *= length
    v /= dt_i[i]
    v += 1e-12 * length
    k = clip_index((search_sorted(r_s, mid, side="right") if below_r is None else below_r[:-1]) - 1, 0,
                   r_s.size - 2)
    n_k = r_s.size - 1
    v_k = np.bincount(k, weights=v, minlength=n_k)
    rho_k = np.diff(e_j) - np.bincount(k, weights=area, minlength=n_k)
    if err_s is not None and fitted is not None and not np.all(fitted):
        # variance of each counter value as a reading of the energy up to its (uncertain) instant
        obs = np.where(fitted, 0.0, (power.value_at(r_s) * err_s) ** 2 / 3.0)
        d = _smooth(np.concatenate([[0.0], np.cumsum(rho_k)]), v_k, np.nan_to_num(obs, nan=0.0))
        rho_k = np.diff(d)
    share = rho_k[k]
    share *= v
    share /= v_k[k]
    d_u = _from_zero(share)
    # The bound's variance (not the estimate's): besides a step between two readings, a burst or a
    # train of them may show at the wrong place or not at all (a 10 ms step read through a 20 ms
    # hold): a piece near paired changes may be off by up to their height over its length.
    # Changes pair up within a refresh period (what the counter cannot tell apart), at least reach.
    reach = delay + power.spacing_s
    spacing = float(np.median(np.diff(r_s))) if spacing_s is None else spacing_s
    v_b = _paired_jump(power, mid, max(reach, 0.5 * spacing))
    v_b *= length
    v_b **= 2
    v_b /= 12.0
    v_b += v
    v_kb = np.bincount(k, weights=v_b, minlength=n_k)
    cv = _from_zero(v_b)
    area += share
    f_u = t_u - t_u[0]
    f_u += d_u
    return Fused(r_s, u, float(t_u[0]), power, d_u, cv, cv[at_r], v_kb, rho_k, lag,
                 _steps(u, power, i, area, noise_w), (power.y[i], power.y[i + 1]), f_u, reach)


def _from_zero(a: np.ndarray) -> np.ndarray:
    """0 and then the running sum of ``a`` (np.concatenate([[0.0], np.cumsum(a)]) without the copy)."""
    out = np.empty(a.size + 1)
    out[0] = 0.0
    np.cumsum(a, out=out[1:])
    return out


def _grid(r_s: np.ndarray, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The grid u: the refresh points and the samples inside them (np.union1d of two increasing
    arrays, merged by one stable sort that finds the two runs), and from that merge, as
    np.searchsorted would give them: per grid point the samples and the refresh points at or
    before it (side "right"), per refresh point its place in u."""
    inner = t_s[(t_s > r_s[0]) & (t_s < r_s[-1])]
    both = np.concatenate([r_s, inner])
    order = np.argsort(both, kind="stable")
    merged = both[order]
    first = np.ones(merged.size, dtype=bool)
    np.not_equal(merged[1:], merged[:-1], out=first[1:])
    end = np.flatnonzero(np.append(first[1:], True))  # a run of equal points counts whole: at its last
    u = merged[end]
    # the stable merge keeps each array's order: at merged position m, a refresh point's own number
    # counts the refresh points up to it, and an inner sample's number the samples up to it
    o = order[end]
    from_r = o < r_s.size
    below_r = np.where(from_r, o + 1, end - (o - r_s.size))
    # samples up to r_s[0] are not in the grid; one equal to r_s[-1] is not either
    below_t = end + 1 - below_r + np.searchsorted(t_s, r_s[0], side="right")
    below_t[-1] = np.searchsorted(t_s, u[-1], side="right")
    at_r = np.flatnonzero(order < r_s.size)
    if end.size < merged.size:  # equal points merged: a refresh point's place counts the runs before it
        at_r = (np.cumsum(first) - 1)[at_r]
    return u, below_t, below_r, at_r


def _paired_jump(power: "Trace", x: np.ndarray, reach_s) -> np.ndarray:
    """Per instant x, the largest change between two consecutive power readings within reach of it
    that has a partner (another change at least as large) within reach too (W): a burst or an
    aliased train, whose readings may sit at the wrong place. A lone step (a square wave's edge, a
    long burst's start) has none and keeps its own, placed-step bound; smooth power has small ones.

    Per x, the largest over the changes whose midpoints lie in [x − reach, x + reach] (the change
    nearest after x − reach where none does: a gap). Readings held between changes (a stepped or
    held power reading: most changes 0) take ``_paired_sparse``, the same values."""
    d = power.jumps
    changed = np.flatnonzero(d)
    if changed.size * SPARSE_SHARE <= d.size:
        return _paired_sparse(d, power.t_s, changed, x, reach_s)
    mid = 0.5 * (power.t_s[1:] + power.t_s[:-1])
    partner = _partner(d, mid, reach_s)
    paired = np.minimum(d, partner)
    a = clip_index(search_sorted(mid, x - reach_s, side="left"), 0, d.size - 1)
    b = clip_index(search_sorted(mid, x + reach_s, side="right"), a + 1, d.size)
    return window_reduce(paired, [(a, b)], np.maximum)[0]


def _paired_sparse(d: np.ndarray, t: np.ndarray, changed: np.ndarray, x: np.ndarray, reach_s) -> np.ndarray:
    """``_paired_jump`` where few readings change (``changed``: where d is not 0): a change pairs only
    with another change, and a paired change j counts at the instants x whose window holds it; those
    are a run of x (the windows' ends increase with x), found by two searches per change, not one per x.

    x's window is the sample intervals [a, b): a = how many have their midpoint < x − reach (at most
    the last), b = how many have it <= x + reach (at least a + 1). It holds j when a <= j < b: a <= j
    is x − reach <= mid_j (the x before p1); b > j is mid_j <= x + reach (the x from the first with
    x + reach >= mid_j on) or a = j (an empty window: the x from p1 of j − 1 on); the last interval
    is in the window of every x from there to the end."""
    out = np.zeros(x.size)
    d_c = d[changed]
    paired = np.minimum(d_c, _partner(d_c, 0.5 * (t[changed + 1] + t[changed]), reach_s))
    j, value = changed[paired > 0], paired[paired > 0]
    if not j.size:
        return out
    lo_x, hi_x = x - reach_s, x + reach_s
    mid_j = 0.5 * (t[j + 1] + t[j])
    before = np.maximum(j - 1, 0)
    p1 = np.searchsorted(lo_x, mid_j, side="right")
    p1_before = np.where(j > 0, np.searchsorted(lo_x, 0.5 * (t[before + 1] + t[before]), side="right"), 0)
    first = np.minimum(np.searchsorted(hi_x, mid_j, side="left"), p1_before)
    p1[j == d.size - 1] = x.size
    n = np.maximum(p1 - first, 0)
    at = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n - first, n)  # each run's x, run after run
    np.maximum.at(out, at, np.repeat(value, n))
    return out


def _partner(d: np.ndarray, mid: np.ndarray, reach_s) -> np.ndarray:
    """Per change d[j] (at increasing instants mid), the largest other change within reach of it on
    either side (0 where there is none): neighbours taken a step at a time outwards while any is in
    reach (a few: reach spans a few samples), else from a sparse table over searched windows."""
    lo_x, hi_x = mid - reach_s, mid + reach_s
    far = PARTNER_STEPS + 1
    # dense samples (a change in reach beyond PARTNER_STEPS on either side): search each window instead;
    # else nothing past the steps below is in reach (mid increases), so stepping is complete
    if d.size > far and ((mid[far:] <= hi_x[:-far]) | (mid[:-far] >= lo_x[far:])).any():
        return _partner_searched(d, mid, reach_s)
    partner = np.zeros(d.size)
    for m in range(1, min(d.size, far)):
        left = mid[:-m] >= lo_x[m:]  # j - m within reach of j
        right = mid[m:] <= hi_x[:-m]  # j + m within reach of j
        if not (left.any() or right.any()):
            break
        np.maximum(partner[m:], d[:-m], out=partner[m:], where=left)
        np.maximum(partner[:-m], d[m:], out=partner[:-m], where=right)
    return partner


def _partner_searched(d: np.ndarray, mid: np.ndarray, reach_s) -> np.ndarray:
    j = np.arange(d.size)
    lo = search_sorted(mid, mid - reach_s, side="left")
    hi = search_sorted(mid, mid + reach_s, side="right")
    has_l, has_r = lo < j, hi > j + 1
    left, right = window_reduce(d, [(np.where(has_l, lo, 0), np.where(has_l, j, 1)),
                                     (np.where(has_r, j + 1, 0), np.where(has_r, hi, 1))], np.maximum)
    return np.maximum(np.where(has_l, left, 0.0), np.where(has_r, right, 0.0))


def _smooth(resid: np.ndarray, v_k: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """The trace's cumulative error at each refresh point, given the counter's residuals ``resid``
    observed with variance ``obs`` and the trace's error growing by ``v_k`` over each interval:
    minimises Σ (D_k+1 − D_k)² / v_k + Σ (D_k − resid_k)² / obs_k (a tridiagonal system, Thomas
    algorithm). Refreshes with obs 0 are kept exactly."""
    n = resid.size
    p_obs = 1.0 / np.maximum(obs, 1e-12)
    p_v = 1.0 / np.maximum(v_k, 1e-9)
    diag = p_obs.copy()
    diag[:-1] += p_v
    diag[1:] += p_v
    off = -p_v  # between k and k+1
    rhs = resid * p_obs
    c = np.zeros(n - 1)
    dd = np.zeros(n)
    b0 = diag[0]
    c[0], dd[0] = off[0] / b0, rhs[0] / b0
    for i in range(1, n):  # forward sweep (one pass per refresh, run only when some are midpoints)
        den = diag[i] - off[i - 1] * c[i - 1]
        if i < n - 1:
            c[i] = off[i] / den
        dd[i] = (rhs[i] - off[i - 1] * dd[i - 1]) / den
    out = dd
    for i in range(n - 2, -1, -1):
        out[i] = dd[i] - c[i] * out[i + 1]
    return out


def _steps(u: np.ndarray, power: "Trace", i: np.ndarray, energy: np.ndarray, noise_w: float) -> np.ndarray:
    """Per grid piece, the instant of the power step it holds (NaN where none).

    A step: the reading jumps between two samples by more than STEP_MIN_W + 6 × noise and by over
    twice the change on either side (a ramp or a sine changes alike from sample to sample and keeps
    the linear trapezoid). The piece's corrected energy places it: y0·(s − u0) + y1·(u1 − s) = E,
    y0 and y1 the readings on either side; a sample interval cut by a refresh is two pieces, each
    placed by its own interval's energy (the step then lands in one, the other is flat)."""
    d = power.jumps
    pad = np.concatenate([[0.0], d, [0.0]])
    big = (d > STEP_MIN_W + 6.0 * noise_w) & (d > 2.0 * np.maximum(pad[:-2], pad[2:]))
    at = np.flatnonzero(big[i])  # (placed only where a step is: few pieces)
    out = np.full(i.size, np.nan)
    u0, u1, ia = u[at], u[at + 1], i[at]
    y0, y1 = power.y[ia], power.y[ia + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        s = u0 + (energy[at] - y1 * (u1 - u0)) / (y0 - y1)
    out[at] = np.clip(s, u0, u1)
    return out

