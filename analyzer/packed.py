"""Telemetry read straight from its msgpack bytes: typed columns with no Python object per message.

A day of 8 GPUs at 100 Hz is ~70 M ``[tel.gpu, {...}]`` objects, each a flat map of scalars that a
daemon sends in a few shapes; decoding each into a dict cost more than the rest of a first run. A
``Finder`` reads them from a read of the file with numpy, all at once:

- candidates: the bytes ``0x92`` + the topic's msgpack string (``[topic, payload]``);
- groups it has met, matched: a message of a group is equal to the group's first in every byte but
  its numbers' (keys, type bytes, strings, nil, booleans), so its values lie at the group's layout's
  offsets; the bytes compared are the message's 64-bit words, masked;
- the rest parsed key by key in lockstep (``_parse``: a correct msgpack parser for short-string keys
  and scalar values; a map, list, binary or ext value, or a message cut by the end of the read, is not
  read), split into layouts (the same keys' lengths, value types and widths) and groups (the same
  fixed bytes). A new group's first message is decoded by msgpack and checked by the contract; the
  others differ from it only in numbers, so they pass the same checks but those that depend on a
  number, checked per message: the schema version, declared ints within 64 bits.

A candidate not read (a nested value, a group the contract refuses) is left to msgpack, as are bytes
that only look like a message inside a longer one: ``shared.recording.RecordingReader.scan`` takes a
found message only where the one before it ends. ``Found.numbers`` reads a key's values, a gather a
column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack
import numpy as np

# Value classes by first byte. Fixints hold their value in that byte; the other classes after it
# (strings: the text; nil and booleans: nothing, the first byte is the value).
REJECT, POSFIX, NEGFIX, NIL, BOOL, F32, F64, U8, U16, U32, U64, I8, I16, I32, I64, STR = range(16)
_NUMBER = {F32: ">f4", F64: ">f8", U8: "u1", U16: ">u2", U32: ">u4", U64: ">u8",
           I8: "i1", I16: ">i2", I32: ">i4", I64: ">i8"}          # the big-endian number after the first byte
NUMBERS = frozenset(_NUMBER) | {POSFIX, NEGFIX}
_STR8 = 0xD9


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Class and width (bytes of the value, its first byte included; str8: without its text) by first byte."""
    cls, width = np.zeros(256, dtype=np.uint8), np.ones(256, dtype=np.int64)
    other = {0xC0: (NIL, 1), 0xC2: (BOOL, 1), 0xC3: (BOOL, 1), 0xCA: (F32, 5), 0xCB: (F64, 9), 0xCC: (U8, 2),
             0xCD: (U16, 3), 0xCE: (U32, 5), 0xCF: (U64, 9), 0xD0: (I8, 2), 0xD1: (I16, 3), 0xD2: (I32, 5),
             0xD3: (I64, 9), _STR8: (STR, 2)}
    for b in range(256):
        if b <= 0x7F:
            cls[b] = POSFIX
        elif b >= 0xE0:
            cls[b] = NEGFIX
        elif 0xA0 <= b <= 0xBF:
            cls[b], width[b] = STR, 1 + (b & 0x1F)
        else:
            cls[b], width[b] = other.get(b, (REJECT, 1))
    return cls, width


