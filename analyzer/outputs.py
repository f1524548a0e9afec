"""Write one Analysis into the batch directory (the only file-writing part of the analyzer)."""
from __future__ import annotations

import codecs
import contextlib
import contextvars
import functools
import hashlib
import itertools
import json
import math
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

import analyzer
import shared
from analyzer import arrow_np, i18n, memory, parquet_footer, report, report_html, tables
from analyzer.pipeline import Analysis
from analyzer.rows import iter_columns
from shared.batch import BatchDir
from shared.logs import get_logger
from shared.numbers import FiniteFloats

log = get_logger("analyzer.outputs")

CSV_ENCODING = "utf-8-sig"  # a BOM so that Excel on Windows reads UTF-8 (Chinese model/task names) right
# the outputs of the write_all running now that another program holds open: (locked file, where the new one went)
_LOCKED: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("locked", default=None)


class OutputsLocked(Exception):
    """Some outputs could not replace their file: another program holds it open (Excel on Windows
    locks the CSV it shows, and os.replace raises PermissionError). Everything else was written;
    each new version lies beside its locked file. The message names both and the fix."""

    def __init__(self, locked: list[tuple[Path, Path]], written: list[Path]):
        self.locked, self.written = locked, written
        names = "; ".join(f"{old} is open in another program, so the new version is {new}" for old, new in locked)
        super().__init__(f"{names}. Close it (Excel locks the files it shows) and rerun "
                         f"python -m analyzer --batch {locked[0][0].parent.parent}: the other outputs are up to date")


def _replace(tmp: Path | str, path: Path) -> Path:
    """Atomic rename onto ``path``; while write_all runs, a locked ``path`` gets ``NAME.new.EXT`` beside it."""
    try:
        os.replace(tmp, path)
        return path
    except PermissionError:
        locked = _LOCKED.get()
        if locked is None:
            raise
        beside = path.with_name(f"{path.stem}.new{path.suffix}")
        try:
            os.replace(tmp, beside)
        except OSError:
            beside = Path(tmp)  # that one is held too: the finished file keeps its temporary name
        locked.append((path, beside))
        log.error("output_locked", path=str(path), written_to=str(beside),
                  fix="close the program that has it open (Excel), then rerun the analysis")
        return beside


