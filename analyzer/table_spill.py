"""The columnar copy's host and heartbeat tables written while stream.msgpack is read
(columnar.decode_to_copy), never whole in memory: a week of host rows at 10 Hz is ~600 MB as arrays.

Each chunk the decoder makes goes to a part file in the copy's .tmp folder (Arrow IPC, LZ4; one file per
run of chunks with the same columns). ``close`` joins the parts into the topic's Parquet file a row
group at a time, a column missing from a part (a process first watched later) filled as absent: the
columns, their order, types and values columnar._concat makes of the same chunks in memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from analyzer import arrow_np
from analyzer.parquet_parts import PartWriter, parquet_options

PART_DIR = "parts"


def absent(name: str, n: int) -> np.ndarray:
    """A host column group's rows where it was not in the message: not present, no reading."""
    return np.zeros(n, dtype=bool) if name.endswith((":present", ":sim")) else np.full(n, np.nan)


class _Parts:
    """One topic's chunks in part files, in order."""

    def __init__(self, folder: Path, stem: str):
        self.folder, self.stem = folder, stem
        self.files: list[tuple[Path, dict[str, np.dtype]]] = []  # each part and its columns' types
        self.rows = 0
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._schema: pa.Schema | None = None

    def add(self, cols: dict[str, np.ndarray]) -> None:
        table = arrow_np.table(cols)
        if not table.num_rows:
            return
        if self._writer is None or table.schema != self._schema:
            self.end()
            self._schema = table.schema
            path = self.folder / f"{self.stem}.{len(self.files)}.arrow"
            self._writer = pa.ipc.new_file(str(path), table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4"))
            self.files.append((path, {k: v.dtype for k, v in cols.items()}))
        self._writer.write_table(table)
        self.rows += table.num_rows

    def end(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def columns(self) -> dict[str, np.dtype]:
        """Every column of the topic in first-seen order, each of the type np.concatenate gives its parts
        (an absent fill's among them where a part lacks it)."""
        names = list(dict.fromkeys(k for _, dtypes in self.files for k in dtypes))
        return {n: np.result_type(*(d[n] if n in d else absent(n, 0).dtype for _, d in self.files)) for n in names}

    def chunks(self, dtypes: dict[str, np.dtype]) -> Iterator[dict[str, np.ndarray]]:
        """The chunks back in order, as numpy columns ``dtypes`` (absent where a part has none)."""
        for path, _ in self.files:
            # (read, not mapped: a part is removed once joined, which Windows refuses while it is mapped)
            with pa.OSFile(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    b = reader.get_batch(i)
                    have = dict(zip(b.schema.names, b.columns))
                    yield {n: (arrow_np.to_numpy(have[n]) if n in have else absent(n, b.num_rows)).astype(dt, copy=False)
                           for n, dt in dtypes.items()}


class TableSpill:
    """Decoder sink for the tables in ``groups`` (topic → rows per Parquet row group): their chunks to part
    files under ``root``; ``close`` writes ``root/<topic>.parquet`` of each and gives its rows."""

    def __init__(self, root: Path, groups: dict[str, int]):
        self.root, self.groups = Path(root), dict(groups)
        (self.root / PART_DIR).mkdir(parents=True, exist_ok=True)
        self._parts = {t: _Parts(self.root / PART_DIR, t) for t in self.groups}

    def __call__(self, topic: str, cols: dict[str, np.ndarray]) -> bool:
        parts = self._parts.get(topic)
        if parts is None:
            return False
        parts.add(cols)
        return True

    def close(self) -> dict[str, int]:
        """Write each topic's Parquet file and remove its parts → rows per topic written (a topic
        without rows has no file: its empty table is the caller's to write)."""
        out = {}
        for topic, parts in self._parts.items():
            parts.end()
            if parts.rows:
                self._write(topic, parts)
                out[topic] = parts.rows
            for path, _ in parts.files:
                path.unlink()
        (self.root / PART_DIR).rmdir()
        return out

    def abort(self) -> None:
        for parts in self._parts.values():
            parts.end()

    def _write(self, topic: str, parts: _Parts) -> None:
        """Row groups of exactly ``groups[topic]`` rows but the last, as pq.write_table makes of the whole
        (in parts: analyzer.parquet_parts)."""
        group, dtypes, writer, held = self.groups[topic], parts.columns(), None, []
        try:
            for last, cols in _then_end(parts.chunks(dtypes)):
                if cols is not None:
                    held.append(cols)
                n = sum(c["t"].size for c in held)
                if not held or (n < group and not last):
                    continue
                joined = {k: np.concatenate([c[k] for c in held]) if len(held) > 1 else held[0][k] for k in dtypes}
                upto = n if last else n - n % group
                table = arrow_np.table({k: v[:upto] for k, v in joined.items()})
                if writer is None:
                    writer = PartWriter(self.root, f"{topic}.parquet", table.schema, **parquet_options(joined))
                writer.write(table, group)
                # (a copy: a view would hold the whole of the joined arrays)
                held = [{k: v[upto:].copy() for k, v in joined.items()}] if upto < n else []
        finally:
            if writer is not None:
                writer.close()


def _then_end(items: Iterator) -> Iterator[tuple[bool, Any]]:
    """(False, item) for each item, then (True, None)."""
    for item in items:
        yield False, item
    yield True, None
