"""results.csv and results.parquet are written a block of rows at a time; the files are those of the
whole table made at once: the CSV's bytes, and the Parquet file's table (schema and values) as
pa.table of every row's column wrote it. Arrow infers a column's type from all its values, in order,
so the columns here change type from block to block."""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer import arrow_np, outputs, tables
from analyzer.rows import Layouts, columns_of

R = random.Random(23)


def whole_table(columns: list[str], rows: list) -> pa.Table:
    """The table as written before blocks: each column pa.array of all its rows' jsonable values (their
    CSV cells where the types do not mix), one pa.table."""
    made = {}
    for c, values in zip(columns, columns_of(rows, columns)):
        values = [outputs.jsonable(v) for v in values]
        try:
            made[c] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            made[c] = pa.array([None if v is None else tables.cell(v) for v in values], type=pa.string())
    return pa.table(made)


def written_whole(path, columns, rows) -> pa.Table:
    pq.write_table(whole_table(columns, rows), path)
    return pq.read_table(path)


def assert_same(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
    assert got.equals(want)
    assert got.to_pylist() == want.to_pylist()


TRICKY = {
    "all_none": lambda i: None,
    "late_float": lambda i: None if i < 5 else i / 3,
    "ints_then_floats": lambda i: i if i < 6 else i + 0.5,
    "floats_then_ints": lambda i: 0.25 if i < 2 else i,
    "nan_first": lambda i: float("nan") if i < 4 else 2.5,
    "text": lambda i: f"r{i}中,\"q\"" if i % 3 else None,
    "text_then_number": lambda i: "x" if i < 4 else 1.5,  # mixed: written as text
    "float_then_bool": lambda i: 1.5 if i < 4 else True,  # double ([1.5, True] infers double)
    "bool_then_float": lambda i: True if i < 4 else 1.5,  # mixed ([True, 1.5] does not)
    "bools_late": lambda i: None if i < 8 else i % 2 == 0,
    "lists": lambda i: [] if i < 3 else [i, None] if i < 7 else [i + 0.5],
    "nested": lambda i: {"a": i} if i < 5 else {"b": [f"{i}"], "a": None},
    "numpy": lambda i: np.float64(i) if i % 2 else np.int64(i),
    "int_list_late": lambda i: None if i < 9 else [1, 2],
    "nan_then_ints": lambda i: float("nan") if i < 4 else i,  # a block of NaN alone, then ints: mixed
    "ints_low_late": lambda i: -(1 << 62) if i == 10 else i,  # the least int in the last block
}


def tricky_rows(n: int, as_rows: bool) -> tuple[list[str], list]:
    columns = list(TRICKY)
    dicts = [{c: make(i) for c, make in TRICKY.items() if not (c == "text" and i == 7)} for i in range(n)]
    return columns, [Layouts().row(d) for d in dicts] if as_rows else dicts


@pytest.mark.parametrize("as_rows", [False, True])
@pytest.mark.parametrize("block", [1, 3, 4, 11, 12])
def test_parquet_by_blocks_is_the_whole_table(tmp_path, block, as_rows):
    columns, rows = tricky_rows(11, as_rows)
    path = outputs.parquet(tmp_path / "results.parquet", columns, rows, block=block)
    assert pq.read_metadata(path).num_row_groups == -(-len(rows) // block)
    assert_same(pq.read_table(path), written_whole(tmp_path / "whole.parquet", columns, rows))
    assert {f.name: str(f.type) for f in pq.read_schema(path)}["bool_then_float"] == "string"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet", "whole.parquet"]


def test_parquet_by_blocks_converted_by_arrow(tmp_path, monkeypatch):
    """Blocks longer than arrow_np converts itself (a day's results) go to pa.array: the same table."""
    monkeypatch.setattr(arrow_np, "LIST_ROWS", 2)
    columns, rows = tricky_rows(11, True)
    path = outputs.parquet(tmp_path / "results.parquet", columns, rows, block=4)
    assert_same(pq.read_table(path), written_whole(tmp_path / "whole.parquet", columns, rows))


POOL = [None, 0, -7, 1 << 62, 1.5, -0.0, 1e300, float("nan"), float("inf"), True, False, "", "a,b", "中",
        [1, 2], [0.5, None], [], ["x"], {"k": 1}, {"k": 2.5, "j": "y"}, np.float64(3.25), np.int64(4),
        np.bool_(False), b"by\xfftes", (1.0, 2)]


@pytest.mark.parametrize("seed", range(6))
def test_parquet_by_blocks_random_columns(tmp_path, seed):
    """Columns of a few random kinds of value each, None for a random lead: the blocks' table is the
    whole one, whatever the types met and their order."""
    rng = random.Random(seed)
    n = rng.choice([9, 17, 40])
    columns = [f"c{j}" for j in range(30)]
    kinds = {c: rng.sample(POOL, rng.choice([1, 1, 2, 3])) for c in columns}
    lead = {c: rng.randrange(n) for c in columns}
    rows = [Layouts().row({c: None if i < lead[c] else rng.choice(kinds[c]) for c in columns}) for i in range(n)]
    for block in (1, 5, n - 1):
        path = outputs.parquet(tmp_path / "results.parquet", columns, rows, block=block)
        assert_same(pq.read_table(path), written_whole(tmp_path / "whole.parquet", columns, rows))


def test_parquet_of_no_rows_and_repeated_names(tmp_path):
    for columns, rows in ((["a", "b"], []), (["a", "b", "a"], [{"a": 1, "b": "x"}] * 5)):
        path = outputs.parquet(tmp_path / "results.parquet", columns, rows, block=2)
        assert_same(pq.read_table(path), written_whole(tmp_path / "whole.parquet", columns, rows))


def test_parquet_that_fails_leaves_the_last_good_file(tmp_path):
    path = outputs.parquet(tmp_path / "results.parquet", ["a"], [{"a": 1.5}] * 3, block=2)
    good = path.read_bytes()
    with pytest.raises(OverflowError):  # an integer beyond 64 bits: Arrow has no type for it
        outputs.parquet(path, ["a"], [{"a": 1}] * 3 + [{"a": 1 << 70}], block=2)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]


def test_csv_in_parts_writes_the_whole_text(tmp_path):
    """results.csv written from its parts (a block of rows each) holds the bytes of the whole text:
    one BOM, the same line ends and quoting."""
    columns = ["rid", "t", "text", "ok"]
    n = 3 * tables._CSV_BLOCK + 5
    rows = [Layouts().row({"rid": f"r{i}", "t": R.choice([i / 7, None, float("nan")]),
                           "text": R.choice(['a,"b"\n', "中", None]), "ok": i % 2 == 0}) for i in range(n)]
    parts = list(tables.csv_parts(columns, rows))
    assert len(parts) == 1 + 4 and parts[0] == "rid,t,text,ok\n"
    whole = "".join(parts)
    assert whole == tables.csv_text(columns, rows)
    path = outputs.write_text(tmp_path / "results.csv", tables.csv_parts(columns, rows), outputs.CSV_ENCODING)
    data = path.read_bytes()
    assert data == whole.encode("utf-8-sig") and data.count(b"\xef\xbb\xbf") == 1
    assert data.count(b"\n") == whole.count("\n")
    empty = outputs.write_text(tmp_path / "empty.csv", tables.csv_parts(columns, []), outputs.CSV_ENCODING)
    assert empty.read_bytes() == "rid,t,text,ok\n".encode("utf-8-sig")


def test_parquet_blocks_are_built_from_buffers():
    """A block's columns are made by arrow_np (pa.array's conversion of a long column held far more)."""
    assert outputs.PARQUET_BLOCK <= arrow_np.LIST_ROWS