def jsonable(v: Any) -> Any:
    """NaN/inf → null, numpy scalars → Python, tuples → lists (JSON has no NaN)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return v


_PLAIN_NUMBERS = {float, int, type(None)}
_FLOAT = {float}
_STR = {str}
_encode_str = json.encoder.encode_basestring        # ensure_ascii=False (json's C version when built)
_flat_numbers = json.JSONEncoder(allow_nan=False).encode  # one line, json's C encoder; ValueError on NaN/inf


def json_text(obj: Any) -> str:
    """Indented JSON (as ``json.dumps(jsonable(obj), ensure_ascii=False, indent=2)``), except that long
    lists of plain numbers (a window's samples) stay on one line each. Written here rather than by
    json's indenting encoder, which is pure Python and took most of a batch's analysis time; every
    text, int and float is written as json writes it (its C string encoder, int and float repr, which
    json's encoder calls), so the text is the same."""
    return _json(obj, "\n", {}) + "\n"


def _json(v: Any, nl: str, lists: dict) -> str:
    """``v`` as JSON; ``nl``: a newline and the indent of the line ``v`` starts on; ``lists``: the
    float lists written so far in this text (_float_list)."""
    plain = _PLAIN_JSON.get(type(v))
    if plain is not None:
        return plain(v)
    if type(v) is FiniteFloats and len(v) > 8:  # (its values need no check)
        return _float_list(v, lists)
    if isinstance(v, dict):
        if not v:
            return "{}"
        if set(map(type, v)) != _STR:
            v = {str(k): x for k, x in v.items()}  # (as json would, after str(): a later duplicate wins)
        inner = nl + "  "
        # a scalar written here, not by a call of _json (most values of a request's JSON are scalars)
        return "{" + inner + ("," + inner).join([
            _encode_str(k) + ": " + (plain(x) if (plain := _PLAIN_JSON.get(type(x))) is not None
                                     else _json(x, inner, lists)) for k, x in v.items()]) + nl + "}"
    if isinstance(v, (list, tuple)):
        types = set(map(type, v)) if len(v) > 8 else None
        if types is not None and types <= _PLAIN_NUMBERS:
            try:
                if types == _FLOAT:
                    return _float_list(v, lists)
                return _flat_numbers(v) if type(None) in types else _numbers_text(v)
            except ValueError:  # NaN or inf inside: element by element, one per line
                v = [jsonable(x) for x in v]
        if not v:
            return "[]"
        inner = nl + "  "
        return "[" + inner + ("," + inner).join([plain(x) if (plain := _PLAIN_JSON.get(type(x))) is not None
                                                 else _json(x, inner, lists) for x in v]) + nl + "]"
    return _scalar_json(jsonable(v))


def _float_list(v: list, lists: dict) -> str:
    """A list of floats as _flat_numbers writes it (ValueError on NaN or inf). A list equal to one
    written before in this text has that one's text (the GPUs of a host share their sample times, and
    often readings), and one value held n times (a reading between changes) is written once and
    repeated: equal floats are written alike but for 0.0 and -0.0, so lists holding a zero are neither
    kept nor matched (a list equal to one without zeros has none) nor repeated."""
    x, n, last = v[0], len(v), v[-1]
    key = (n, x, last)
    seen = lists.get(key)
    if seen is not None and (seen[0] is v or seen[0] == v):
        return seen[1]
    if x == last and x and v.count(x) == n and math.isfinite(x):  # (no zero in it)
        text = float.__repr__(x)
        text = "[" + (text + ", ") * (n - 1) + text + "]"
    else:
        text = list.__repr__(v) if type(v) is FiniteFloats else _numbers_text(v)
        if 0.0 in v:
            return text
    lists[key] = (v, text)
    return text


def _numbers_text(v: list | tuple) -> str:
    """A list of ints and floats (no bool, no None) as _flat_numbers writes it, ValueError on NaN or
    inf: its repr (each number's is json's; json's encoder is set up on every call)."""
    text = list.__repr__(v if isinstance(v, list) else list(v))
    if "n" in text:  # nan or inf: no other number's text has an n
        raise ValueError("a number that is not finite")
    return text


def _float_json(v: float) -> str:
    return float.__repr__(v) if math.isfinite(v) else "null"


# the usual scalars, by exact type, without jsonable()'s checks
_PLAIN_JSON: dict[type, Any] = {str: _encode_str, float: _float_json, int: int.__repr__, type(None): lambda v: "null",
                                bool: lambda v: "true" if v else "false"}


def _scalar_json(v: Any) -> str:
    """One jsonable() scalar as json.dumps writes it."""
    if isinstance(v, str):
        return _encode_str(v)
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        return float.__repr__(v)  # finite: jsonable() made NaN and inf None
    raise TypeError(f"Object of type {type(v).__name__} is not JSON serializable")


def _column(values: list) -> pa.Array:
    got = _typed(values)
    return _text(values) if got is None else got


def _typed(values: list) -> pa.Array | None:
    """The values as Arrow makes them (None: types that do not mix)."""
    if isinstance(values, pa.Array):
        return values
    # built from buffers where the values allow it: pa.array imports pandas (~0.25 s a run)
    plain = arrow_np.from_numpy(values) if isinstance(values, np.ndarray) else arrow_np.from_list(values)
    if plain is not None:
        return plain
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _text(values: list) -> pa.Array:
    """Mixed types kept readable as text (their CSV cells)."""
    return pa.array([None if v is None else tables.cell(v) for v in values], type=pa.string())


_NUMBERS = {float, int, bool, type(None)}
_AS_IS = {str, int, bool, type(None)}


def _jsonable_column(values: list) -> list:
    """``[jsonable(v) for v in values]``, without the per-value checks where the types allow it."""
    types = set(map(type, values))
    if types <= _AS_IS or (types <= _NUMBERS and all(map(math.isfinite, [v for v in values if v is not None]))):
        return values
    return [jsonable(v) for v in values]


# rows per row group of a results.parquet (its Arrow columns held a block at a time): at most
# arrow_np.LIST_ROWS, so that a block's columns are built from buffers; longer ones go to pa.array, which
# imports pandas (~50 MiB) and held more (a day's results: ~80 MiB at 16,384 rows a block, ~35 at 8,192)
PARQUET_BLOCK = 8_192


def parquet(path: Path, columns: list[str], rows: list[dict[str, Any]], block: int = PARQUET_BLOCK) -> Path:
    """The rows as Parquet, a block of rows at a time (a row group each; a day's results as one Arrow
    table: ~0.15 GB). The file reads back as the table of every row at once would be: with more than
    one block, each column's type is found over all its rows first (_types) and every block made in it."""
    names = list(dict.fromkeys(columns))  # (a name given twice once, as pa.table of a dict)
    types = _types(rows, names, block) if len(rows) > block else None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer = None
    try:
        for lo in range(0, len(rows) or 1, block):  # (no rows: one table of none, as pa.table writes)
            # a column's Python values made, converted and dropped before the next
            made = iter_columns(rows[lo:lo + block], names)
            arrays = [_column(_jsonable_column(values)) for values in made] if types is None else \
                [_in_type(values, *kind) for values, kind in zip(made, types)]
            table = pa.Table.from_arrays(arrays, names=names)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)  # (a block of another schema is refused: never a file of two)
            del table, arrays
            if lo + block < len(rows):  # freed before the next block (the heap kept three of a day's blocks)
                memory.give_back()
        writer.close()
    except BaseException:
        if writer is not None:
            writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return _replace(tmp, path)


_PLAIN_TYPES = {float: pa.float64(), int: pa.int64(), str: pa.string(), bool: pa.bool_()}
_I64 = (-(1 << 63), (1 << 63) - 1)


def _types(rows: list[dict[str, Any]], names: list[str], block: int) -> list[tuple[pa.DataType, bool]]:
    """Each column's Arrow type over all rows, as _column of the whole column makes it, and whether it is
    text of mixed types; the columns' values made a block of rows at a time (a week's column of text as
    Python values was tens of MiB). Arrow infers a type from every value, in order ([1.5, True] is
    double, [True, 1.5] mixed), so a column of one plain type is named by its type and any other is made
    whole, once, for its type."""
    seen = [_Kinds() for _ in names]
    for lo in range(0, len(rows), block):
        for kinds, values in zip(seen, iter_columns(rows[lo:lo + block], names)):
            kinds.add(values)
    out = []
    for name, kinds in zip(names, seen):
        kind = kinds.plain()
        if kind is None:
            got = _typed(_jsonable_column(next(iter_columns(rows, [name]))))
            out.append((pa.string(), True) if got is None else (got.type, False))
        else:
            out.append((kind, False))
    return out


class _Kinds:
    """The types of a column's values but None, added a block of values at a time, and what its type
    depends on: whether a float among them is finite, the least and greatest int."""

    __slots__ = ("kinds", "finite", "lo", "hi")

    def __init__(self) -> None:
        self.kinds: set[type] = set()
        self.finite = False
        self.lo: int | None = None
        self.hi: int | None = None

    def add(self, values: list) -> None:
        kinds = set(map(type, values)) - {type(None)}
        self.kinds |= kinds
        if kinds == {float} and not self.finite:
            self.finite = any(v is not None and math.isfinite(v) for v in values)
        elif kinds == {int}:
            ints = [v for v in values if v is not None]
            lo, hi = min(ints), max(ints)
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)

    def plain(self) -> pa.DataType | None:
        """The type of a column of one plain type and None, as _column makes it; None for any other."""
        if not self.kinds:
            return pa.null()
        if len(self.kinds) > 1:
            return None
        one = next(iter(self.kinds))
        if one not in _PLAIN_TYPES:
            return None
        if one is float:  # NaN and inf are None (jsonable): a column of them alone is null
            return pa.float64() if self.finite else pa.null()
        if one is int:  # (one beyond int64 is pa.array's to convert or refuse)
            return pa.int64() if _I64[0] <= self.lo and self.hi <= _I64[1] else None
        return _PLAIN_TYPES[one]


