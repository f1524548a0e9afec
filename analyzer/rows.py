"""Compact results rows: a mapping that behaves as the dict it replaces, at a fraction of its memory.

A batch's results hold one row of some 150-250 columns per request, a day of requests tens of
thousands of rows. As dicts they cost several KB each: the dict's own table, and a Python object for
every number (a float is 24 bytes and a pointer). Here the values live column-wise in a :class:`Table`
shared by the rows of one analysis, each column in parts of ``PART_ROWS`` rows: a part of floats is an
array of doubles (8 bytes a row) with a byte a row saying which are None, a part of integers the same
with int64, a part still all None costs nothing, anything else (text, booleans, mixed types) a list, its
repeated strings held once. The parts held take at most ``RESIDENT_BYTES``, counted by what their values
take (a part of text may be ten of numbers), and are at most ``RESIDENT_PARTS``, but are never fewer
than one a column; the least recently made or read go to the table's spill file (a temporary file, gone
with the table) and are read back when used, so a week of requests' results costs the same memory as
an hour's (the passes over the rows go in row or column order: a part read back serves the next few
thousand reads). A :class:`Row` is a view: its row
number and a :class:`Layout`, the keys and their order, shared by every row built the same way. Adding
or removing a key moves the row to the next layout, itself shared, so a row iterates its keys in the
order they were added, as a dict would: the request JSON's summary and every file keep their order,
and every value reads back as it was stored (type, bits and all).
"""
from __future__ import annotations

import functools
import pickle
import sys
import tempfile
from array import array
from collections import deque
from collections.abc import ItemsView, Iterable, Iterator, Mapping, MutableMapping, Sequence, ValuesView
from operator import itemgetter
from typing import Any, Callable, Hashable

import numpy as np

from analyzer import mapped
from shared.numbers import finite

PART_ROWS = 4096       # rows of a column held together (a power of two)
GROUP_BLOCK = 1 << 15  # rows whose key columns group_by reads at once
RESIDENT_PARTS = 512   # parts held at most: enough for every column of a few thousand rows
RESIDENT_BYTES = 16 << 20  # their values' bytes at most (but a part of each column)
_INTERN_MAX = 256  # distinct strings a column holds once (names, statuses); beyond that, as they come
_I64 = (-(1 << 63), (1 << 63) - 1)


