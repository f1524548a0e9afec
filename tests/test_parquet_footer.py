"""analyzer.parquet_footer against pyarrow's own reading of the same files (real Parquet files written here)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer import parquet_footer as F


def _written(path, table, **options):
    pq.write_table(table, path, **options)
    return path


@pytest.mark.parametrize("columns", [3, 14, 15, 40])  # (a list of 15 or more: its size in a varint of its own)
def test_rows_and_columns_are_pyarrows(tmp_path, columns):
    table = pa.table({f"c{i}" if i % 3 else f"名{i}": pa.array(range(1000), type=pa.int64() if i % 2 else pa.float64())
                      for i in range(columns)})
    path = _written(tmp_path / "t.parquet", table, row_group_size=7)
    got, meta = F.head(path), pq.read_metadata(path)
    assert meta.num_row_groups > 100
    assert got.rows == meta.num_rows == 1000
    assert got.columns == meta.schema.to_arrow_schema().names


def test_nested_columns_are_named_once_each(tmp_path):
    table = pa.table({"a": [1, 2], "s": pa.array([{"x": 1, "y": [1, 2]}, {"x": 2, "y": []}]), "l": [[1], [2, 3]],
                      "m": pa.array([[("k", 1)], []], type=pa.map_(pa.string(), pa.int64())), "b": [True, None]})
    got = F.head(_written(tmp_path / "n.parquet", table, row_group_size=1))
    assert got.rows == 2 and got.columns == ["a", "s", "l", "m", "b"]


def test_a_key_value_is_found_only_whole(tmp_path):
    key, value = b"genai_power.samples_key", b'{"recording": {"source_bytes": 123}}'
    table = pa.table({"t": [1, 2, 3]}).replace_schema_metadata({key: value, b"other": b"x" * 300})
    got = F.head(_written(tmp_path / "k.parquet", table))
    assert pq.read_metadata(tmp_path / "k.parquet").metadata[key] == value
    assert F.key_value(key, value) in got.footer
    assert F.key_value(b"other", b"x" * 300) in got.footer  # (a length of two varint bytes)
    for wrong in (value[:-1], value + b" ", value.replace(b"123", b"124")):
        assert F.key_value(key, wrong) not in got.footer
    assert F.key_value(b"genai_power.samples", value) not in got.footer


def test_what_is_not_a_whole_parquet_file_is_unknown(tmp_path):
    path = _written(tmp_path / "w.parquet", pa.table({"t": list(range(100))}), row_group_size=10)
    data = path.read_bytes()
    assert F.head(path) is not None
    for cut in (0, 3, 11, len(data) // 2, len(data) - 9, len(data) - 1):
        (tmp_path / "cut.parquet").write_bytes(data[:cut])
        assert F.head(tmp_path / "cut.parquet") is None, cut
    n = int.from_bytes(data[-8:-4], "little")
    (tmp_path / "long.parquet").write_bytes(data[:-8] + (len(data) * 2).to_bytes(4, "little") + b"PAR1")
    assert F.head(tmp_path / "long.parquet") is None  # a footer longer than the file
    (tmp_path / "junk.parquet").write_bytes(data[:-8 - n] + b"\xff" * n + data[-8:])
    assert F.head(tmp_path / "junk.parquet") is None  # a footer that is not FileMetaData
    assert F.head(tmp_path / "missing.parquet") is None
