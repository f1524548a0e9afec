"""analyzer.arrow_np: Arrow ⇄ numpy without pyarrow's pandas bridge, the same arrays and the same Parquet
bytes as to_numpy / pa.array; a re-analysis from the columnar copy never imports pandas."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer import arrow_np

ROOT = Path(__file__).resolve().parent.parent
TINY = Path(__file__).resolve().parent / "data" / "analyzer_batch"


def _arrays() -> list:
    rng = np.random.default_rng(7)
    out = []
    for values in (rng.random(100), np.array([np.nan, np.inf, -0.0, 1.5]), rng.integers(-9, 9, 50).astype(np.int8),
                   rng.integers(0, 2 ** 40, 30), rng.integers(0, 9, 20).astype(np.int32), rng.random(37) < 0.5):
        a = pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), values.size,
                                  [None, pa.py_buffer(np.packbits(values, bitorder="little")
                                                      if values.dtype == np.bool_ else values)])
        out += [a, a.slice(3, 11), a.slice(0, 0), pa.chunked_array([a.slice(1, 9), a.slice(13)]),
                pa.chunked_array([a.slice(5)]), pa.chunked_array([], type=a.type)]
    out.append(pa.array([1.0, None, 3.0]))  # nulls: to_numpy's own conversion
    return out


def _parquet(array: pa.Array) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({"c": array}), out)
    return out.getvalue()


@pytest.mark.parametrize("i", range(len(_arrays())))
def test_to_numpy_gives_arrows_values_and_dtype(i):
    a = _arrays()[i]
    got = arrow_np.to_numpy(a)
    want = a.to_numpy(zero_copy_only=False) if isinstance(a, pa.Array) else a.to_numpy()
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes() or np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("values", [
    [1.5, None, float("nan"), float("inf"), -0.0], [3, None, -2 ** 63, 2 ** 63 - 1], [True, None, False],
    ["", None, "é中文", "a\x00b"], [None, None], [], [0.25] * 9, list(range(17)), ["x"] * 3,
])
def test_lists_built_from_buffers_write_pa_arrays_parquet(values):
    got = arrow_np.from_list(values)
    want = pa.array(values)
    assert got is not None and got.type == want.type and got.null_count == want.null_count
    got.validate(full=True)
    assert _parquet(got) == _parquet(want)


@pytest.mark.parametrize("values", [[1, 2.5], [True, 1], ["a", 1], [2 ** 63], ["\ud800"], [np.float64(1.0)], (1.0,),
                                    [1.0] * (arrow_np.LIST_ROWS + 1)])
def test_other_lists_are_left_to_pa_array(values):
    assert arrow_np.from_list(values) is None


@pytest.mark.parametrize("values", [np.array([1.5, np.nan, -0.0]), np.arange(40)[::3], np.arange(5, dtype=np.int8),
                                    np.array([True, False, True] * 5)[2:], np.zeros(0), np.zeros(0, dtype=bool)])
def test_numpy_arrays_built_from_buffers_write_pa_arrays_parquet(values):
    got = arrow_np.from_numpy(values)
    want = pa.array(values)
    assert got is not None and got.type == want.type
    got.validate(full=True)
    assert _parquet(got) == _parquet(want)


@pytest.mark.slow
def test_neither_a_first_run_nor_a_re_analysis_imports_pandas(tmp_path):
    """pandas costs a quarter of a second a process; pyarrow imports it for to_numpy, pa.array and
    pa.table of numpy arrays (the columnar copy's files are written from those)."""
    batch = tmp_path / "b"
    shutil.copytree(TINY, batch)
    shutil.rmtree(batch / "raw" / "columns", ignore_errors=True)
    args = ["--batch", str(batch), "--no-plots", "--no-quality", "--no-progress"]
    code = ("import runpy, sys\n"
            f"sys.argv = ['analyzer', *{args!r}]\n"
            "try:\n    runpy.run_module('analyzer', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('pandas imported:', 'pandas' in sys.modules)\n")
    first = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert (batch / "raw" / "columns" / "meta.json").is_file()
    assert "columnar_copy_written" in first.stdout + first.stderr
    assert "pandas imported: False" in first.stdout
    (batch / "summary" / "results.parquet").unlink()  # written again: a results table is built
    again = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "columnar_copy_used" in again.stdout + again.stderr
    assert "pandas imported: False" in again.stdout
    assert (batch / "summary" / "results.parquet").is_file()