def _in_type(values: list, kind: pa.DataType, text: bool) -> pa.Array:
    """_column of a block's values in their whole column's type ``kind`` (``text``: the whole column's
    types do not mix). A block of another type (all None, ints in a column of floats) is converted to
    it value by value, as the whole column was."""
    values = _jsonable_column(values)
    if text:
        return _text(values)
    got = _typed(values)
    return got if got is not None and got.type == kind else pa.array(values, type=kind)


SAMPLES_KEY = b"genai_power.samples_key"  # Parquet metadata: what the table was built from (columnar.samples_key)


class SampleTables:
    """Sample tables (pipeline.Samples) written piece by piece (pieces joined into row groups of about
    ROW_GROUP_BYTES): never a whole table in memory; the tables together, a stretch of time at a time, so that a stretch is read once
    for the pieces of all of them, and ``upto`` lets a caller write the stretches that a request JSON
    reading a later one is past (the JSON and the samples of a slab from one read). Text columns are
    strings even where a piece has none (a GPU without a uuid). ``key``: what the tables derive from,
    kept in each file's metadata; a file already holding this key and as many rows is that same table,
    left as it is (a re-analysis would write the recording's samples again)."""

    def __init__(self, tables: list[tuple[Path, Any]], key: str | None = None):
        self.paths = [path for path, _ in tables]
        self._todo = [(path, samples) for path, samples in tables if key is None or not _holds(path, key, samples)]
        self._writers = [_PieceWriter(path, key) for path, _ in self._todo]
        self._stretches = itertools.zip_longest(*(samples.stretches() for _, samples in self._todo), fillvalue=())
        self._next = 0  # the first stretch not written yet

    def upto(self, stretch: int | None) -> None:
        """Write the stretches before ``stretch`` (all when None) not yet written."""
        if not self._todo:
            return
        try:
            while stretch is None or self._next < stretch:
                pieces_by_table = next(self._stretches, None)
                if pieces_by_table is None:
                    return
                self._next += 1
                for w, (_, samples), pieces in zip(self._writers, self._todo, pieces_by_table):
                    for piece in pieces:
                        w.write({c: _column(piece[c]) for c in samples.columns})
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for w in self._writers:
            w.close()

    def finish(self) -> list[Path]:
        """Every table written: the paths of the files (a locked one's new version beside it)."""
        self.upto(None)
        self.close()
        moved = {w.path: w.done() for w in self._writers}
        return [moved.get(path, path) for path in self.paths]


