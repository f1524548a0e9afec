"""A Parquet file's row count, column names and key-value metadata, read from its footer's bytes.

pyarrow parses a whole footer to answer any question about a file: every row group's every column,
~15 KiB a row group once parsed. A sample table of a long run has a row group a slab and a GPU (a day
of 8 GPUs: over a thousand), so asking whether it is the table a re-analysis would write again cost
tens of MiB, much of which the allocator kept. Here the footer is read as bytes and only what comes
before the row groups is decoded (the Thrift compact protocol of the Parquet format's FileMetaData:
1 version, 2 schema, 3 num_rows, 4 row_groups, 5 key_value_metadata); a key-value pair is found by
its encoded bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

_MAGIC = b"PAR1"
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)


class Head(NamedTuple):
    rows: int
    columns: list[str]  # the top-level columns' names (a flat table's are all its columns)
    footer: bytes


class _Reader:
    """The Thrift compact protocol, only as far as a reader needs to skip what it does not read."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def byte(self) -> int:
        b = self.data[self.at]
        self.at += 1
        return b

    def varint(self) -> int:
        out = shift = 0
        while True:
            b = self.byte()
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7

    def int(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)  # zigzag

    def binary(self) -> bytes:
        n = self.varint()
        self.at += n
        if self.at > len(self.data):
            raise IndexError("past the footer's end")
        return self.data[self.at - n:self.at]

    def field(self, last: int) -> tuple[int, int]:
        """(field id, type) of the struct's next field, (0, _STOP) at its end."""
        head = self.byte()
        kind, delta = head & 0x0F, head >> 4
        if kind == _STOP:
            return 0, _STOP
        return (last + delta if delta else self.int()), kind

    def list_head(self) -> tuple[int, int]:
        head = self.byte()
        size = head >> 4
        return (self.varint() if size == 15 else size), head & 0x0F

    def skip(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):
            return  # (a field's bool is its type; a list's or a map's bools are a byte each: _item)
        if kind == _BYTE:
            self.at += 1
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.at += 8
        elif kind == _BINARY:
            self.binary()
        elif kind in (_LIST, _SET):
            n, elem = self.list_head()
            for _ in range(n):
                self.skip(_item(elem))
        elif kind == _MAP:
            n = self.varint()
            if n:
                kv = self.byte()
                for _ in range(n):
                    self.skip(_item(kv >> 4))
                    self.skip(_item(kv & 0x0F))
        elif kind == _STRUCT:
            last = 0
            while True:
                last, k = self.field(last)
                if k == _STOP:
                    return
                self.skip(k)
        else:
            raise ValueError(f"Thrift type {kind}")


def _item(kind: int) -> int:
    """How a list's or a map's element of type ``kind`` is skipped (a bool there is a byte)."""
    return _BYTE if kind in (_TRUE, _FALSE) else kind


def _schema_element(r: _Reader) -> tuple[str | None, int]:
    """(name, num_children) of a SchemaElement (fields 4 and 5)."""
    name, children, last = None, 0, 0
    while True:
        last, kind = r.field(last)
        if kind == _STOP:
            return name, children
        if last == 4 and kind == _BINARY:
            name = r.binary().decode("utf-8")
        elif last == 5 and kind == _I32:
            children = r.int()
        else:
            r.skip(kind)


def head(path: Path) -> Head | None:
    """The file's row count and top-level column names, with its footer's bytes; None when it is not a
    whole Parquet file, or its footer is not laid out as expected (a caller then treats it as unknown)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            if size < 12:
                return None
            fh.seek(size - 8)
            tail = fh.read(8)
            n = int.from_bytes(tail[:4], "little")
            if tail[4:] != _MAGIC or n + 12 > size:
                return None
            fh.seek(size - 8 - n)
            footer = fh.read(n)
    except OSError:
        return None
    r = _Reader(footer)
    try:
        rows, names, last = None, None, 0
        while rows is None or names is None:
            last, kind = r.field(last)
            if kind == _STOP or last > 3:
                return None
            if last == 2 and kind == _LIST:
                count, _ = r.list_head()
                elements = [_schema_element(r) for _ in range(count)]
                if not elements:
                    return None
                names, k = [], 1
                for _ in range(elements[0][1]):  # the root's children, each with what is below it (nested)
                    names.append(elements[k][0])
                    pending = 1
                    while pending:
                        pending += elements[k][1] - 1
                        k += 1
            elif last == 3 and kind == _I64:
                rows = r.int()
            else:
                r.skip(kind)
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    return Head(rows, names, footer)


def key_value(key: bytes, value: bytes) -> bytes:
    """A KeyValue's bytes in a footer (fields 1 and 2, binary), as a writer encodes them."""
    return b"\x18" + _varint(len(key)) + key + b"\x18" + _varint(len(value)) + value + b"\x00"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
