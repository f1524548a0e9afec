"""Long recordings in time slabs: a batch's telemetry measured a slab of time at a time.

The energy rules fit over the series they are given (refresh periods, noise, the counter's
intervals) and hold temporaries several times its size: over hours of several GPUs that is GBs. A
slab owns a stretch of the time axis: the windows that start in it, and the telemetry from a margin
before its earliest window to a margin after its latest end (windows may run past the slab's end).
Memory then grows with the slab, not the recording. A recording whose telemetry spans at most one
slab is one slab over all of its telemetry: the results are those of the whole-run analysis, bit for
bit. Longer ones are fitted per slab (a refresh period or a noise level per ten minutes, not per day).

Pure: plans and views over sorted arrays; the reading of telemetry is the source's (``Source``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

from analyzer import mapped
from analyzer.stream import BatchData, Series

SLAB_S = 600.0    # seconds of the time axis a slab owns
MARGIN_S = 30.0   # telemetry read around a slab's windows (counter intervals and hold fits reach past the edges)
ENVELOPE_POINTS = 1000  # per slab and GPU, the timeline keeps the min and max of this many buckets
TIMELINE_POINTS = 100_000  # per GPU, the most points a run's timeline keeps (its slabs share them out)

INF = float("inf")
EXACT = float(1 << 53)  # integers up to this size are floats exactly


@dataclass(frozen=True)
class Slab:
    rows: np.ndarray   # indices of the windows that start in this slab
    own_lo_s: float    # the part of the time axis it owns, [own_lo, own_hi): samples are written once
    own_hi_s: float
    lo_s: float        # the telemetry it reads: own part and its windows, plus the margin
    hi_s: float
    buckets: int = ENVELOPE_POINTS  # its part of the timeline: the min and max of this many buckets

    @property
    def whole(self) -> bool:
        return self.lo_s == -INF and self.hi_s == INF


def plan(a_s: np.ndarray, b_s: np.ndarray, span_s: tuple[float, float], slab_s: float = SLAB_S,
         margin_s: float | None = None) -> list[Slab]:
    """The slabs of a batch: windows ``[a_s, b_s]`` (s from the origin) and the telemetry's span.

    One slab (everything) when the span is at most ``slab_s``; else cuts every ``slab_s`` from the
    span's start, the first slab open to the left and the last to the right."""
    a_s, b_s = np.asarray(a_s, dtype=np.float64), np.asarray(b_s, dtype=np.float64)
    margin_s = MARGIN_S if margin_s is None else margin_s
    lo, hi = span_s
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= slab_s:
        return [Slab(np.arange(a_s.size), -INF, INF, -INF, INF)]
    k = int(np.ceil((hi - lo) / slab_s))
    # a long run's slabs keep fewer points each: its timeline stays TIMELINE_POINTS at most, whatever its length
    buckets = max(1, min(ENVELOPE_POINTS, TIMELINE_POINTS // (2 * k)))
    cuts = np.concatenate([[-INF], lo + slab_s * np.arange(1, k), [INF]])
    which = np.clip(np.searchsorted(cuts, a_s, side="right") - 1, 0, k - 1)
    # the windows by slab, each slab's in index order: views of one array (not a pass over every window a slab)
    by_slab = mapped.kept(np.argsort(which, kind="stable"))
    bounds = np.searchsorted(which[by_slab], np.arange(k + 1)).tolist()
    del which
    out = []
    for i in range(k):
        rows = by_slab[bounds[i]:bounds[i + 1]]
        own_lo, own_hi = float(cuts[i]), float(cuts[i + 1])
        first = min(own_lo, float(a_s[rows].min())) if rows.size else own_lo
        last = max(own_hi, float(b_s[rows].max())) if rows.size else own_hi
        out.append(Slab(rows, own_lo, own_hi, -INF if i == 0 else first - margin_s,
                        INF if i == k - 1 else last + margin_s, buckets))
    return out


def context(a_s: np.ndarray, b_s: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` and every window overlapping one of them (sorted indices): a window's share of the
    energy it runs concurrently with others depends on those others, wherever they start."""
    return Overlaps(a_s, b_s).context(rows)


class Overlaps:
    """``context`` of the windows ``[a_s, b_s]`` for one slab after another, without a pass over every
    window each time (a month's windows a slab were its requests' pages read again 4,000 times): the
    windows by start, and the latest end of those starting no later than each (a running maximum), so
    the windows overlapping a range are those between two binary searches whose end reaches it."""

    def __init__(self, a_s: np.ndarray, b_s: np.ndarray):
        self.a_s, self.b_s = a_s, b_s
        self._order = mapped.kept(np.argsort(a_s, kind="stable"))
        self._starts = mapped.kept(a_s[self._order])
        self._reach = mapped.kept(np.maximum.accumulate(b_s[self._order]))

    def context(self, rows: np.ndarray) -> np.ndarray:
        if rows.size == 0 or rows.size == self.a_s.size:
            return rows
        lo, hi = float(self.a_s[rows].min()), float(self.b_s[rows].max())
        # a_s <= hi: the windows before the first starting after hi; b_s >= lo: none before the first
        # whose running maximum of ends reaches lo, and of those after it, the ones whose own end does
        first = int(np.searchsorted(self._reach, lo, side="left"))
        near = self._order[first:int(np.searchsorted(self._starts, hi, side="right"))]
        return np.union1d(near[self.b_s[near] >= lo], rows)


def pieces(a_s: np.ndarray, b_s: np.ndarray, slabs: list[Slab]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Long windows cut where the slabs' own parts meet: (window index, piece a, piece b, slab index)
    per piece. A window inside one slab is one piece; energies of the pieces add up to the window's."""
    a_s, b_s = np.asarray(a_s, dtype=np.float64), np.asarray(b_s, dtype=np.float64)
    owner, pa, pb, slab = [], [], [], []
    for j, s in enumerate(slabs):
        lo = np.maximum(a_s, s.own_lo_s)
        hi = np.minimum(b_s, s.own_hi_s)
        # a zero-length window belongs to the slab that owns its instant
        take = np.flatnonzero((hi > lo) | ((a_s == b_s) & (a_s >= s.own_lo_s) & (a_s < s.own_hi_s)))
        owner.append(take)
        pa.append(lo[take])
        pb.append(hi[take])
        slab.append(np.full(take.size, j))
    cat = np.concatenate
    return cat(owner), cat(pa), cat(pb), cat(slab)


def first_at_least(lo: float) -> int:
    """The least integer t with float(t) >= lo: ``t >= lo`` on int64 stamps, which numpy compares as
    float64, as an integer bound (stamps past 2**53 round to a float; exact below). A float needle
    would make np.searchsorted convert the whole int64 array on every call."""
    top = math.ceil(lo)
    if -EXACT < lo <= EXACT:  # every integer here is a float: float(t) >= lo is t >= lo
        return top
    bottom = math.floor(np.nextafter(lo, -INF))  # float(bottom) < lo: the answer is in (bottom, top]
    while top - bottom > 1:
        mid = (top + bottom) // 2
        if float(mid) >= lo:
            top = mid
        else:
            bottom = mid
    return top


def stamp_range(t: np.ndarray, lo: float, hi: float) -> tuple[int, int]:
    """(i0, i1): the sorted stamps t[i0:i1] are those with lo <= t <= hi (as the float comparison)."""
    if t.dtype.kind not in "iu" or math.isnan(lo) or math.isnan(hi):
        return int(np.searchsorted(t, lo, side="left")), int(np.searchsorted(t, hi, side="right"))
    i0 = 0 if lo == -INF else t.size if lo == INF else int(t.searchsorted(_int64(first_at_least(lo)), side="left"))
    i1 = t.size if hi == INF else 0 if hi == -INF else int(t.searchsorted(_int64(-first_at_least(-hi)), side="right"))
    return i0, i1


def _int64(x: int) -> np.int64:
    return np.int64(min(max(x, -(1 << 63)), (1 << 63) - 1))


def view(series: Series, lo_ns: float, hi_ns: float) -> Series:
    """The samples with lo <= t <= hi: views of the arrays, no copy."""
    t = series.t_ns
    i0, i1 = stamp_range(t, lo_ns, hi_ns)
    if i0 == 0 and i1 == t.size:
        return series
    return dataclasses.replace(series, t_ns=t[i0:i1], seq=series.seq[i0:i1],
                               values={k: v[i0:i1] for k, v in series.values.items()})


class Source(Protocol):
    """Where a batch's telemetry is read from, by stretch of time (s from the batch origin)."""

    def span_s(self) -> tuple[float, float]: ...

    def between(self, lo_s: float, hi_s: float) -> BatchData: ...

    def release(self) -> None:
        """A pass over the stretches is done: what is kept for the next read may go."""


class InMemory:
    """A BatchData whose series are whole arrays: a stretch is a view."""

    def __init__(self, batch: BatchData):
        self.batch = batch

    def span_s(self) -> tuple[float, float]:
        firsts = [s.t_ns[0] for s in self._series() if s.t_ns.size]
        lasts = [s.t_ns[-1] for s in self._series() if s.t_ns.size]
        if not firsts:
            return (float("nan"), float("nan"))
        o = self.batch.origin_ns
        return (min(firsts) - o) / 1e9, (max(lasts) - o) / 1e9

    def _series(self) -> Iterator[Series]:
        b = self.batch
        yield from b.gpus
        if b.host is not None:
            yield b.host

    def release(self) -> None:
        """(Nothing is kept beyond the batch itself.)"""

    def between(self, lo_s: float, hi_s: float) -> BatchData:
        b = self.batch
        if lo_s == -INF and hi_s == INF:
            return b
        o = b.origin_ns
        lo, hi = (lo_s if lo_s == -INF else o + lo_s * 1e9), (hi_s if hi_s == INF else o + hi_s * 1e9)
        return dataclasses.replace(b, gpus=[view(g, lo, hi) for g in b.gpus],
                                   host=view(b.host, lo, hi) if b.host is not None else None,
                                   procs={k: view(v, lo, hi) for k, v in b.procs.items()},
                                   rapl={k: view(v, lo, hi) for k, v in b.rapl.items()})


def materialise(batch: BatchData) -> BatchData:
    """The batch with every series whole in memory (a batch read by stretch, read whole: small ones)."""
    return batch if batch.source is None else batch.source.between(-INF, INF)


def source_of(batch: BatchData) -> Source:
    return batch.source if batch.source is not None else InMemory(batch)


def envelope(t: np.ndarray, y: np.ndarray, buckets: int = ENVELOPE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about 2 × buckets points: each bucket's lowest and highest reading, in time order (peaks stay)."""
    if t.size <= 2 * buckets:
        return t, y
    m = t.size // buckets
    k = buckets * m
    low = np.where(np.isfinite(y), y, np.inf)
    high = np.where(np.isfinite(y), y, -np.inf)
    base = np.arange(buckets) * m
    picks = [base + np.argmin(low[:k].reshape(buckets, m), axis=1), base + np.argmax(high[:k].reshape(buckets, m), axis=1)]
    if k < t.size:  # the rest, shorter than a bucket
        picks += [np.array([k + int(np.argmin(low[k:])), k + int(np.argmax(high[k:]))])]
    idx = np.unique(np.concatenate(picks))
    return t[idx], y[idx]