ROW_GROUP_BYTES = 2 << 20  # a sample table's pieces (a slab's, ~0.6 MiB for a GPU at 10 Hz) joined up to this


class _PieceWriter:
    """One Parquet file written a piece at a time into a temporary file, moved into place when done. The
    pieces are joined into row groups of about ROW_GROUP_BYTES: the writer keeps every row group's
    metadata until it closes (~15 KiB each, twice that while the footer is written), and a row group a
    slab made a first run of 6 days of one GPU at 10 Hz hold ~40 MiB of it for its two tables (joined:
    151 MiB at its peak, was 169; 8 MiB groups held more pieces than they saved)."""

    def __init__(self, path: Path, key: str | None):
        self.path, self.key = path, key
        self.tmp = path.with_name(path.name + ".tmp")
        self.writer = self.schema = None
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0

    def write(self, columns: dict[str, Any]) -> None:
        table = pa.table(columns)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
                                     for f in table.schema], metadata={SAMPLES_KEY: self.key} if self.key else None)
            # dictionary pages for the text columns only: readings rarely repeat (a third of the time)
            text = [f.name for f in self.schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
            self.writer = pq.ParquetWriter(self.tmp, self.schema, use_dictionary=text or False)
        self._pending.append(table if table.schema == self.schema else table.cast(self.schema))
        self._pending_bytes += table.nbytes
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.writer.write_table(pa.concat_tables(self._pending))
        self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        if self.writer is not None:
            self._flush()
            self.writer.close()
            self.writer = None

    def done(self) -> Path:
        return _replace(self.tmp, self.path)


def _holds(path: Path, key: str, samples) -> bool:
    """Whether the Parquet file at ``path`` was written from ``key`` with ``samples``' rows and columns
    (read from its footer's bytes, not parsed whole: analyzer.parquet_footer)."""
    got = parquet_footer.head(path)
    return (got is not None and got.rows == samples.rows and got.columns == list(samples.columns)
            and parquet_footer.key_value(SAMPLES_KEY, key.encode("utf-8")) in got.footer)


def write_text(path: Path, text: str | Iterable[str], encoding: str = "utf-8", skip_unchanged: bool = False) -> Path:
    """Write via a temporary file and an atomic rename: a killed analyzer never leaves half a CSV.
    ``text``: a string, or its parts in order (a list, or an iterable that makes them as they are
    written: a day's results.csv is never one string). ``skip_unchanged``: a file that already holds
    exactly these bytes is left as it is (creating the temporary file costs more than composing a
    request's JSON: a re-analysis rewrites thousands)."""
    if not isinstance(text, str) and skip_unchanged:
        text = "".join(text)
    if isinstance(text, str) and (skip_unchanged or len(text) <= _PIECE):
        return write_bytes(path, text.encode(encoding), skip_unchanged)
    return _write_chunks(path, _encoded([text] if isinstance(text, str) else text, encoding))


_PIECE = 1 << 20  # characters encoded at a time by write_text


def _encoded(parts: Iterable[str], encoding: str) -> Iterator[bytes]:
    """A long text (a report of a day of requests) encoded a piece at a time: never twice in memory.
    (Its parts may be made as they are written.)"""
    enc = codecs.getincrementalencoder(encoding)()
    for part in parts:
        for at in range(0, len(part), _PIECE):
            yield enc.encode(part[at:at + _PIECE])
    yield enc.encode("", final=True)


# a new file for bytes as they are ("\n" stays "\n" on Windows too): byte-identical files on every platform
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


def _write_chunks(path: Path, chunks: Iterable[bytes]) -> Path:
    """The bytes into a temporary file, then renamed onto ``path`` (_replace). A chunk that fails to be
    made leaves no half file beside the last good one. (Written by descriptor, without a file object or
    a look at the folder first: a run writes thousands of request JSONs.)"""
    tmp = f"{path}.tmp"
    try:
        fd = os.open(tmp, _CREATE, 0o666)
    except FileNotFoundError:  # its folder not made yet
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, _CREATE, 0o666)
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return _replace(tmp, path)


