"""Compact results rows: a mapping that behaves as the dict it replaces, at a fraction of its memory.

A batch's results hold one row of some 150-250 columns per request, a day of requests tens of
thousands of rows. As dicts they cost several KB each: the dict's own table, and a Python object for
every number (a float is 24 bytes and a pointer). Here the values live column-wise in a :class:`Table`
shared by the rows of one analysis: a column of floats is an array of doubles (8 bytes a row) with a
byte a row saying which are None, a column of integers the same with int64, a column still all None
costs nothing, anything else (text, booleans, a column of mixed types) a list, its repeated strings
held once. A :class:`Row` is a view: its row number and a :class:`Layout`, the keys and their order,
shared by every row built the same way. Adding or removing a key moves the row to the next layout,
itself shared, so a row iterates its keys in the order they were added, as a dict would: the request
JSON's summary and every file keep their order, and every value reads back as it was stored (type,
bits and all).
"""
from __future__ import annotations

from array import array
from collections.abc import ItemsView, Iterable, Iterator, Mapping, MutableMapping, ValuesView
from operator import itemgetter
from typing import Any

_INTERN_MAX = 256  # distinct strings a column holds once (names, statuses); beyond that, as they come
_I64 = (-(1 << 63), (1 << 63) - 1)


class Column:
    """One column's values by row number. ``vals``: None while every value is None, else an array
    (with ``none`` marking the rows whose value is None; ``kind`` its values' type) or a list."""

    __slots__ = ("vals", "none", "seen", "kind")

    def __init__(self) -> None:
        self.vals: array | list | None = None
        self.none: bytearray | None = None
        self.seen: dict[str, str] | None = None
        self.kind: type | None = None

    def get(self, i: int) -> Any:
        vals = self.vals
        if vals is None or i >= len(vals):
            return None
        none = self.none
        if none is not None and none[i]:
            return None
        return vals[i]

    def set(self, i: int, v: Any) -> None:
        vals = self.vals
        if vals is None:
            if v is None:
                return
            self._start(type(v), v)
            vals = self.vals
        n = len(vals)
        if i >= n:  # rows are added in order: the new row's cell, after any skipped rows' (None)
            if i > n:
                self._grow(i - n)
            self.append(v)
            return
        none = self.none
        if none is None:  # a list
            if type(v) is str:
                v = self._once(v)
            vals[i] = v
        elif v is None:
            none[i] = 1
        elif type(v) is self.kind and (self.kind is float or _I64[0] <= v <= _I64[1]):
            vals[i] = v
            none[i] = 0
        else:
            self._to_list()
            self.set(i, v)

    def append(self, v: Any) -> None:
        """The cell of the row after the column's last (the column started)."""
        none = self.none
        if none is None:  # a list
            self.vals.append(self._once(v) if type(v) is str else v)
        elif v is None:
            self.vals.append(0)
            none.append(1)
        elif type(v) is self.kind and (self.kind is float or _I64[0] <= v <= _I64[1]):
            self.vals.append(v)
            none.append(0)
        else:
            self._to_list()
            self.vals.append(self._once(v) if type(v) is str else v)

    def _to_list(self) -> None:
        """Another type met: the column becomes a list (every value as it was)."""
        self.vals, self.none, self.kind = [self.get(j) for j in range(len(self.vals))], None, None

    def _start(self, kind: type, v: Any) -> None:
        if kind is float:
            self.vals, self.none, self.kind = array("d"), bytearray(), float
        elif kind is int and _I64[0] <= v <= _I64[1]:
            self.vals, self.none, self.kind = array("q"), bytearray(), int
        else:
            self.vals = []

    def _grow(self, k: int) -> None:
        if self.none is None:
            self.vals.extend([None] * k)
        else:
            self.vals.frombytes(bytes(self.vals.itemsize * k))
            self.none.extend(b"\x01" * k)

    def _once(self, v: str) -> str:
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
    rows that reach the same keys by any edits share one."""

    def __init__(self) -> None:
        self.columns: dict[str, Column] = {}
        self.n = 0
        self._layouts: dict[tuple[str, ...], Layout] = {}

    def column(self, key: str) -> Column:
        col = self.columns.get(key)
        if col is None:
            col = self.columns[key] = Column()
        return col

    def layout(self, keys: tuple[str, ...]) -> "Layout":
        got = self._layouts.get(keys)
        if got is None:
            got = self._layouts[keys] = Layout(keys, self)
        return got

    def new_row(self) -> int:
        self.n += 1
        return self.n - 1


class Layout:
    """One key order: the keys, their columns, and the layouts an edit leads to (found once)."""

    __slots__ = ("keys", "index", "cols", "table", "_plus", "_minus", "_with")

    def __init__(self, keys: tuple[str, ...], table: Table):
        self.keys, self.table = keys, table
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

    def __init__(self) -> None:
        self.table = Table()

    def row(self, d: Mapping[str, Any]) -> "Row":
        """``d`` as a Row (same keys, order and values)."""
        layout = self.table.layout(tuple(d))
        i = self.table.new_row()
        for col, v in zip(layout.cols, d.values()):
            # Column.set's usual cases inline (a call per cell was most of building a request's row)
            vals = col.vals
            if vals is None:
                if v is not None:
                    col.set(i, v)
            elif len(vals) != i:  # (rows without the key in between)
                col.set(i, v)
            elif col.none is None:  # a list
                vals.append(col._once(v) if type(v) is str else v)
            elif v is None:
                vals.append(0)
                col.none.append(1)
            elif type(v) is col.kind and (col.kind is float or _I64[0] <= v <= _I64[1]):
                vals.append(v)
                col.none.append(0)
            else:  # another type: the column becomes a list
                col.set(i, v)
        return Row(layout, i)


class Row(MutableMapping):
    """A results row: a dict's behaviour (key order, get, setdefault, pop, ==, dict(row), {**row})
    over a shared :class:`Layout` and its row number in the layout's table."""

    __slots__ = ("_layout", "_i")

    def __init__(self, layout: Layout, i: int):
        self._layout, self._i = layout, i

    def __getitem__(self, key: str) -> Any:
        return self._layout.index[key].get(self._i)

    def get(self, key: str, default: Any = None) -> Any:
        col = self._layout.index.get(key)
        if col is None:
            return default
        vals, i = col.vals, self._i  # (Column.get inline: rows are read a cell at a time in many places)
        if vals is None or i >= len(vals) or (col.none is not None and col.none[i]):
            return None
        return vals[i]

    def __contains__(self, key: object) -> bool:
        return key in self._layout.index

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
        i = layout.table.new_row()
        for col in layout.cols:
            col.set(i, col.get(self._i))
        return Row(layout, i)

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