class _Part:
    """Rows [b·PART_ROWS, (b+1)·PART_ROWS) of one column, by their place j in the part. ``vals``: an
    array (``none`` marking the rows whose value is None; ``kind`` its values' type) or a list; None
    while every value is None, or while the part is in the spill file (``at``: its place there).
    ``dirty``: changed since it was last written there. ``cost``: its bytes as the table counts them."""

    __slots__ = ("vals", "none", "kind", "at", "dirty", "cost")

    def __init__(self) -> None:
        self.vals: array | list | None = None
        self.none: bytearray | None = None
        self.kind: type | None = None
        self.at: tuple[int, int] | None = None
        self.dirty = False
        self.cost = 0

    def get(self, j: int) -> Any:
        vals = self.vals
        if j >= len(vals) or (self.none is not None and self.none[j]):
            return None
        return vals[j]

    def set(self, j: int, v: Any, col: Column) -> None:
        """Set place j (the part resident, or all None)."""
        vals = self.vals
        if vals is None:
            if v is None:
                return
            self._start(type(v), v)
            col.table.hold(self, col.cost or self._full_cost(col.mask + 1))
            vals = self.vals
        self.dirty = True
        n = len(vals)
        if j >= n:  # rows are added in order: the new row's cell, after any skipped rows' (None)
            if j > n:
                self._grow(j - n)
            self.append(v, col)
            return
        none = self.none
        if none is None:  # a list
            vals[j] = col.once(v) if type(v) is str else v
        elif v is None:
            none[j] = 1
        elif type(v) is self.kind and (self.kind is float or _I64[0] <= v <= _I64[1]):
            vals[j] = v
            none[j] = 0
        else:
            self._to_list()
            self.set(j, v, col)

    def append(self, v: Any, col: Column) -> None:
        """The cell after the part's last (the part resident and started)."""
        none = self.none
        if none is None:  # a list
            self.vals.append(col.once(v) if type(v) is str else v)
        elif v is None:
            self.vals.append(0)
            none.append(1)
        elif type(v) is self.kind and (self.kind is float or _I64[0] <= v <= _I64[1]):
            self.vals.append(v)
            none.append(0)
        else:
            self._to_list()
            self.vals.append(col.once(v) if type(v) is str else v)

    def values(self, lo: int, hi: int) -> list[Any]:
        """Places lo to hi as a list (None where None, or never set)."""
        vals = self.vals
        if self.none is None:
            out = vals[lo:hi]
        else:
            out = vals[lo:hi].tolist()
            none = self.none[lo:hi]
            at = none.find(1)
            while at >= 0:
                out[at] = None
                at = none.find(1, at + 1)
        out.extend([None] * (hi - lo - len(out)))
        return out

    def pick(self, places: list[int]) -> list[Any]:
        """The values at ``places`` (any order)."""
        vals = self.vals
        if len(places) < 2 or max(places) >= len(vals):
            return [self.get(j) for j in places]
        pick = itemgetter(*places)  # at C speed
        out = list(pick(vals))
        if self.none is not None and 1 in (flags := pick(self.none)):
            out = [None if f else v for v, f in zip(out, flags)]
        return out

    def _to_list(self) -> None:
        """Another type met: the part becomes a list (every value as it was)."""
        self.vals, self.none, self.kind = [self.get(j) for j in range(len(self.vals))], None, None

    def _start(self, kind: type, v: Any) -> None:
        if kind is float:
            self.vals, self.none, self.kind = array("d"), bytearray(), float
        elif kind is int and _I64[0] <= v <= _I64[1]:
            self.vals, self.none, self.kind = array("q"), bytearray(), int
        else:
            self.vals = []

    def _full_cost(self, rows: int) -> int:
        """A guess at a new part's bytes once full (its column's parts so far had none measured)."""
        return rows * (self.vals.itemsize + 1 if self.none is not None else 64)

    def measure(self) -> int:
        """The bytes of the values held: an array's and its None flags, or a list's pointers and the
        objects it holds (each once: a column's repeated strings are one object)."""
        vals = self.vals
        if self.none is not None:
            return vals.itemsize * len(vals) + len(self.none)
        own = {id(v): v for v in vals if v is not None and v is not True and v is not False}
        return 8 * len(vals) + sum(map(sys.getsizeof, own.values()))

    def _grow(self, k: int) -> None:
        if self.none is None:
            self.vals.extend([None] * k)
        else:
            self.vals.frombytes(bytes(self.vals.itemsize * k))
            self.none.extend(b"\x01" * k)


