"""Compact results rows: a mapping that behaves as the dict it replaces, at a fraction of its memory.

A batch's results hold one row of some 150-250 columns per request; as dicts they cost several KB
each, most of it the dict's own table (a hash, a key and a value pointer per slot, a third of the slots
empty). A :class:`Row` keeps only its values, in a list; the keys, their order and their positions are
a :class:`Layout` shared by every row built the same way (most rows of a batch share one or a few).
Adding or removing a key moves the row to the next layout, itself shared, so a row iterates its keys in
the order they were added, as a dict would: the request JSON's summary and every file keep their order.
"""
from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from operator import itemgetter
from typing import Any


class Layout:
    """One key order: the keys, their positions, and the layouts one key more or less (made once)."""

    __slots__ = ("keys", "index", "_plus", "_minus")

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys
        self.index = {k: i for i, k in enumerate(keys)}
        self._plus: dict[str, Layout] = {}
        self._minus: dict[str, Layout] = {}

    def plus(self, key: str) -> "Layout":
        nxt = self._plus.get(key)
        if nxt is None:
            nxt = self._plus[key] = Layout(self.keys + (key,))
        return nxt

    def minus(self, key: str) -> "Layout":
        nxt = self._minus.get(key)
        if nxt is None:
            nxt = self._minus[key] = Layout(tuple(k for k in self.keys if k != key))
        return nxt


class Layouts:
    """The layouts of one analysis, by key order (kept with the analysis, not the process: a live
    service analysing batch after batch does not collect every layout it ever saw)."""

    def __init__(self) -> None:
        self._by_keys: dict[tuple[str, ...], Layout] = {}

    def row(self, d: Mapping[str, Any]) -> "Row":
        """``d`` as a Row (same keys, order and values)."""
        keys = tuple(d)
        layout = self._by_keys.get(keys)
        if layout is None:
            layout = self._by_keys[keys] = Layout(keys)
        return Row(layout, list(d.values()))


class Row(MutableMapping):
    """A results row: a dict's behaviour (key order, get, setdefault, pop, ==, dict(row), {**row})
    over a shared :class:`Layout` and a list of values."""

    __slots__ = ("_layout", "_vals")

    def __init__(self, layout: Layout, values: list[Any]):
        self._layout, self._vals = layout, values

    def __getitem__(self, key: str) -> Any:
        return self._vals[self._layout.index[key]]

    def get(self, key: str, default: Any = None) -> Any:
        i = self._layout.index.get(key)
        return default if i is None else self._vals[i]

    def __contains__(self, key: object) -> bool:
        return key in self._layout.index

    def __setitem__(self, key: str, value: Any) -> None:
        i = self._layout.index.get(key)
        if i is None:
            self._layout = self._layout.plus(key)
            self._vals.append(value)
        else:
            self._vals[i] = value

    def __delitem__(self, key: str) -> None:
        i = self._layout.index[key]
        self._layout = self._layout.minus(key)
        del self._vals[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout.keys)

    def __len__(self) -> int:
        return len(self._vals)

    def keys(self):
        return self._layout.index.keys()  # a real dict view: set operations at C speed

    def items(self):
        return _Items(self)

    def values(self):
        return _Values(self)

    def copy(self) -> dict[str, Any]:
        return dict(zip(self._layout.keys, self._vals))

    def __copy__(self) -> "Row":
        return Row(self._layout, list(self._vals))  # its own values, as a dict's copy (the layout is shared)

    def __repr__(self) -> str:
        return repr(self.copy())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.copy() == (other.copy() if isinstance(other, Row) else dict(other.items()))

    __hash__ = None  # type: ignore[assignment]  (a mutable mapping, as a dict)


class _Items(ItemsView):
    """``row.items()``: (key, value) pairs in the row's order, without a lookup per key."""

    __slots__ = ()

    def __iter__(self):
        return zip(self._mapping._layout.keys, self._mapping._vals)


class _Values(ValuesView):
    """``row.values()``: the values in the row's order."""

    __slots__ = ()

    def __iter__(self):
        return iter(self._mapping._vals)


def columns_of(rows: list[Mapping[str, Any]], names: list[str]) -> list[list[Any]]:
    """``[[row.get(c) for row in rows] for c in names]``: each row's values picked at once, by positions
    found once per layout (a get per row and column was most of writing a long batch's tables)."""
    if not rows or not names:
        return [[] for _ in names]
    pick: dict[int, Any] = {}  # id(layout) → its values of names (the rows hold their layouts alive)
    picked = []
    for row in rows:
        if type(row) is Row:
            get = pick.get(id(row._layout))
            if get is None:
                get = pick[id(row._layout)] = _picker(row._layout, names)
            picked.append(get(row._vals))
        else:
            picked.append(tuple(map(row.get, names)))
    return [list(col) for col in zip(*picked)]


def _picker(layout: Layout, names: list[str]):
    """values list → the tuple of ``names``' values (None where the layout lacks one)."""
    at = [layout.index.get(c) for c in names]
    lacking = None in at
    if lacking:  # a lacking name reads a None put after the values
        at = [len(layout.keys) if i is None else i for i in at]
    get = itemgetter(*at) if len(at) > 1 else (lambda vals, i=at[0]: (vals[i],))
    return (lambda vals: get(vals + [None])) if lacking else get
