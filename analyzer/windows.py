"""Joining request windows to sample series (pure numpy; times in seconds on the monotonic clock).

- ``split_windows``: energy of overlapping windows, each elementary interval between window
  edges shared equally by the requests active in it, so per-request energies sum to the total.
- ``seq_gap_intervals`` / ``coverage``: which parts of a window the samples really cover.
- ``window_mean`` / ``window_peak``: gauges (utilisation, memory, temperature) over a window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from analyzer.integrate import Trace
from analyzer.search import window_reduce

# A sample interval this many times the median spacing, with sequence numbers missing, is a gap.
GAP_FACTOR = 1.5


@dataclass(frozen=True)
class Split:
    """Per-window result of ``split_windows`` (arrays aligned with the input windows)."""

    energy: np.ndarray          # share of F's increase, same unit as F
    effective_s: np.ndarray     # window time divided by the number of requests active (s)
    max_active: np.ndarray      # most requests active at once during the window
    total: float                # F's increase over the union of all windows


def active_segments(a_s: np.ndarray, b_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints u (sorted unique window edges) and n[k] = windows active on (u[k], u[k+1])."""
    u = np.unique(np.concatenate([a_s, b_s]))
    starts = np.searchsorted(u, a_s)
    ends = np.searchsorted(u, b_s)
    delta = np.zeros(u.size + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    n = np.cumsum(delta)[: max(u.size - 1, 0)]
    return u, n


def split_windows(cumulative: Callable[[np.ndarray], np.ndarray], a_s, b_s) -> Split:
    """Share ``cumulative``'s increase over each window; equal split among concurrently active windows.

    ``cumulative(x)`` must be finite wherever it is called (clip to the sampled span first);
    segments where it is not contribute nothing (the window's coverage says so).
    """
    a_s = np.asarray(a_s, dtype=np.float64)
    b_s = np.asarray(b_s, dtype=np.float64)
    if a_s.size == 0:
        empty = np.zeros(0)
        return Split(empty, empty, np.zeros(0, dtype=np.int64), 0.0)
    if np.any(b_s < a_s):
        raise ValueError("split_windows: a window ends before it starts (req.end.t < req.start.t)")
    # (each array made in place of the last where it can, and let go once used: a week's windows are
    # hundreds of thousands, and these arrays a few times as many values)
    u, n = active_segments(a_s, b_s)
    ia, ib = np.searchsorted(u, a_s), np.searchsorted(u, b_s)
    # Most concurrent requests within each window (1 for a window alone; n is >= 1 inside any window).
    max_active = _max_over(n, ia, ib, 1)
    idle = n == 0
    n = np.maximum(n, 1, out=n)
    seg = np.diff(cumulative(u))
    seg[~np.isfinite(seg)] = 0.0
    total = float(np.sum(np.where(idle, 0.0, seg)))
    energy = _shared(seg, n, idle, ia, ib)
    del seg
    effective = _shared(np.diff(u), n, idle, ia, ib)
    return Split(energy, effective, max_active, total)


SPLIT_BLOCK = 1 << 15  # windows a block of split_time (its arrays: a few MiB, whatever the run's length)


def split_time(a_s: np.ndarray, b_s: np.ndarray, empty: Callable[..., np.ndarray] = np.empty,
               after_block: Callable[[], None] | None = None, block: int = SPLIT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """``split_windows(lambda x: x, a_s, b_s)``'s energy and max_active (each window's share of the time
    it was active, the most windows active at once in it) in arrays made by ``empty``, a block of windows
    at a time in the order they start: the block's own windows and those still active where it starts,
    cut to its stretch of time (from its first start to the next block's). So the arrays held are a
    block's and the windows in flight, not the run's (a week's windows at once were ~90 bytes each).
    The segments are split_windows', so max_active is the same; a share is summed over the blocks it
    spans, each from its own prefix sum (the same within rounding). ``after_block`` is called after
    each block (analyzer.mapped.drop: the output pages written handed back)."""
    a_s, b_s = np.asarray(a_s, dtype=np.float64), np.asarray(b_s, dtype=np.float64)
    n_win = a_s.size
    share, most = empty(n_win, np.float64), empty(n_win, np.int64)
    starts_in_order = all(not (x[1:] < x[:-1]).any() for x in (a_s[lo:lo + block + 1] for lo in range(0, n_win, block)))
    order = None if starts_in_order else np.argsort(a_s, kind="stable")
    carry = np.zeros(0, dtype=np.int64)  # the windows still active where the next block starts
    for lo in range(0, n_win, block):
        hi = min(lo + block, n_win)
        own = np.arange(lo, hi) if order is None else order[lo:hi]
        if (b_s[own] < a_s[own]).any():
            raise ValueError("split_windows: a window ends before it starts (req.end.t < req.start.t)")
        t0 = a_s[own[0]]
        t1 = (a_s[hi] if order is None else a_s[order[hi]]) if hi < n_win else np.inf
        idx = np.concatenate([carry, own])
        ca, cb = np.maximum(a_s[idx], t0), np.minimum(b_s[idx], t1)
        u, n = active_segments(ca, cb)
        ia, ib = np.searchsorted(u, ca), np.searchsorted(u, cb)
        part_most = _max_over(n, ia, ib, 1)
        idle = n == 0
        part = _shared(np.diff(u), np.maximum(n, 1, out=n), idle, ia, ib)
        k = carry.size  # (the carried windows' shares so far, added to; the block's own start here)
        share[idx[:k]] += part[:k]
        most[idx[:k]] = np.maximum(most[idx[:k]], part_most[:k])
        share[own], most[own] = part[k:], part_most[k:]
        carry = idx[b_s[idx] > t1]
        if after_block is not None:
            after_block()
    return share, most


def _shared(seg: np.ndarray, n: np.ndarray, idle: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Each window's sum of ``seg`` / n over its segments ia to ib (0 where idle), by a prefix sum;
    ``seg`` is overwritten."""
    share = np.divide(seg, n, out=seg)
    share[idle] = 0.0
    prefix = np.empty(share.size + 1)
    prefix[0] = 0.0
    np.cumsum(share, out=prefix[1:])
    return prefix[ib] - prefix[ia]


def seq_gap_intervals(t_s: np.ndarray, seq: np.ndarray, src_seqs: np.ndarray,
                      spacing_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample intervals that lost messages: ``(start_s, end_s, lost_count)`` arrays.

    ``t_s``/``seq`` are one series (sorted by t) of one publisher; ``src_seqs`` every seq that
    publisher's messages carried (all topics, sorted). An interval is a gap when sequence numbers
    between its two samples never arrived and it is longer than GAP_FACTOR × the median spacing
    (so a lost heartbeat does not mark the GPU series as gappy). ``spacing_s``: that median when the
    caller has it.
    """
    if t_s.size < 2:
        z = np.zeros(0)
        return z, z, np.zeros(0, dtype=np.int64)
    dt = np.diff(t_s)
    median_dt = float(np.median(dt)) if spacing_s is None else spacing_s
    idx = np.flatnonzero(dt > GAP_FACTOR * median_dt)  # the long intervals (few): where seqs are looked up
    expected = seq[idx + 1] - seq[idx] - 1
    seen_between = (np.searchsorted(src_seqs, seq[idx + 1], side="left")
                    - np.searchsorted(src_seqs, seq[idx], side="right"))
    lost = expected - seen_between
    idx, lost = idx[lost > 0], lost[lost > 0]
    return t_s[idx], t_s[idx + 1], lost.astype(np.int64)


def coverage(span: tuple[float, float], gap_start: np.ndarray, gap_end: np.ndarray, a_s, b_s) -> np.ndarray:
    """Fraction of each window [a, b] covered by samples: inside the sampled span and not in a gap.

    A zero-length window counts as covered when its instant is covered.
    """
    a_s = np.asarray(a_s, dtype=np.float64)
    b_s = np.asarray(b_s, dtype=np.float64)
    lo, hi = span
    if not np.isfinite(lo) or hi <= lo:
        return np.zeros(a_s.size)
    ca, cb = np.clip(a_s, lo, hi), np.clip(b_s, lo, hi)
    covered = cb - ca
    for g0, g1 in zip(gap_start, gap_end):  # gaps are few; a window overlaps only some
        covered -= np.clip(np.minimum(cb, g1) - np.maximum(ca, g0), 0.0, None)
    length = b_s - a_s
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(length > 0, covered / length, 0.0)
    point = (length == 0) & (a_s >= lo) & (a_s <= hi)
    if gap_start.size and np.any(point):
        in_gap = np.zeros(a_s.size, dtype=bool)
        for g0, g1 in zip(gap_start, gap_end):
            in_gap |= (a_s > g0) & (a_s < g1)
        point &= ~in_gap
    return np.clip(np.where(point, 1.0, frac), 0.0, 1.0)


def gaps_touching(gap_start: np.ndarray, gap_end: np.ndarray, a_s, b_s) -> np.ndarray:
    """How many gap intervals overlap (or straddle an edge of) each window."""
    a_s = np.asarray(a_s, dtype=np.float64)
    b_s = np.asarray(b_s, dtype=np.float64)
    if gap_start.size == 0:
        return np.zeros(a_s.size, dtype=np.int64)
    # Gaps are disjoint and sorted: those starting before b minus those ending before a.
    return (np.searchsorted(gap_start, b_s, side="left") - np.searchsorted(gap_end, a_s, side="right")).astype(np.int64)


def window_mean(trace: Trace, a_s, b_s) -> np.ndarray:
    """Time-weighted mean of a gauge over each window (the covered part); NaN when nothing covers it."""
    a_s = np.asarray(a_s, dtype=np.float64)
    b_s = np.asarray(b_s, dtype=np.float64)
    lo, hi = trace.span()
    if trace.n == 0:
        return np.full(a_s.size, np.nan)
    ca, cb = np.clip(a_s, lo, hi), np.clip(b_s, lo, hi)
    length = cb - ca
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (trace.integral_at(cb) - trace.integral_at(ca)) / length
    inside = (a_s <= hi) & (b_s >= lo)
    point = trace.value_at(ca)  # zero-length overlap: the value at that instant
    return np.where(~inside, np.nan, np.where(length > 0, mean, point))


def window_peak(trace: Trace, a_s, b_s) -> np.ndarray:
    """Largest value of a gauge in each window: samples inside plus the interpolated edges."""
    a_s = np.asarray(a_s, dtype=np.float64)
    b_s = np.asarray(b_s, dtype=np.float64)
    out = np.full(a_s.size, np.nan)
    if trace.n == 0:
        return out
    edge_a, edge_b = trace.value_at(a_s), trace.value_at(b_s)
    ia = np.searchsorted(trace.t_s, a_s, side="left")
    ib = np.searchsorted(trace.t_s, b_s, side="right")
    inner = _max_over(trace.y, ia, ib, np.nan)
    # max() over (edge a, edge b, inner) where finite, the first kept on a tie: as Python's max
    for v in (edge_a, edge_b, inner):
        take = np.isfinite(v) & (np.isnan(out) | (v > out))
        out = np.where(take, v, out)
    return out


def _max_over(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, fill) -> np.ndarray:
    """y[lo:hi].max() for each pair (``fill`` where hi <= lo)."""
    out = np.full(lo.size, fill, dtype=y.dtype)
    has = hi > lo
    if has.any():
        out[has] = window_reduce(y, [(lo[has], hi[has])], np.maximum)[0]
    return out


def split_subs(cumulative: Callable[[np.ndarray], np.ndarray], a_s, b_s, subs: list[tuple[Any, Any]],
               point_uncertainty: Callable[[np.ndarray], np.ndarray] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shares of ``cumulative``'s increase over the sub-windows [c, d] of the windows [a, b] (a phase of a
    request), for each (c, d) in ``subs`` (several phases of the same windows), by the rule of
    ``split_windows``: each elementary interval is shared equally among the *windows* [a, b] active in
    it, so a request's phases add up to its window share. NaN c/d → NaN.

    ``point_uncertainty(x)``: a bound on the error of F at x; propagated linearly through the
    split (a sub-window's edge counts 1/n of it, a breakpoint inside it |1/n_before − 1/n_after|).
    ``cumulative`` and ``point_uncertainty`` are called once, at the breakpoints of all the subs. A
    breakpoint where the windows active do not change adds nothing to a sub-window's uncertainty (its
    weight is 0); its energy is then a sum of two shares instead of one (the same within rounding).
    Returns (energy, uncertainty) per sub; the uncertainty is NaN without ``point_uncertainty``.
    """
    a_s, b_s = np.asarray(a_s, dtype=np.float64), np.asarray(b_s, dtype=np.float64)
    subs = [(np.asarray(c, dtype=np.float64), np.asarray(d, dtype=np.float64)) for c, d in subs]
    nan = np.full(a_s.size, np.nan)
    if a_s.size == 0:
        return [(nan, nan) for _ in subs]
    oks = [np.isfinite(c) & np.isfinite(d) & (d >= c) for c, d in subs]
    u = np.unique(np.concatenate([a_s, b_s] + [x for (c, d), ok in zip(subs, oks) for x in (c[ok], d[ok])]))
    delta = np.zeros(u.size + 1, dtype=np.int64)
    np.add.at(delta, np.searchsorted(u, a_s), 1)
    np.add.at(delta, np.searchsorted(u, b_s), -1)
    n = np.cumsum(delta)[: u.size - 1]
    inv = np.where(n > 0, 1.0 / np.maximum(n, 1), 0.0)
    seg = np.diff(cumulative(u))
    share = np.where(np.isfinite(seg), seg, 0.0) * inv
    prefix = np.concatenate([[0.0], np.cumsum(share)])
    if point_uncertainty is not None:
        pu = np.nan_to_num(np.abs(np.asarray(point_uncertainty(u), dtype=np.float64)), nan=0.0)
        # Weight of each interior breakpoint k (between segments k-1 and k).
        w = np.zeros(u.size)
        if u.size > 2:
            w[1:-1] = np.abs(inv[:-1] - inv[1:])
        pw = np.concatenate([[0.0], np.cumsum(w * pu)])
    out = []
    for (c_s, d_s), ok in zip(subs, oks):
        ic = np.searchsorted(u, np.where(ok, c_s, u[0]))
        id_ = np.searchsorted(u, np.where(ok, d_s, u[0]))
        energy = np.where(ok, prefix[id_] - prefix[ic], np.nan)
        if point_uncertainty is None:
            out.append((energy, nan))
            continue
        inner = np.where(id_ > ic + 1, pw[np.maximum(id_, ic + 1)] - pw[np.minimum(ic + 1, id_)], 0.0)
        seg_first = inv[np.clip(ic, 0, max(inv.size - 1, 0))] if inv.size else np.zeros(ic.size)
        seg_last = inv[np.clip(id_ - 1, 0, max(inv.size - 1, 0))] if inv.size else np.zeros(ic.size)
        unc = np.where(id_ > ic, pu[ic] * seg_first + pu[id_] * seg_last + inner, 0.0)
        out.append((energy, np.where(ok, unc, np.nan)))
    return out