def write_bytes(path: Path, data: bytes, skip_unchanged: bool = False) -> Path:
    """:func:`write_text` of bytes already encoded."""
    if skip_unchanged:
        try:
            if os.stat(path).st_size == len(data) and path.read_bytes() == data:
                return path
        except OSError:  # missing or unreadable: written below
            pass
    return _write_chunks(path, [data])


REQUEST_KEYS = "request_json.keys"  # in raw/: what each <rid>.json was built from, and the bytes it was left with


@functools.lru_cache(maxsize=1)
def _code_digest() -> str | None:
    """The sources of the analyzer and shared packages and the versions of Python, the numeric
    libraries and msgpack (the events' decoder): the code a request JSON comes from (None when a
    source cannot be read)."""
    h = hashlib.sha256(f"{sys.version}\0{np.__version__}\0{pa.__version__}\0{msgpack.version}".encode())
    try:
        for package in (analyzer, shared):
            root = Path(package.__file__).parent
            for f in sorted(root.rglob("*.py")):
                h.update(f"\0{package.__name__}/{f.relative_to(root).as_posix()}\0".encode())
                h.update(f.read_bytes())
    except (OSError, TypeError):
        return None
    return h.hexdigest()


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


# an index entry: the file's key, its size, modification and change times (ns), the digest of its bytes
_ENTRY = struct.Struct("<16s3q16s")


