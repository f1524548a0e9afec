"""The request windows' shading on a power timeline (report.html's SVG, the PNG plots): prefill and
decode apart where the first token is known, warm-ups on their own. While the spans are few enough to
tell apart each is drawn; beyond SPAN_LIMIT those of a kind that meet within a pixel are drawn as one
(with how many it holds), so a day of requests shades a timeline with about its width of rectangles,
not ~86,000 of them (a page of ~10 MB per GPU, and as many strings held while it is made). The spans
are made and merged BLOCK windows at a time, then the blocks' merged spans merged again: the same spans
as merging them all at once, without a week's spans and sort order held (~130 bytes a window).
Pure: arrays in, arrays out."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

SPAN_LIMIT = 2000  # more spans than this are merged where they meet within a pixel
BLOCK = 1 << 14    # windows whose spans are made and merged at once (more than SPAN_LIMIT's; ~2 MiB of spans)
KINDS = ("prefill", "decode", "warm")  # a span's kind: its index here
PREFILL, DECODE, WARM = range(3)


class WindowArrays(NamedTuple):
    """The done requests' windows: start and end (s from the batch origin), where the first token came
    (s, NaN: not seen) and whether each is a warm-up."""
    a_s: np.ndarray
    b_s: np.ndarray
    first_s: np.ndarray
    warmup: np.ndarray


def window_arrays(windows: Sequence[dict[str, Any]]) -> WindowArrays:
    """The windows as arrays: read as such from a pipeline.Windows (no dict made per window), else
    from each window's dict (a_s, b_s, first_s or None, warmup)."""
    own = getattr(windows, "arrays", None)
    if own is not None:
        return own()
    return WindowArrays(np.array([w["a_s"] for w in windows], dtype=np.float64),
                        np.array([w["b_s"] for w in windows], dtype=np.float64),
                        np.array([np.nan if w.get("first_s") is None else w["first_s"] for w in windows],
                                 dtype=np.float64),
                        np.array([bool(w["warmup"]) for w in windows], dtype=bool))


class Spans(NamedTuple):
    """Shaded spans: start, end (s), kind (KINDS index), and the window each came from (its index; for
    a merged span, the first window's), how many windows' spans it holds and their summed length (s)."""
    s0: np.ndarray
    s1: np.ndarray
    kind: np.ndarray
    window: np.ndarray
    count: np.ndarray
    busy: np.ndarray

    def __len__(self) -> int:
        return int(self.s0.size)

    def share(self) -> np.ndarray:
        """Of each span, the part its windows cover (1 for one window; a merged span of windows with gaps
        between them less): drawn as its opacity, so that a merged span does not read as one long window."""
        length = self.s1 - self.s0
        return np.minimum(1.0, np.divide(self.busy, length, out=np.ones_like(length), where=length > 0))


def rows(w: WindowArrays, lo: int, hi: int) -> WindowArrays:
    """Windows lo to hi."""
    return WindowArrays(*(x[lo:hi] for x in w))


def spans(w: WindowArrays, offset: int = 0) -> Spans:
    """Each window's spans in window order: [a, first) prefill then [first, b] decode where the first
    token fell inside the window, else [a, b] whole (decode); a warm-up's of kind warm. ``offset``: the
    number of w's first window (``Spans.window``, where w is a block of a longer list)."""
    a, b, f, warm = w.a_s, w.b_s, w.first_s, w.warmup
    split = (a <= f) & (f <= b)  # (NaN compares False: not split)
    n = a.size
    per = 1 + split.astype(np.int64)
    at = np.cumsum(per) - per  # each window's first span
    total = int(per.sum())
    s0, s1 = np.empty(total), np.empty(total)
    kind = np.empty(total, dtype=np.int8)
    window = np.repeat(np.arange(offset, offset + n), per)
    s0[at], s1[at] = a, np.where(split, f, b)
    kind[at] = np.where(warm, WARM, np.where(split, PREFILL, DECODE))
    second = at[split] + 1
    s0[second], s1[second], kind[second] = f[split], b[split], np.where(warm[split], WARM, DECODE)
    return Spans(s0, s1, kind, window, np.ones(total, dtype=np.int64), s1 - s0)


def whole(w: WindowArrays, offset: int = 0) -> Spans:
    """Each window as one span, [a, b], kind warm or decode (the PNG plots shade whole windows)."""
    n = w.a_s.size
    return Spans(w.a_s, w.b_s, np.where(w.warmup, WARM, DECODE).astype(np.int8), np.arange(offset, offset + n),
                 np.ones(n, dtype=np.int64), w.b_s - w.a_s)


def merged(sp: Spans, resolution: float) -> Spans:
    """The spans of each kind that overlap or lie within ``resolution`` (s, a pixel) of each other, as
    one span from the first's start to the latest end, noting how many it holds and their summed
    length; kinds in KINDS order, each in time order."""
    parts = []
    for k in range(len(KINDS)):
        mine = np.flatnonzero(sp.kind == k)
        if not mine.size:
            continue
        mine = mine[np.argsort(sp.s0[mine], kind="stable")]
        s0, s1 = sp.s0[mine], sp.s1[mine]
        reach = np.maximum.accumulate(s1)  # the latest end so far: a run's end is its last one's reach
        starts = np.flatnonzero(np.concatenate(([True], s0[1:] > reach[:-1] + resolution)))
        ends = np.concatenate((starts[1:], [mine.size])) - 1
        parts.append(Spans(s0[starts], reach[ends], np.full(starts.size, k, dtype=np.int8), sp.window[mine][starts],
                           np.add.reduceat(sp.count[mine], starts), np.add.reduceat(sp.busy[mine], starts)))
    if not parts:
        return sp
    return joined(parts)


def joined(parts: list[Spans]) -> Spans:
    """The spans of ``parts``, one after another."""
    return Spans(*(np.concatenate(cols) for cols in zip(*parts)))


def shading(w: WindowArrays, x0: float, x1: float, pixels: int, limit: int = SPAN_LIMIT,
            of: Callable[[WindowArrays, int], Spans] = spans, after_block: Callable[[], None] | None = None) -> Spans:
    """The spans to draw on an axis from x0 to x1 (s) ``pixels`` wide: every window's while there are at
    most ``limit``, else merged within a pixel. ``of``: a window's spans (``spans``, or ``whole``).
    ``after_block``: called once a block of windows is merged (the caller hands their pages back).

    Merged a block of windows at a time, then the blocks' spans merged: spans that a block merges are one
    run of the whole too (a span between two of them, from another block, starts within the run's
    reach), and a block's merged span starts no later than any span it holds, so the runs are the
    same and so are their start, reach, first window and count; only ``busy``'s sums may differ in the
    last bit (added in another order)."""
    resolution = (x1 - x0) / max(pixels, 1)
    n = w.a_s.size
    if n <= BLOCK:
        sp = of(w, 0)
        return sp if len(sp) <= limit else merged(sp, resolution)
    parts = []
    for lo in range(0, n, BLOCK):
        parts.append(merged(of(rows(w, lo, lo + BLOCK), lo), resolution))
        if after_block is not None:
            after_block()
    return merged(joined(parts), resolution)