_CLASS, _WIDTH = _tables()
_LONGEST = 4096   # bytes of the longest message read here (a GPU's tick is ~300; longer ones: msgpack's)
_MOST_KEYS = 255
# odd multipliers of a row hash: a row is a message's words (at most _LONGEST / 8) or its layout (1 + 2 a key)
_MIX = np.random.default_rng(17).integers(1, 1 << 62, size=1024, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


@dataclass
class Layout:
    """Where each value lies in the messages with the same keys, value types and widths;
    and the groups of such messages met so far, each by its fixed bytes (``words``: a row a group,
    found by the row's hash). ``slots``: key → (its value's offset in the message, class)."""

    length: int
    slots: dict[str, tuple[int, int]]
    mask: np.ndarray            # per 64-bit word of the message, the bytes that are not numbers
    checks: list[tuple[int, int, int]]  # (offset, lo, hi - lo) a byte must lie in: fixints, int64 range
    version: int                # offset of the schema version (a positive fixint)
    ids: list[int] = field(default_factory=list)        # its groups' ids, in ``words`` order
    words: np.ndarray | None = None
    hashes: np.ndarray | None = None    # sorted, and ``order``: the row of each
    order: np.ndarray | None = None
    matched: int = 0            # messages of the last read (layouts are tried most used first)

    def add(self, gid: int, row: np.ndarray) -> None:
        self.ids.append(gid)
        self.words = row[None, :] if self.words is None else np.vstack([self.words, row])
        h = _hash(self.words)
        self.order = np.argsort(h)
        self.hashes = h[self.order]


@dataclass
class Group:
    """Messages equal but for their numbers: the first one decoded (the strings, booleans and nil of
    all) and their layout."""

    payload: dict[str, Any]
    layout: int


@dataclass
class Found:
    """The accepted messages of a read ``u8``: first and end byte (sorted by first byte), group."""

    u8: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    group: np.ndarray
    groups: list[Group]
    layouts: list[Layout]

    def numbers(self, starts: np.ndarray, key: str, layout: int) -> np.ndarray:
        """The number ``key`` holds in the messages beginning at ``starts`` (all of ``layout``, where
        ``key``'s class is one of NUMBERS): int64, uint64 or float64 as sent."""
        off, cls = self.layouts[layout].slots[key]
        if cls == POSFIX:
            return self.u8[starts + off].astype(np.int64)
        if cls == NEGFIX:
            return self.u8[starts + off].astype(np.int64) - 256
        return _view(self.u8, _NUMBER[cls])[starts + (off + 1)]


def _view(u8: np.ndarray, dtype) -> np.ndarray:
    """The value of type ``dtype`` beginning at every byte of ``u8`` (a strided view: no copy)."""
    dt = np.dtype(dtype)
    return np.ndarray((max(u8.size - dt.itemsize + 1, 0),), dtype=dt, buffer=u8, strides=(1,))


def _hash(rows: np.ndarray) -> np.ndarray:
    return (rows * _MIX[: rows.shape[1]]).sum(axis=1)  # (wraps: a hash)


class Finder:
    """``finder(buf)`` → the messages of ``topic`` in ``buf`` that surely pass the contract
    (``check(payload)``), read without msgpack. ``int64_keys``: the keys whose integers must fit in 64
    bits; ``versions``: the schema versions read (the key ``v``). The layouts and groups met are kept
    from one read to the next (at most ``max_groups``: when strings change with every message, msgpack
    reads them rather than a list without end)."""

    def __init__(self, topic: str, check: Callable[[dict], bool], int64_keys: tuple[str, ...],
                 versions: tuple[int, ...], max_groups: int = 1024):
        self.topic = topic
        self.check = check
        self.int64_keys = frozenset(int64_keys)
        self.versions = versions
        self.max_groups = max_groups
        self.layouts: list[Layout] = []
        self.groups: list[Group] = []
        self._layout_of: dict[tuple, int] = {}
        self._prefix = np.frombuffer(b"\x92" + msgpack.packb(topic), dtype=np.uint8)

    def __call__(self, buf: bytes) -> Found:
        u8 = np.frombuffer(buf, dtype=np.uint8)
        if len(self.groups) >= self.max_groups:
            self.layouts, self.groups, self._layout_of = [], [], {}
        starts = self._candidates(u8)
        group = np.full(starts.size, -1, dtype=np.int32)
        for lay in sorted(self.layouts, key=lambda x: -x.matched):
            open_ = np.flatnonzero((group < 0) & (starts <= u8.size - lay.length))
            hit, gid = self._match(u8, starts[open_], lay) if open_.size else (open_, open_)
            group[open_[hit]] = gid
            lay.matched = int(hit.size)
        rest = np.flatnonzero(group < 0)
        if rest.size:
            group[rest] = self._learn(u8, starts[rest])
        kept = np.flatnonzero(group >= 0)
        starts, group = starts[kept], group[kept]
        lengths = np.array([self.layouts[g.layout].length for g in self.groups], dtype=np.int64)
        return Found(u8, starts, starts + lengths[group] if group.size else starts, group, self.groups,
                     self.layouts)

    def _candidates(self, u8: np.ndarray) -> np.ndarray:
        """The first byte of every ``[topic, map]`` look-alike, in byte order."""
        prefix = self._prefix
        at = np.flatnonzero(u8[:max(u8.size - prefix.size, 0)] == prefix[0])
        for j in range(1, prefix.size):  # (few survive the second byte)
            at = at[u8[at + j] == prefix[j]]
        return at

    def _match(self, u8: np.ndarray, at: np.ndarray, lay: Layout) -> tuple[np.ndarray, np.ndarray]:
        """(indices into ``at`` of the messages of one of lay's groups, their group ids)."""
        words = _words(u8, at, lay.mask)
        h = _hash(words)
        pos = np.minimum(np.searchsorted(lay.hashes, h), lay.hashes.size - 1)
        row = lay.order[pos]
        ok = (lay.hashes[pos] == h) & (words == lay.words[row]).all(axis=1) & self._members(u8, at, lay)
        hit = np.flatnonzero(ok)
        return hit, np.asarray(lay.ids, dtype=np.int32)[row[hit]]

    def _members(self, u8: np.ndarray, at: np.ndarray, lay: Layout) -> np.ndarray:
        """Which messages at ``at``, equal to a group of ``lay`` in their fixed bytes, pass the checks that
        depend on a number: the schema version, 64-bit declared ints, fixints' own byte."""
        ok = np.isin(u8[at + lay.version], self.versions)
        for off, lo, span in lay.checks:
            ok &= (u8[at + off] - np.uint8(lo)) <= span  # (uint8: wraps below lo)
        return ok

    def _learn(self, u8: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The group id of each message at ``starts`` (-1: not read), parsed key by key; the new
        layouts and groups kept."""
        out = np.full(starts.size, -1, dtype=np.int32)
        count, first = _map_headers(u8, starts + self._prefix.size)
        for n in np.unique(count[(count > 0) & (count <= _MOST_KEYS)]).tolist():
            sel = np.flatnonzero(count == n)
            ends, cls, voff, ok = _parse(u8, first[sel], n)
            sel, ends, cls, voff = sel[ok], ends[ok], cls[ok], voff[ok] - starts[sel[ok], None]
            length = ends - starts[sel]
            ok = (length >= 8) & (length <= _LONGEST)  # (no telemetry message is shorter: its envelope is longer)
            sel, cls, voff, length = sel[ok], cls[ok], voff[ok], length[ok]
            geometry = np.column_stack([length, cls, voff]).astype(np.uint64)
            for rows in _same_rows(geometry):
                r = rows[0]
                at = starts[sel[rows]]
                mask = _mask(int(length[r]), cls[r], voff[r])
                words = _words(u8, at, mask)
                for g in _same_rows(words):
                    lay = self._group(u8, at[g[0]], int(length[r]), cls[r], voff[r], mask, words[g[0]])
                    if lay is not None:
                        ok = self._members(u8, at[g], lay)
                        out[sel[rows[g[ok]]]] = lay.ids[-1]
        return out

    def _group(self, u8: np.ndarray, at: int, length: int, cls: np.ndarray, voff: np.ndarray, mask: np.ndarray,
               row: np.ndarray) -> Layout | None:
        """The layout of the new group of the message at ``at`` (``mask``: its layout's, ``row``: its
        fixed words), the group last in its ``ids``; None when msgpack does not read it as ``[topic,
        map]`` with as many keys, or the contract refuses it."""
        try:
            obj = msgpack.unpackb(u8[at:at + length].tobytes(), raw=False, strict_map_key=False)
        except Exception:  # (msgpack raises several unrelated types)
            return None
        if not (type(obj) is list and len(obj) == 2 and obj[0] == self.topic and type(obj[1]) is dict
                and len(obj[1]) == cls.size):  # (fewer keys than read: a key sent twice)
            return None
        payload = obj[1]
        slots = dict(zip(payload, zip(voff.tolist(), cls.tolist())))
        if slots.get("v", (0, REJECT))[1] != POSFIX or not self.check(payload):
            return None
        key = (length, tuple(slots.items()))
        index = self._layout_of.get(key)
        if index is None:
            ints = self.int64_keys
            checks = [(off, 0, 0x7F) for off, c in slots.values() if c == POSFIX]
            checks += [(off, 0xE0, 0x1F) for off, c in slots.values() if c == NEGFIX]
            checks += [(off + 1, 0, 0x7F) for k, (off, c) in slots.items() if c == U64 and k in ints]
            index = self._layout_of[key] = len(self.layouts)
            self.layouts.append(Layout(length, slots, mask, checks, slots["v"][0]))
        lay = self.layouts[index]
        lay.add(len(self.groups), row)
        self.groups.append(Group(payload, index))
        return lay


def _mask(length: int, cls: np.ndarray, voff: np.ndarray) -> np.ndarray:
    """Per 64-bit word of a message of this layout (its length rounded up to 8 bytes), the bytes that
    are neither a number nor past its end."""
    fixed = np.zeros(-(-length // 8) * 8, dtype=np.uint8)
    fixed[:length] = 0xFF
    for c, v in zip(cls.tolist(), voff.tolist()):
        if c in (POSFIX, NEGFIX):
            fixed[v] = 0
        elif c in _NUMBER:
            fixed[v + 1: v + 1 + np.dtype(_NUMBER[c]).itemsize] = 0
    return fixed.view("<u8")


def _words(u8: np.ndarray, at: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The messages at ``at`` as rows of 64-bit words, masked (``_mask``): a copy of each message's
    bytes at once (a record of that many bytes begins at every byte of the read), those too near the
    read's end for a whole record from a copy of that end padded with zeros."""
    size = mask.size * 8
    whole = at <= u8.size - size
    if whole.all():
        out = _view(u8, (np.void, size))[at].view("<u8").reshape(at.size, mask.size)
    else:
        out = np.empty((at.size, mask.size), dtype=np.uint64)
        out[whole] = _view(u8, (np.void, size))[at[whole]].view("<u8").reshape(-1, mask.size)
        lo = int(at[~whole].min())
        tail = np.zeros(u8.size - lo + size, dtype=np.uint8)
        tail[:u8.size - lo] = u8[lo:]
        out[~whole] = _view(tail, (np.void, size))[at[~whole] - lo].view("<u8").reshape(-1, mask.size)
    out &= mask
    return out


def _map_headers(u8: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(number of keys, first byte of the first key) of the maps at ``at``; 0 keys: not a map (or cut)."""
    last = u8.size - 1
    head = u8[np.minimum(at, last)]
    count = np.where((head >= 0x80) & (head <= 0x8F) & (at <= last), head & 0x0F, 0).astype(np.int64)
    big = (head == 0xDE) & (at + 2 <= last)
    if big.any():  # map16: more than 15 keys (a GPU's tick with its envelope)
        count[big] = u8[at[big] + 1].astype(np.int64) << 8 | u8[at[big] + 2]
    return count, at + np.where(big, 3, 1)


def _parse(u8: np.ndarray, first: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maps of ``n`` keys beginning at ``first``, in lockstep: (end, value class and value byte per
    key, ok). Not ok: a key that is not a short string, a value of no accepted class, past the read."""
    last = u8.size - 1
    cur = first.copy()
    bad = np.zeros(first.size, dtype=bool)
    cls = np.empty((first.size, n), dtype=np.uint8)
    voff = np.empty((first.size, n), dtype=np.int64)
    for k in range(n):
        kb = u8[np.minimum(cur, last)]
        bad |= (kb < 0xA0) | (kb > 0xBF)
        cur += 1 + (kb & 0x1F)
        vb = u8[np.minimum(cur, last)]
        width = _WIDTH[vb]
        str8 = vb == _STR8
        if str8.any():
            width = width + np.where(str8, u8[np.minimum(cur + 1, last)], 0)
        cls[:, k] = _CLASS[vb]
        voff[:, k] = cur
        cur += width
    bad |= (cls == REJECT).any(axis=1) | (cur > u8.size)
    return cur, cls, voff, ~bad


def _same_rows(rows: np.ndarray) -> list[np.ndarray]:
    """Indices of equal rows of a uint64 matrix, a group per distinct row: by a hash of each row, then
    checked against the group's first (a row unlike it, a hash collision, is in no group)."""
    if not rows.size:
        return []
    h = _hash(rows)
    keys, inv = np.unique(h, return_inverse=True)
    groups = ([np.arange(h.size)] if keys.size == 1 else
              np.split(np.argsort(inv, kind="stable"), np.cumsum(np.bincount(inv))[:-1]))
    return [g[(rows[g] == rows[g[0]]).all(axis=1)] for g in groups]
