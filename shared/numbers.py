"""The one "is this a usable number" rule for every reader: absent or nonsense is not available
(None), never a fake zero. ``bool`` is not a number here, although Python makes it an int."""
from __future__ import annotations

import math
from typing import Any


def finite(v: Any, text: bool = True) -> float | None:
    """``v`` as a finite float (ints, floats, numpy scalars, and numeric text unless ``text`` is
    False: a report cell holding the model name "7" is text), else None."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str) and (not text or not v.strip()):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class FiniteFloats(list):
    """A list that holds Python floats only, each finite (numpy's tolist() of a finite float array):
    a writer may take that as checked (analyzer.outputs.json_text writes it on one line at once)."""

    __slots__ = ()


def positive(v: Any) -> float | None:
    x = finite(v)
    return x if x is not None and x > 0 else None


def nonneg(v: Any) -> float | None:
    x = finite(v)
    return x if x is not None and x >= 0 else None
