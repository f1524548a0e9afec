"""Sorted search over sample arrays (pure numpy)."""
from __future__ import annotations

import numpy as np

# Needles at least this many (and at least a tenth of the array) are merged rather than searched.
MERGE_MIN = 4096


def search_sorted(a: np.ndarray, v: np.ndarray, side: str = "left") -> np.ndarray:
    """``np.searchsorted(a, v, side)`` for a sorted float array ``a``, index for index. Many increasing
    needles (a grid, shifted samples) are placed by one stable merge of the two runs instead (a
    binary search per needle costs several times as much); others are searched."""
    v = np.asarray(v)
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