def _read_index(path: Path) -> dict[str, bytes]:
    """A request_json.keys file's entries, packed (empty when missing or damaged, or an older
    version's JSON index: every file built)."""
    with _OldIndex(path) as old:
        return dict(old.entries())


def request_index(raw: Path) -> dict[str, tuple[bytes, int, int, int, bytes]]:
    """raw/request_json.keys read: each file's entry unpacked."""
    return {name: _ENTRY.unpack(e) for name, e in _read_index(raw / REQUEST_KEYS).items()}


class _OldIndex:
    """The last analysis' request_json.keys read an entry at a time as the files come: they come in the
    order it wrote them (the requests' time order), so the usual lookup is the next entry and nothing is
    held; one asked out of order reads on, holding the entries passed until they are asked for. A
    damaged file gives the entries before the damage (each is checked against its file anyway)."""

    def __init__(self, path: Path):
        self._fh: Any = None
        self._left = 0
        self._passed: dict[str, bytes] = {}
        try:
            self._fh = open(path, "rb")
            self._up = msgpack.Unpacker(self._fh, raw=False, max_buffer_size=1 << 20)
            for _ in range(self._up.read_map_header()):  # {"files": {name: entry}}
                if self._up.unpack() == "files":
                    self._left = self._up.read_map_header()
                    break
                self._up.skip()
        except Exception:  # missing, damaged, or an older version's JSON: no entries
            self._left = 0

    def __enter__(self) -> _OldIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._left = 0
        self._passed.clear()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def entries(self) -> Iterator[tuple[str, bytes]]:
        """The entries not yet read, in the file's order."""
        while self._left:
            self._left -= 1
            try:
                name, entry = self._up.unpack(), self._up.unpack()
            except Exception:  # damaged from here on: the rest unknown (those files built again)
                self._left = 0
                return
            if type(name) is str and type(entry) is bytes and len(entry) == _ENTRY.size:
                yield name, entry

    def pop(self, name: str) -> bytes | None:
        """``name``'s entry (each given once), or None when the file has none."""
        entry = self._passed.pop(name, None)
        if entry is not None:
            return entry
        for other, entry in self.entries():
            if other == name:
                return entry
            self._passed[other] = entry
        return None


class _NewIndex:
    """The entries of this analysis' request_json.keys as they come, packed into a temporary file (a
    week's are tens of MiB: not held), then written as one msgpack map, unless the file already holds
    those very bytes."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryFile(prefix="genai-power-keys-")
        self._packer = msgpack.Packer(use_bin_type=True)
        self._n = 0
        self._digest = hashlib.blake2b(digest_size=16)

    def add(self, name: str, entry: bytes) -> None:
        data = self._packer.pack(name) + self._packer.pack(entry)
        self._tmp.write(data)
        self._digest.update(data)
        self._n += 1

    def write(self, path: Path) -> Path:
        head = (self._packer.pack_map_header(1) + self._packer.pack("files")
                + self._packer.pack_map_header(self._n))
        size = len(head) + self._tmp.tell()
        with contextlib.suppress(OSError):  # unchanged: left as it is (missing or unreadable: written)
            if os.stat(path).st_size == size and _file_digest(path, len(head)) == (head, self._digest.digest()):
                return path
        self._tmp.seek(0)
        return _write_chunks(path, itertools.chain([head], iter(lambda: self._tmp.read(1 << 20), b"")))

    def close(self) -> None:
        self._tmp.close()


def _file_digest(path: Path, head: int) -> tuple[bytes, bytes]:
    """A file's first ``head`` bytes and the digest of the rest, read a MiB at a time."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        first = f.read(head)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return first, h.digest()


