"""A Parquet file of the columnar copy written in parts of ``PART_GROUPS`` row groups: ``<stem>.parquet``,
``<stem>.1.parquet``, ``<stem>.2.parquet``, ...

A reader of a Parquet file parses its footer, which lists every row group's columns: ~15 KiB a row
group once parsed, so a day of one GPU's 100 Hz samples in one file held ~8 MiB for as long as the file
was open, and a week ~60 MiB. In parts, a reader holds the footer of the part it reads
(gpu_store._GroupFile), whatever the recording's length.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

PART_GROUPS = 32  # row groups per part (a GPU's at 100 Hz: about 87 minutes; the host's at 10 Hz: 14 hours)


def part_name(name: str, k: int) -> str:
    """Part k's file name of the file ``name`` (``x.parquet``: ``x.parquet``, ``x.1.parquet``, ...)."""
    return name if not k else f"{name.removesuffix('.parquet')}.{k}.parquet"


def parquet_options(cols: dict[str, np.ndarray], compression: str = "zstd") -> dict[str, Any]:
    """How the copy writes a table of columns ``cols``: no dictionary pages (readings rarely repeat;
    building them tripled the writer's memory), readings byte-stream-split and integers (times, sequence
    numbers, codes) delta-coded: half the size, and faster to read. zstd, but the GPUs' LZ4
    (gpu_store.Spill)."""
    floats = [name for name, v in cols.items() if v.dtype.kind == "f"]
    ints = {name: "DELTA_BINARY_PACKED" for name, v in cols.items() if v.dtype.kind in "iu"}
    return {"compression": compression, "use_dictionary": False, "use_byte_stream_split": floats or False,
            "column_encoding": ints or None}


def read_columns(paths: list[Path], readings: bool = True) -> dict[str, np.ndarray]:
    """Every column of a file's parts ``paths`` as one numpy array (arrow_np.read_columns of each part,
    joined a column at a time; the parts of a file share its columns)."""
    import pyarrow.parquet as pq

    from analyzer import arrow_np

    got = [arrow_np.read_columns(pq.ParquetFile(part), readings) for part in paths]
    return got[0] if len(got) == 1 else {k: np.concatenate([c.pop(k) for c in got]) for k in list(got[0])}


def parts_on_disk(root: Path, name: str) -> list[Path]:
    """The parts of ``root/name`` there, in order (none: the file is not there)."""
    out = []
    while (root / part_name(name, len(out))).is_file():
        out.append(root / part_name(name, len(out)))
    return out


class PartWriter:
    """``root/name`` written a row group at a time (``write``), a new part every ``per`` groups;
    ``options``: pq.ParquetWriter's, given afresh to each part's writer (pyarrow alters those it is
    given). ``parts``: the parts' names so far; ``groups``: the row groups written."""

    def __init__(self, root: Path, name: str, schema: Any, per: int | None = None, **options: Any):
        self.root, self.name, self.schema, self.options = Path(root), name, schema, options
        self.per = PART_GROUPS if per is None else per
        self.parts: list[str] = []
        self.groups = 0
        self._writer: Any = None

    def write(self, table: Any, group_rows: int) -> None:
        """``table``'s rows as row groups of ``group_rows`` (the last may be shorter)."""
        for at in range(0, table.num_rows, group_rows):
            if self.groups % self.per == 0:  # the next part begins
                if self._writer is not None:
                    self._writer.close()
                self.parts.append(part_name(self.name, len(self.parts)))
                self._writer = _pq_writer(self.root / self.parts[-1], self.schema, self.options)
            self._writer.write_table(table.slice(at, group_rows), row_group_size=group_rows)
            self.groups += 1

    def close(self) -> None:
        """The part being written closed (a file of no rows still has one: its schema)."""
        if not self.parts:
            self.parts.append(self.name)
            self._writer = _pq_writer(self.root / self.name, self.schema, self.options)
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _pq_writer(path: Path, schema: Any, options: dict[str, Any]):
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, schema, **{k: copy.copy(v) for k, v in options.items()})