class Column:
    """One column's values by row number, in parts (``parts[i >> shift]``, place ``i & mask``)."""

    __slots__ = ("parts", "seen", "table", "shift", "mask", "cost")

    def __init__(self, table: Table) -> None:
        self.parts: list[_Part] = []
        self.seen: dict[str, str] | None = None
        self.cost = 0  # a part's bytes as last measured: what a new part of it is counted at
        self.table, self.shift, self.mask = table, table.shift, table.mask

    def part(self, b: int) -> _Part | None:
        """Part b, read back if spilled (None: no row that far has a value)."""
        if b >= len(self.parts):
            return None
        p = self.parts[b]
        if p.vals is None and p.at is not None:
            self.table.load(p, self)
        return p

    def get(self, i: int) -> Any:
        b = i >> self.shift
        parts = self.parts
        if b >= len(parts):
            return None
        p = parts[b]
        vals = p.vals
        if vals is None:
            if p.at is None:
                return None
            vals = self.table.load(p, self)
        j = i & self.mask
        if j >= len(vals):
            return None
        none = p.none
        if none is not None and none[j]:
            return None
        return vals[j]

    def set(self, i: int, v: Any) -> None:
        b = i >> self.shift
        parts = self.parts
        if v is None and (b >= len(parts) or (parts[b].vals is None and parts[b].at is None)):
            return  # None where every value is None already
        while len(parts) <= b:
            if parts and parts[-1].vals is not None:  # the part before is full: its bytes measured
                self.table.measured(parts[-1], self)
            parts.append(_Part())
        self.part(b).set(i & self.mask, v, self)

    def values(self, lo: int, hi: int) -> list[Any]:
        """The values of rows lo to hi as a list (None where None, or never set)."""
        out: list[Any] = []
        while lo < hi:
            b = lo >> self.shift
            end = min(hi, (b + 1) << self.shift)
            p = self.part(b)
            if p is None or p.vals is None:
                out.extend([None] * (end - lo))
            else:
                j = lo & self.mask
                out.extend(p.values(j, j + end - lo))
            lo = end
        return out

    def once(self, v: str) -> str:
        seen = self.seen
        if seen is None:
            seen = self.seen = {}
        got = seen.get(v)
        if got is not None:
            return got
        if len(seen) < _INTERN_MAX:
            seen[v] = v
        return v


class Table:
    """The columns of one analysis's rows, by name; each row a row number. Its layouts by their keys:
    rows that reach the same keys by any edits share one. The parts held, oldest first (``hold``):
    beyond ``resident`` parts or ``resident_bytes``, but while more than one a column, the oldest is
    written to the spill file and let go (a pass in row order needs a part of each column at once)."""

    def __init__(self, part_rows: int | None = None, resident: int | None = None,
                 resident_bytes: int | None = None) -> None:
        part_rows = PART_ROWS if part_rows is None else part_rows
        resident = RESIDENT_PARTS if resident is None else resident
        if part_rows < 1 or part_rows & (part_rows - 1) or resident < 1:
            raise ValueError(f"part_rows must be a power of two and resident at least 1, not {part_rows}, {resident}")
        self.budget = RESIDENT_BYTES if resident_bytes is None else resident_bytes
        self.held_bytes = 0  # the held parts' costs
        self.columns: dict[str, Column] = {}
        self.n = 0
        self._layouts: dict[tuple[str, ...], Layout] = {}
        self.by_id: list[Layout] = []  # the layouts by id
        self.layout_of = array("i")  # each row's layout id (the table's, not its Row objects': see RowList)
        self.shift, self.mask, self.resident = part_rows.bit_length() - 1, part_rows - 1, resident
        self._held: deque[_Part] = deque()
        self._file: Any = None
        self._end = 0
        self.spilled = 0  # parts written to the spill file (their writes, counted)
        self.loaded = 0  # parts read back from it

    def column(self, key: str) -> Column:
        col = self.columns.get(key)
        if col is None:
            col = self.columns[key] = Column(self)
        return col

    def layout(self, keys: tuple[str, ...]) -> "Layout":
        got = self._layouts.get(keys)
        if got is None:
            got = self._layouts[keys] = Layout(keys, self, len(self.by_id))
            self.by_id.append(got)
        return got

    def new_row(self, layout: Layout) -> int:
        self.layout_of.append(layout.id)
        self.n += 1
        return self.n - 1

    def hold(self, p: _Part, cost: int) -> None:
        """Part p was made or read back, counted at ``cost`` bytes: held, the oldest spilled while the
        parts held are more than one a column and too many or take too much."""
        held = self._held
        held.append(p)
        p.cost = cost
        self.held_bytes += cost
        floor = len(self.columns)
        while len(held) > floor and (len(held) > self.resident or self.held_bytes > self.budget):
            self._spill(held.popleft())

    def measured(self, p: _Part, col: Column) -> None:
        """Held part p is full: counted at its measured bytes, as its column's next part will be."""
        cost = p.measure()
        self.held_bytes += cost - p.cost
        p.cost = col.cost = cost

    def load(self, p: _Part, col: Column) -> array | list:
        """Spilled part p read back (held again); its values."""
        self._file.seek(p.at[0])
        p.vals, p.none, p.kind = pickle.loads(self._file.read(p.at[1]))
        p.dirty = False
        col.cost = cost = p.measure()
        self.loaded += 1
        self.hold(p, cost)
        return p.vals

    def _spill(self, p: _Part) -> None:
        self.held_bytes -= p.cost
        if p.vals is None:
            return
        if p.dirty or p.at is None:  # else the file's copy is still its values
            data = pickle.dumps((p.vals, p.none, p.kind), protocol=pickle.HIGHEST_PROTOCOL)
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="genai-power-rows-")
            if p.at is not None and p.at[1] >= len(data):  # its old place (a part of numbers keeps its size)
                where = p.at[0]
            else:
                where, self._end = self._end, self._end + len(data)
            self._file.seek(where)
            self._file.write(data)
            p.at = (where, len(data))
            self.spilled += 1
        p.vals = p.none = None
        p.dirty = False


