"""Arrow columns as numpy arrays without pyarrow's pandas bridge.

``Array.to_numpy`` (and ``np.asarray`` of an Arrow array) converts through pyarrow's pandas code, which
imports pandas (about a quarter of a second per process) though no pandas object is made. The
columnar copy's columns are numbers and booleans without nulls: their data buffer is the array, taken
as a view (numbers) or unpacked (booleans, one bit a value), the same values and dtype as to_numpy
gives. Anything else (nulls, text) still goes through to_numpy.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

_DTYPES = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
           pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
           pa.float32(): np.float32, pa.float64(): np.float64, pa.bool_(): np.bool_}


def dtype_of(t: pa.DataType) -> np.dtype | None:
    """The numpy dtype of an Arrow type read here without to_numpy, else None."""
    dt = _DTYPES.get(t)
    return None if dt is None else np.dtype(dt)


def to_numpy(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``a.to_numpy(zero_copy_only=False)``, the same values and dtype, pandas left unimported."""
    if isinstance(a, pa.ChunkedArray):
        if a.num_chunks == 1:
            return to_numpy(a.chunk(0))
        dt = dtype_of(a.type)
        if dt is None:
            return a.to_numpy()
        return np.concatenate([to_numpy(c) for c in a.chunks]) if a.num_chunks else np.zeros(0, dtype=dt)
    dt = dtype_of(a.type)
    if dt is None or a.null_count:
        return a.to_numpy(zero_copy_only=False)
    n, at = len(a), a.offset
    buf = a.buffers()[1]
    if n == 0 or buf is None:
        return np.zeros(0, dtype=dt)
    if dt == np.bool_:
        bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=at + n, bitorder="little")
        return bits[at:].view(np.bool_)
    return np.frombuffer(buf, dtype=dt, count=n, offset=at * dt.itemsize)