def keys_of(rows: list[Mapping[str, Any]]) -> set[str]:
    """``{k for row in rows for k in row}``, the keys of each layout once (not of each row)."""
    layouts = {id(r._layout): r._layout for r in rows if type(r) is Row}
    return set().union(*(layout.keys for layout in layouts.values()), *(r for r in rows if type(r) is not Row))


def columns_of(rows: list[Mapping[str, Any]], names: list[str]) -> list[list[Any]]:
    """``[[row.get(c) for row in rows] for c in names]``, a column at a time: each column's values taken
    from its table at once (a get per row and cell was most of writing a long batch's tables)."""
    return list(iter_columns(rows, names))


def iter_columns(rows: list[Mapping[str, Any]], names: list[str]) -> Iterator[list[Any]]:
    """columns_of, a column made as it is asked for: a day's results as Python values are ~0.3 GB."""
    if not rows or not names:
        yield from ([] for _ in names)
        return
    if any(type(r) is not Row for r in rows) or len({id(r._layout.table) for r in rows}) > 1:
        yield from ([r.get(c) for r in rows] for c in names)
        return
    table = rows[0]._layout.table
    idx = [r._i for r in rows]
    lo = idx[0]
    # the usual cases: every row of the table in order, or a run of them (a block of the CSV)
    run = idx == list(range(lo, lo + len(idx)))
    pick = None if run or len(idx) < 2 else itemgetter(*idx)  # other rows (a group): at C speed
    top = max(idx)
    layouts: dict[int, tuple[Layout, list[int]]] = {}
    for at, r in enumerate(rows):
        layouts.setdefault(id(r._layout), (r._layout, []))[1].append(at)
    for c in names:
        col = table.columns.get(c)
        if col is None or col.vals is None:
            values = [None] * len(idx)
        elif run:
            values = _column_values(col, lo, lo + len(idx))
        elif pick is not None and top < len(col.vals):
            values = list(pick(col.vals))
            if col.none is not None and 1 in (flags := pick(col.none)):
                values = [None if f else v for v, f in zip(values, flags)]
        else:
            get = col.get
            values = [get(i) for i in idx]
        for layout, at in layouts.values():
            if c not in layout.index:  # rows without the key: None, as row.get gives
                for j in at:
                    values[j] = None
        yield values


def _column_values(col: Column, lo: int, hi: int) -> list[Any]:
    """The column's values of rows lo to hi as a list (None where None, or never set)."""
    vals = col.vals
    if vals is None:
        return [None] * (hi - lo)
    if col.none is None:
        out = vals[lo:hi]
    else:
        out = vals[lo:hi].tolist()
        none = col.none[lo:hi]
        at = none.find(1)
        while at >= 0:
            out[at] = None
            at = none.find(1, at + 1)
    out.extend([None] * (hi - lo - len(out)))
    return out