class RequestFiles:
    """raw/<rid>.json kept, not even built, when the analysis that wrote it had the same inputs: the
    recording and lookback (``samples_key``), the code, and the request's own (``RequestJson.key``:
    options, quality scores). raw/request_json.keys notes each file's key with the size, times and
    digest of the bytes written (msgpack: a file's name and 56 bytes); read and written an entry at a
    time (_OldIndex, _NewIndex: a week's index is not held). A file missing, or whose bytes differ from
    those, is written again (times that differ, as after copying the batch, send it to its digest)."""

    def __init__(self, raw: Path, samples_key: str | None):
        self.index = raw / REQUEST_KEYS
        code = _code_digest()
        self._key = None if samples_key is None or code is None else f"{samples_key}\0{code}"
        self._old = _OldIndex(self.index) if self._key is not None else None
        self._new = _NewIndex() if self._key is not None else None

    def write(self, path: Path, own_key: str | None, build) -> Path:
        """``path`` holding ``build()``'s JSON (json_text), built only when the file may not hold it."""
        key = None if self._key is None or own_key is None else _digest(f"{self._key}\0{own_key}".encode())
        if key is not None and self._kept(path, key):
            return path
        data = json_text(build()).encode("utf-8")
        written = write_bytes(path, data, skip_unchanged=True)
        if key is not None and written == path:  # (a locked file kept its old bytes: not noted)
            st = os.stat(path)
            self._new.add(path.name, _ENTRY.pack(key, st.st_size, st.st_mtime_ns, st.st_ctime_ns, _digest(data)))
        return written

    def _kept(self, path: Path, key: bytes) -> bool:
        entry = self._old.pop(path.name)
        if entry is None:
            return False
        was, size, mtime, ctime, digest = _ENTRY.unpack(entry)
        if was != key:
            return False
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size != size:
            return False
        if (st.st_mtime_ns, st.st_ctime_ns) != (mtime, ctime):  # touched, copied or changed: its bytes say
            try:
                if _digest(path.read_bytes()) != digest:
                    return False
            except OSError:
                return False
            entry = _ENTRY.pack(key, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest)
        self._new.add(path.name, entry)
        return True

    def close(self) -> Path | None:
        """Write the index of this analysis' files (none without a key: an old one would be stale)."""
        if self._key is None:
            self.index.unlink(missing_ok=True)
            return None
        self._old.close()  # (before the new is written over it: Windows will not replace an open file)
        try:
            return self._new.write(self.index)
        finally:
            self._new.close()

    def abort(self) -> None:
        """Let go of the indexes' files (an analysis that failed writes no index)."""
        for one in (self._old, self._new):
            if one is not None:
                one.close()


def write_all(a: Analysis, bd: BatchDir, make_plots: bool = True, progress: bool = False,
              lang: str = "en", samples_key: str | None = None) -> list[Path]:
    """Every output file; returns their paths but the request JSON files' (raw/<rid>.json, one a request:
    counted in the log, not listed, a day's are tens of thousands of paths). ``lang``: 'en' (report.md/.html), 'zh' (report.zh.md/.html)
    or 'both'. ``samples_key``: what the sample tables derive from (columnar.samples_key; see SampleTables).
    A file another program holds open does not stop the others: :class:`OutputsLocked` at the end."""
    locked: list[tuple[Path, Path]] = []
    token = _LOCKED.set(locked)
    try:
        written = _write_all(a, bd, make_plots, progress, lang, samples_key)
    finally:
        _LOCKED.reset(token)
    if locked:
        raise OutputsLocked(locked, written)
    return written


def _key_of(request_json, rid: str) -> str | None:
    key = getattr(request_json, "key", None)  # (a plain mapping of JSON, as tools pass: always written)
    return key(rid) if key is not None else None


