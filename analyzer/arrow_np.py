"""Arrow columns as numpy arrays without pyarrow's pandas bridge.

``Array.to_numpy`` (and ``np.asarray`` of an Arrow array) converts through pyarrow's pandas code, which
imports pandas (about a quarter of a second per process) though no pandas object is made. The
columnar copy's columns are numbers and booleans without nulls: their data buffer is the array, taken
as a view (numbers) or unpacked (booleans, one bit a value), the same values and dtype as to_numpy
gives. Anything else (nulls, text) still goes through to_numpy. read_columns: a Parquet file the same way,
a column at a time.
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


def read_columns(pf, readings: bool = True) -> dict[str, np.ndarray]:
    """Every column of an open Parquet file (pq.ParquetFile) as a numpy array, read a column at a time:
    the Arrow copy of one column at a time, never the whole table twice (and no pq.read_table: it would
    import pandas). ``readings=False``: all but the floating-point columns (stamps, seqs, codes and flags)."""
    return {f.name: to_numpy(pf.read(columns=[f.name], use_threads=False).column(0))
            for f in pf.schema_arrow if readings or not pa.types.is_floating(f.type)}


_ARROW = {np.dtype(v): k for k, v in _DTYPES.items() if v is not np.bool_}  # (native byte order only)
_NONE = type(None)
# Longer lists are left to pa.array: building from Python costs ~0.05-0.1 us a value more than its C++
# conversion, so a results table of a few hundred columns and more rows than this would spend more
# than pandas' import (~0.25 s, once a process) saves
LIST_ROWS = 10_000


def from_numpy(a: np.ndarray) -> pa.Array | None:
    """``pa.array(a)`` of a 1-D array of numbers or booleans (a view of its memory where contiguous),
    pandas left unimported; None for another dtype or shape."""
    if a.ndim != 1:
        return None
    if a.dtype == np.bool_:
        return pa.Array.from_buffers(pa.bool_(), a.size, [None, pa.py_buffer(np.packbits(a, bitorder="little"))])
    kind = _ARROW.get(a.dtype)
    return None if kind is None else pa.Array.from_buffers(kind, a.size, [None, pa.py_buffer(np.ascontiguousarray(a))])


def table(cols: dict[str, np.ndarray]) -> pa.Table:
    """``pa.table(cols)`` of 1-D numpy arrays (of numbers and booleans: from_numpy; others by pa.array),
    pandas left unimported (pa.table imports it when given numpy arrays)."""
    made = [from_numpy(v) for v in cols.values()]
    return pa.Table.from_arrays([pa.array(v) if a is None else a for a, v in zip(made, cols.values())],
                                names=list(cols))


def from_list(values: list) -> pa.Array | None:
    """``pa.array(values)`` for a list of one plain type (float, int, bool or str, None as null), built
    from buffers (``pa.array`` imports pandas, whatever it is given); None for anything else (numpy
    scalars, mixed types, out-of-range integers, text that is not UTF-8, more than LIST_ROWS values):
    pa.array's to make."""
    if not isinstance(values, list) or len(values) > LIST_ROWS:
        return None
    n = len(values)
    kinds = set(map(type, values)) - {_NONE}
    if not kinds:
        return pa.nulls(n)
    if len(kinds) > 1:
        return None
    kind = kinds.pop()
    valid = None if None not in values else np.fromiter((v is not None for v in values), dtype=np.bool_, count=n)
    mask = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = 0 if valid is None else n - int(valid.sum())
    plain = values if valid is None else [v for v in values if v is not None]
    try:
        if kind is str:
            data = [v.encode("utf-8") for v in plain]
            sizes = np.zeros(n + 1, dtype=np.int64)
            lengths = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
            if valid is None:
                sizes[1:] = lengths
            else:
                sizes[1:][valid] = lengths
            offsets = np.cumsum(sizes)
            if offsets[-1] >= 1 << 31:
                return None
            return pa.Array.from_buffers(pa.string(), n, [mask, pa.py_buffer(offsets.astype(np.int32)),
                                                          pa.py_buffer(b"".join(data))], nulls)
        if kind is bool:
            bits = np.zeros(n, dtype=np.bool_)
            bits[valid if valid is not None else slice(None)] = plain
            return pa.Array.from_buffers(pa.bool_(), n, [mask, pa.py_buffer(np.packbits(bits, bitorder="little"))],
                                         nulls)
        if kind in (int, float):
            dt = np.int64 if kind is int else np.float64
            out = np.zeros(n, dtype=dt)
            out[valid if valid is not None else slice(None)] = np.array(plain, dtype=dt)
            return pa.Array.from_buffers(pa.int64() if kind is int else pa.float64(), n,
                                         [mask, pa.py_buffer(out)], nulls)
    except (OverflowError, UnicodeEncodeError):
        return None
    return None