class Layout:
    """One key order: the keys, their columns, and the layouts an edit leads to (found once)."""

    __slots__ = ("keys", "index", "cols", "table", "id", "_plus", "_minus", "_with")

    def __init__(self, keys: tuple[str, ...], table: Table, number: int = 0):
        self.keys, self.table, self.id = keys, table, number
        self.index = {k: table.column(k) for k in keys}  # (a dict: keys() is a real set-like view)
        self.cols = tuple(self.index.values())
        self._plus: dict[str, Layout] = {}
        self._minus: dict[str, Layout] = {}
        self._with: dict[tuple[str, ...], tuple[Layout, tuple[Column, ...], tuple[Column, ...]]] = {}

    def plus(self, key: str) -> "Layout":
        nxt = self._plus.get(key)
        if nxt is None:
            nxt = self._plus[key] = self.table.layout(self.keys + (key,))
        return nxt

    def minus(self, key: str) -> "Layout":
        nxt = self._minus.get(key)
        if nxt is None:
            nxt = self._minus[key] = self.table.layout(tuple(k for k in self.keys if k != key))
        return nxt

    def with_keys(self, keys: tuple[str, ...]) -> tuple["Layout", tuple[Column, ...], tuple[Column, ...]]:
        """The layout after setting ``keys`` in order (new ones appended, as a dict's), the keys'
        columns and the new keys' columns."""
        got = self._with.get(keys)
        if got is None:
            new = tuple(k for k in dict.fromkeys(keys) if k not in self.index)
            nxt = self.table.layout(self.keys + new) if new else self
            got = self._with[keys] = (nxt, tuple(nxt.index[k] for k in keys), tuple(nxt.index[k] for k in new))
        return got


class Layouts:
    """The layouts and the table of one analysis (kept with the analysis, not the process: a live
    service analysing batch after batch does not collect every row and layout it ever saw)."""

    def __init__(self, table: Table | None = None) -> None:
        self.table = table if table is not None else Table()

    def row(self, d: Mapping[str, Any]) -> "Row":
        """``d`` as a Row (same keys, order and values)."""
        table = self.table
        layout = table.layout(tuple(d))
        i = table.new_row(layout)
        b, j = i >> table.shift, i & table.mask
        for col, v in zip(layout.cols, d.values()):
            # the usual case inline, a cell appended to its column's held part (a call per cell was
            # most of building a request's row); any other (a new part, a spilled one, a gap, a type) by set
            parts = col.parts
            p = parts[b] if len(parts) > b else None
            vals = p.vals if p is not None else None
            if vals is None or len(vals) != j:
                if v is not None:  # (a new row's None is no value: nothing to store)
                    col.set(i, v)
            elif p.none is None:  # a list
                vals.append(col.once(v) if type(v) is str else v)
                p.dirty = True
            elif v is None:
                vals.append(0)
                p.none.append(1)
                p.dirty = True
            elif type(v) is p.kind and (p.kind is float or _I64[0] <= v <= _I64[1]):
                vals.append(v)
                p.none.append(0)
                p.dirty = True
            else:  # another type: the part becomes a list
                col.set(i, v)
        return Row(table, i)