def _write_all(a: Analysis, bd: BatchDir, make_plots: bool, progress: bool, lang: str,
               samples_key: str | None) -> list[Path]:
    bd.make()
    written = [
        # a request's row a line: the CSV written as it is made, a block of rows at a time
        write_text(bd.summary / "results.csv", tables.csv_parts(a.columns, a.results), CSV_ENCODING),
        write_text(bd.summary / "stats.csv", tables.csv_text(a.stats_columns, a.stats), CSV_ENCODING),
        write_text(bd.summary / "stats_per_case.csv", tables.csv_text(tables.PER_CASE_COLUMNS,
                                                                      tables.per_case(a.results, a.simulated)),
                   CSV_ENCODING),
        write_text(bd.summary / "pareto.csv", tables.csv_text(tables.PARETO_COLUMNS, a.pareto), CSV_ENCODING),
    ]
    if a.suites:
        written.append(write_text(bd.summary / "suites.csv", tables.csv_text(tables.SUITE_BOARD_COLUMNS, a.suites),
                                  CSV_ENCODING))
    if a.load_curve:
        from analyzer import load_curve
        written.append(write_text(bd.summary / "load_curve.csv", tables.csv_text(load_curve.COLUMNS, a.load_curve),
                                  CSV_ENCODING))
        written.append(parquet(bd.summary / "load_curve.parquet", list(load_curve.COLUMNS), a.load_curve))  # compare
    if a.warmups:
        written.append(write_text(bd.summary / "warmups.csv", tables.csv_parts(a.columns, a.warmups), CSV_ENCODING))
    # in time order (its telemetry is read in order); each built, written, dropped. Iterated, not listed:
    # a list of a week's rids is a string object a request, held to the end
    n_json = len(a.request_json)
    files = RequestFiles(bd.raw, samples_key)
    samples = [(bd.raw / "samples_gpu.parquet", a.gpu_samples), (bd.raw / "samples_host.parquet", a.host_samples)]
    # a slab's samples written once the JSON are past it: its stretch read once for both
    sample_tables = SampleTables([(path, table) for path, table in samples if table.rows], samples_key)
    stretch = getattr(a.request_json, "stretch", lambda rid: None)
    try:
        last = None
        for rid in tqdm(a.request_json, desc="request JSON", unit="req", total=n_json,
                        disable=not progress or n_json < 50):
            at = stretch(rid)
            # a slab done: its samples written, its stretch, texts and pieces freed and handed back (a
            # request with no window has no stretch: it writes nothing early, finish writes the rest)
            if at is not None and at != last:
                sample_tables.upto(at)
                memory.give_back()
                last = at
            files.write(bd.request_json(rid), _key_of(a.request_json, rid),
                        functools.partial(a.request_json.__getitem__, rid))
        files.close()
        samples_written = sample_tables.finish()
        getattr(a.request_json, "release", lambda: None)()  # the last stretch read, freed before the tables
        memory.give_back()
        written.append(parquet(bd.summary / "results.parquet", a.columns, a.results))
        written.extend(samples_written)
        memory.give_back()  # the results' last block of Arrow columns, freed before the reports
    except BaseException:  # the sample files' writers closed whatever failed (a live analyzer goes on)
        sample_tables.close()
        files.abort()
        raise
    plot_files: list[str] = []
    if make_plots:
        from analyzer import plots  # matplotlib only when plotting

        bd.plots.mkdir(parents=True, exist_ok=True)
        for tl in a.timelines:
            p = plots.power_timeline(bd.plots, tl, a.windows)
            written.append(p)
        for task in sorted({str(r.get("task")) for r in a.results if not r.get("suite")}):
            # one plot per quality basis: scores of different bases never share axes
            bases = sorted({p.get("quality_basis") or "" for p in a.pareto if p["task"] == task}) or [""]
            for basis in bases:
                p = plots.energy_quality(bd.plots, task, a.results, a.pareto, a.simulated, basis or None,
                                         own_file=len(bases) > 1)
                if p is not None:
                    written.append(p)
        plot_files = [f"../plots/{p.name}" for p in written if p.suffix == ".png"]
    # report.html does not need matplotlib: its plots are SVG drawn from the analysis itself
    for one in i18n.langs_of(lang):  # (each report's working set handed back before the next is made)
        written.append(write_text(bd.summary / i18n.suffixed("report.html", one), report_html.html_parts(a, one)))
        memory.give_back()
        written.append(write_text(bd.summary / i18n.suffixed("report.md", one), report.render_parts(a, plot_files, lang=one)))
        memory.give_back()
    log.info("outputs_written", batch=str(bd.root), files=len(written) + n_json, request_json=n_json,
             results=len(a.results), simulated=a.simulated)
    return written
