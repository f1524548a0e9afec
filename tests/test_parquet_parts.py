"""A copy's Parquet file in parts (analyzer.parquet_parts): names, groups per part, options, an empty file."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer import arrow_np
from analyzer.parquet_parts import PartWriter, part_name, parts_on_disk


def test_a_file_is_written_in_parts_of_so_many_row_groups(tmp_path):
    """Row groups of the given rows (the last shorter), a new part every ``per`` of them, each part
    written with the same options (pyarrow alters the ones it is given: every part is still
    byte-stream-split and delta-coded), the parts found on disk in order and read back as the table."""
    cols = {"t": np.arange(100, dtype=np.int64), "w": np.linspace(0.0, 1.0, 100)}
    table = arrow_np.table(cols)
    w = PartWriter(tmp_path, "x.parquet", table.schema, per=3, compression="zstd", use_dictionary=False,
                   use_byte_stream_split=["w"], column_encoding={"t": "DELTA_BINARY_PACKED"})
    w.write(table.slice(0, 60), 10)
    w.write(table.slice(60), 10)
    w.close()
    assert w.parts == ["x.parquet", "x.1.parquet", "x.2.parquet", "x.3.parquet"] and w.groups == 10
    assert parts_on_disk(tmp_path, "x.parquet") == [tmp_path / p for p in w.parts]
    metas = [pq.read_metadata(tmp_path / p) for p in w.parts]
    assert [m.num_row_groups for m in metas] == [3, 3, 3, 1]
    for m in metas:
        encodings = {m.row_group(0).column(i).path_in_schema: m.row_group(0).column(i).encodings for i in range(2)}
        assert "DELTA_BINARY_PACKED" in encodings["t"] and "BYTE_STREAM_SPLIT" in encodings["w"]
    back = pa.concat_tables([pq.read_table(tmp_path / p) for p in w.parts])
    assert back.equals(table)
    assert part_name("gpu/0.parquet", 2) == "gpu/0.2.parquet" and part_name("gpu/0.parquet", 0) == "gpu/0.parquet"


def test_a_file_of_no_rows_is_one_part_with_its_columns(tmp_path):
    table = arrow_np.table({"t": np.zeros(0, dtype=np.int64)})
    w = PartWriter(tmp_path, "y.parquet", table.schema)
    w.write(table, 16)
    w.close()
    assert w.parts == ["y.parquet"] and parts_on_disk(tmp_path, "y.parquet") == [tmp_path / "y.parquet"]
    assert pq.read_table(tmp_path / "y.parquet").schema.names == ["t"]
    assert parts_on_disk(tmp_path, "none.parquet") == []