class Row(MutableMapping):
    """A results row: a dict's behaviour (key order, get, setdefault, pop, ==, dict(row), {**row})
    over its row number in a :class:`Table`, whose layout (keys and order) the table notes: any Row of
    that row number, made at any time (``RowList``), sees every edit of any other."""

    __slots__ = ("_t", "_i")

    def __init__(self, table: Table, i: int):
        self._t, self._i = table, i  # (row i of the table as it stands: its layout the table's)

    @property
    def _layout(self) -> Layout:
        t = self._t
        return t.by_id[t.layout_of[self._i]]

    @_layout.setter
    def _layout(self, layout: Layout) -> None:
        self._t.layout_of[self._i] = layout.id

    def __getitem__(self, key: str) -> Any:
        t = self._t
        return t.by_id[t.layout_of[self._i]].index[key].get(self._i)

    def get(self, key: str, default: Any = None) -> Any:
        t = self._t
        col = t.by_id[t.layout_of[self._i]].index.get(key)
        return default if col is None else col.get(self._i)

    def __contains__(self, key: object) -> bool:
        t = self._t
        return key in t.by_id[t.layout_of[self._i]].index

    def __setitem__(self, key: str, value: Any) -> None:
        col = self._layout.index.get(key)
        if col is None:
            self._layout = self._layout.plus(key)
            col = self._layout.index[key]
        col.set(self._i, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        col = self._layout.index.get(key)
        if col is not None:
            return col.get(self._i)
        self[key] = default
        return default

    def update(self, other: Any = (), /, **kw: Any) -> None:
        if type(other) is not dict or kw:
            return MutableMapping.update(self, other, **kw)
        # a dict's keys at once: one step to the layout they lead to, not a step per key
        self._layout, cols, _ = self._layout.with_keys(tuple(other))
        i = self._i
        for col, v in zip(cols, other.values()):
            col.set(i, v)

    def __delitem__(self, key: str) -> None:
        if key not in self._layout.index:
            raise KeyError(key)
        self._layout = self._layout.minus(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout.keys)

    def __len__(self) -> int:
        return len(self._layout.keys)

    def keys(self):
        return self._layout.index.keys()  # a real dict view: set operations at C speed

    def items(self):
        return _Items(self)

    def values(self):
        return _Values(self)

    def copy(self) -> dict[str, Any]:
        i = self._i
        return {k: col.get(i) for k, col in self._layout.index.items()}

    def __copy__(self) -> "Row":
        """A row with its own values, as a dict's copy (a new row of the same table and layout)."""
        layout = self._layout
        i = layout.table.new_row(layout)
        for col in layout.cols:
            col.set(i, col.get(self._i))
        return Row(layout.table, i)

    def __reduce__(self):
        return _from_dict, (self.copy(),)  # pickled alone, not with its table

    def __repr__(self) -> str:
        return repr(self.copy())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.copy() == (other.copy() if isinstance(other, Row) else dict(other.items()))

    __hash__ = None  # type: ignore[assignment]  (a mutable mapping, as a dict)


def _from_dict(d: dict[str, Any]) -> Row:
    return Layouts().row(d)


def fill(rows: list[MutableMapping[str, Any]], keys: Iterable[str]) -> None:
    """``row.setdefault(k, None)`` for each row and each of ``keys``, in order (the keys a layout
    lacks found once per layout, not once per row and key)."""
    keys = tuple(keys)
    by_layout: dict[Layout, tuple[Layout, tuple[Column, ...], tuple[Column, ...]]] = {}
    for row in rows:
        if type(row) is Row:
            layout = row._layout
            got = by_layout.get(layout)
            if got is None:
                got = by_layout[layout] = layout.with_keys(keys)
            row._layout = got[0]
            for col in got[2]:
                col.set(row._i, None)
        else:
            for k in keys:
                row.setdefault(k, None)


class _Items(ItemsView):
    """``row.items()``: (key, value) pairs in the row's order, without a lookup per key."""

    __slots__ = ()

    def __iter__(self):
        i = self._mapping._i
        return ((k, col.get(i)) for k, col in self._mapping._layout.index.items())


class _Values(ValuesView):
    """``row.values()``: the values in the row's order."""

    __slots__ = ()

    def __iter__(self):
        i = self._mapping._i
        return (col.get(i) for col in self._mapping._layout.index.values())


class RowList(Sequence):
    """Rows of one table by row number, each Row made when read: a week's results hold 8 bytes a row
    here (its number; in a mapped file where long: analyzer.mapped), not a Row object and an int each
    (~90 bytes, and the allocator's arenas they pin). ``take(idx)``: those rows, another RowList; ``+``,
    ``==`` as lists of the rows."""

    __slots__ = ("table", "places")

    def __init__(self, table: Table, places: Sequence[int] | np.ndarray):
        self.table, self.places = table, mapped.kept(np.asarray(places, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.places.size)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return RowList(self.table, self.places[k])
        return Row(self.table, int(self.places[k]))

    def __iter__(self) -> Iterator[Row]:
        row, places = functools.partial(Row, self.table), self.places
        for lo in range(0, places.size, PART_ROWS):  # (numbers as ints a block at a time, not all at once;
            yield from map(row, places[lo:lo + PART_ROWS].tolist())  # their mapped pages let go after)
            mapped.written(places)

    def take(self, idx: Sequence[int] | np.ndarray) -> RowList:
        return RowList(self.table, mapped.take(self.places, idx))

    def layout_ids(self) -> np.ndarray:
        """Each row's layout id (the table's ``by_id``)."""
        ids = np.frombuffer(self.table.layout_of, dtype=np.int32) if self.table.n else np.zeros(0, np.int32)
        return ids[self.places]

    def __add__(self, other: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [*self, *other]

    def __radd__(self, other: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [*other, *self]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, tuple, RowList)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        return list, (list(self),)  # pickled as the list of rows it stands for

    def __repr__(self) -> str:
        return repr(list(self))


def _layouts_of(rows: Sequence[Mapping[str, Any]]) -> dict[int, tuple[Layout, Sequence[int]]]:
    """The rows' layouts, each with the rows' positions that have it (a range when all do)."""
    n = len(rows)
    if isinstance(rows, RowList):
        ids = rows.layout_ids()
        if not n or (ids == ids[0]).all():
            return {int(ids[0]): (rows.table.by_id[int(ids[0])], range(n))} if n else {}
        return {u: (rows.table.by_id[u], np.flatnonzero(ids == u).tolist()) for u in np.unique(ids).tolist()}
    first = rows[0]._layout
    if all(r._layout is first for r in rows):  # the usual: every row built alike, no list of places
        return {id(first): (first, range(n))}
    layouts: dict[int, tuple[Layout, list[int]]] = {}
    for at, r in enumerate(rows):
        layout = r._layout
        layouts.setdefault(id(layout), (layout, []))[1].append(at)
    return layouts


def keys_of(rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """``{k for row in rows for k in row}``, the keys of each layout once (not of each row)."""
    if isinstance(rows, RowList):
        return set().union(*(layout.keys for layout, _ in _layouts_of(rows).values()))
    layouts = {id(r._layout): r._layout for r in rows if type(r) is Row}
    return set().union(*(layout.keys for layout in layouts.values()), *(r for r in rows if type(r) is not Row))


def group_by(rows: Sequence[Mapping[str, Any]], names: list[str],
             key: Callable[..., Hashable | None]) -> dict[Hashable, Sequence[Mapping[str, Any]]]:
    """{key(*the row's values of ``names``): the rows giving it, in order}, rows whose key is None left
    out. A RowList's groups are RowLists (its rows' numbers: a week's groups are not a Row object each
    while they are worked through); a list's, lists."""
    if not isinstance(rows, RowList):
        out: dict[Hashable, list[Mapping[str, Any]]] = {}
        for row in rows:
            k = key(*(row.get(c) for c in names))
            if k is not None:
                out.setdefault(k, []).append(row)
        return out
    at: dict[Hashable, array] | None = None
    # (the usual: every row of one key. Its positions are not listed while rows 0..run-1 are all of it)
    run_key: Hashable | None = None
    run = 0
    # the key columns a block of rows at a time: a week's columns at once, as Python values, were tens of
    # MiB that the allocators kept after (their arenas pinned by the few values that lived on)
    for lo in range(0, len(rows), GROUP_BLOCK):
        for p, values in enumerate(zip(*iter_columns(rows[lo:lo + GROUP_BLOCK], names)), lo):
            k = key(*values)
            if at is None:
                if k is not None and (run == 0 or k == run_key):
                    run_key, run = k, run + 1
                    continue
                at = {run_key: array("q", range(run))} if run else {}
            if k is not None:
                got = at.get(k)
                if got is None:
                    got = at[k] = array("q")
                got.append(p)
    if at is None:  # one group of every row (or no rows): the rows themselves
        return {run_key: rows} if run else {}
    out = {}
    for k, v in at.items():  # each group's table row numbers written over its positions (no second array)
        places = np.frombuffer(v, dtype=np.int64)
        out[k] = RowList(rows.table, np.take(rows.places, places, out=places))
    return out


def truthy(rows: Sequence[Mapping[str, Any]], name: str) -> Sequence[Mapping[str, Any]]:
    """The rows whose ``name`` is truthy (``[r for r in rows if r.get(name)]``; a RowList's, a RowList)."""
    return group_by(rows, [name], lambda v: True if v else None).get(True, rows[:0])


def columns_of(rows: list[Mapping[str, Any]], names: list[str]) -> list[list[Any]]:
    """``[[row.get(c) for row in rows] for c in names]``, a column at a time: each column's values taken
    from its table at once (a get per row and cell was most of writing a long batch's tables)."""
    return list(iter_columns(rows, names))


def iter_columns(rows: list[Mapping[str, Any]], names: list[str]) -> Iterator[list[Any]]:
    """columns_of, a column made as it is asked for: a day's results as Python values are ~0.3 GB."""
    if not rows or not names:
        yield from ([] for _ in names)
        return
    got = _placed(rows)
    if got is None:
        yield from ([r.get(c) for r in rows] for c in names)
        return
    table, lo, n, pieces = got
    layouts = _layouts_of(rows)
    for c in names:
        col = table.columns.get(c)
        if col is None:
            values = [None] * n
        elif pieces is None:
            values = col.values(lo, lo + n)
        else:
            values = []
            for b, places in pieces:
                p = col.part(b)
                values.extend([None] * len(places) if p is None or p.vals is None else p.pick(places.tolist()))
        for layout, at in layouts.values():
            if c not in layout.index:  # rows without the key: None, as row.get gives
                for j in at:
                    values[j] = None
        yield values


def iter_floats(rows: list[Mapping[str, Any]], names: list[str]) -> Iterator[np.ndarray]:
    """iter_columns' columns as arrays of doubles: each value as ``finite`` reads it, NaN where that gives
    None. A part of numbers is read as an array (no Python float a value: a week's group of rows, a column
    at a time, made millions, and the allocator kept the pools they had been put in)."""
    n = len(rows)
    got = _placed(rows) if n and names else None
    if got is None:
        for values in iter_columns(rows, names):
            yield _finite_floats(values, n)
        return
    table, lo, n, pieces = got
    if pieces is None:  # a run of rows: each part's share of it, as a range (not a place a row)
        first, last = lo >> table.shift, (lo + n - 1) >> table.shift
        pieces = [(b, slice(max(lo, b << table.shift) & table.mask,
                            ((min(lo + n, (b + 1) << table.shift) - 1) & table.mask) + 1))
                  for b in range(first, last + 1)]
    layouts = _layouts_of(rows)
    for c in names:
        out = np.full(n, _NAN)
        col = table.columns.get(c)
        at = 0
        for b, places in pieces if col is not None else ():
            k = places.stop - places.start if type(places) is slice else places.size
            vals = _part_floats(col.part(b), places)
            if vals is not None:
                out[at:at + k] = vals
            at += k
        for layout, where in layouts.values():
            if c not in layout.index:  # rows without the key: None, as row.get gives
                out[where] = _NAN
        yield out


_NAN = float("nan")


def _finite_floats(values: Iterable[Any], n: int) -> np.ndarray:
    """The n values as ``finite`` reads each, NaN where that gives None."""
    return np.fromiter((_NAN if (x := finite(v)) is None else x for v in values), dtype=np.float64, count=n)


def _part_floats(p: _Part | None, places: np.ndarray | slice) -> np.ndarray | None:
    """Part p's values at ``places`` (an array, or a slice of the part) as iter_floats gives them (None:
    the part is all None)."""
    if p is None or p.vals is None:
        return None
    ranged = type(places) is slice
    if p.none is None:  # a list: any values, each as finite reads it
        if ranged:
            return _finite_floats(p.values(places.start, places.stop), places.stop - places.start)
        return _finite_floats(p.pick(places.tolist()), places.size)
    if ranged:  # (places past the part's last value were never set)
        out = np.full(places.stop - places.start, _NAN)
        j = slice(places.start, max(places.start, min(places.stop, len(p.vals))))
        have = slice(0, j.stop - j.start)
    else:
        out = np.full(places.size, _NAN)
        have = places < len(p.vals)
        j = places[have]
    v = np.frombuffer(p.vals, dtype=np.float64 if p.kind is float else np.int64)[j].astype(np.float64)
    v[(np.frombuffer(p.none, dtype=np.uint8)[j] != 0) | ~np.isfinite(v)] = _NAN
    out[have] = v
    return out


def _placed(rows: Sequence[Mapping[str, Any]]) -> tuple[Table, int, int, list | None] | None:
    """Where rows are in their table: (table, first row, count, None) for a run of rows in order, else
    (table, first, count, [(part, its rows' places in it), ...] in the rows' order); None for rows that
    are not all Row views of one table."""
    if isinstance(rows, RowList):
        table, where = rows.table, rows.places
    elif any(type(r) is not Row for r in rows) or len({id(r._t) for r in rows}) > 1:
        return None
    else:
        table = rows[0]._t
        # (the rows' places as an array, not Python ints: a week's group of rows is held while its columns
        # are read)
        where = np.fromiter((r._i for r in rows), dtype=np.int64, count=len(rows))
    lo, n = int(where[0]), len(rows)
    # the usual cases: every row of the table in order, or a run of them (a block of the CSV): rising
    # one by one from lo to lo + n - 1 (checked a block at a time, not against a whole arange)
    if int(where[-1]) - lo == n - 1 and mapped.rising(where, strictly=True):
        return table, lo, n, None
    # other rows (a group): split where the part changes, each piece read at C speed
    part = where >> table.shift
    cuts = [0, *(np.flatnonzero(np.diff(part)) + 1).tolist(), n]
    return table, lo, n, [(int(part[k]), where[k:m] & table.mask) for k, m in zip(cuts, cuts[1:])]
