"""Sorted search over sample arrays, and reductions over windows of them (pure numpy)."""
from __future__ import annotations

import numpy as np

# Needles at least this many (and at least a tenth of the array) are merged rather than searched.
MERGE_MIN = 4096


def search_sorted(a: np.ndarray, v: np.ndarray, side: str = "left") -> np.ndarray:
    """``np.searchsorted(a, v, side)`` for a sorted float array ``a``, index for index. Many increasing
    needles (a grid, shifted samples) are placed by one stable merge of the two runs instead (a
    binary search per needle costs several times as much); rows of increasing needles (shifts around
    some points) by a search of each row's ends and a few comparisons; others are searched."""
    v = np.asarray(v)
    if v.ndim == 2 and v.shape[1] > 1 and a.size and (v[:, 1:] >= v[:, :-1]).all():
        got = _search_rows(a, v, side)
        if got is not None:
            return got
    if v.ndim > 1:  # increasing in reading order (rows of shifts that do not overlap): as one row
        return search_sorted(a, v.ravel(), side).reshape(v.shape)
    if (v.ndim != 1 or v.size < MERGE_MIN or 10 * v.size < a.size or v.dtype != np.float64
            or a.dtype != np.float64 or not (v[1:] >= v[:-1]).all()):  # (NaN fails it too)
        return np.searchsorted(a, v, side=side)
    # ties: a needle before an equal element of a ("left": not counted), else after it ("right")
    if side == "left":
        pos = np.flatnonzero(np.argsort(np.concatenate([v, a]), kind="stable") < v.size)
    else:
        pos = np.flatnonzero(np.argsort(np.concatenate([a, v]), kind="stable") >= a.size)
    return pos - np.arange(v.size)


def clip_index(i, lo, hi):
    """``np.clip(i, lo, hi)`` of an index array made for it, worked in place: np.clip on integers runs
    several times slower than a maximum and a minimum (the same values)."""
    if not isinstance(i, np.ndarray) or not i.ndim:
        return np.clip(i, lo, hi)
    np.maximum(i, lo, out=i)
    np.minimum(i, hi, out=i)
    return i


def _search_rows(a: np.ndarray, v: np.ndarray, side: str, most: int = 16) -> np.ndarray | None:
    """Rows of increasing needles (a few shifts around each of some points): each row's first and last
    needle searched, then the few elements of ``a`` between them compared with the row's needles;
    None where a row spans more than ``most`` of them."""
    first = np.searchsorted(a, v[:, 0], side=side)
    last = np.searchsorted(a, v[:, -1], side=side)
    span = int((last - first).max(initial=0))
    if span > most:
        return None
    out = np.repeat(first, v.shape[1]).reshape(v.shape)
    for s in range(span):
        j = first + s
        e = a[np.minimum(j, a.size - 1)][:, None]  # (a row past its last element: nothing counted)
        out += ((e <= v) if side == "right" else (e < v)) & (j < last)[:, None]
    return out


def window_reduce(y: np.ndarray, windows: list[tuple[np.ndarray, np.ndarray]], ufunc) -> list[np.ndarray]:
    """ufunc over y[lo:hi] for each pair (hi > lo) of each (lo, hi) in ``windows`` (an exact reduction,
    max/min: either way below gives the same values). Many short windows (a window per sample or per
    grid piece): the ufunc of two overlapping power-of-two spans, from a sparse table only as deep as
    the longest window needs; few long ones (a request's samples): one reduceat over the pairs."""
    levels = [_floor_log2(np.maximum(hi - lo, 1)) for lo, hi in windows]
    depth = max((int(j.max()) for j in levels if j.size), default=0)
    if depth * y.size > 4 * sum(lo.size for lo, _ in windows):
        # every other result taken (a sentinel after y lets hi reach its end)
        ext = np.append(y, y[:1])
        return [ufunc.reduceat(ext, np.stack([lo, hi], axis=1).ravel())[::2] if lo.size else y[:0].copy()
                for lo, hi in windows]
    # row r (ufunc over y[i:i + 2**r] at each i) made in place, the rows end to end: each window's two
    # spans are picked from its own row by one gather each
    sizes = [y.size - (1 << r) + 1 for r in range(depth + 1)]
    start = np.cumsum([0] + sizes[:-1])
    if depth:
        flat = np.empty(sum(sizes), dtype=y.dtype)
        flat[:y.size] = y
        for r in range(1, 1 + depth):
            span, prev = 1 << (r - 1), flat[start[r - 1]:start[r - 1] + sizes[r - 1]]
            ufunc(prev[:-span], prev[span:], out=flat[start[r]:start[r] + sizes[r]])
    else:
        flat = y
    out = []
    for (lo, hi), j in zip(windows, levels):
        at = start[j] + lo
        out.append(ufunc(flat[at], flat[at + (hi - lo) - np.left_shift(1, j)]))
    return out


def _floor_log2(n: np.ndarray) -> np.ndarray:
    """floor(log2(n)) of positive integers: a count of the powers of two each reaches (a few passes for
    short windows, not a logarithm each)."""
    out = np.zeros(n.shape, dtype=np.int64)
    for r in range(1, int(n.max(initial=1)).bit_length()):
        out += n >= (1 << r)
    return out
