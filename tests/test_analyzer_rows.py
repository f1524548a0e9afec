"""Compact results rows (analyzer.rows.Row): they behave as the dicts they replace, and every file
written from them is the file written from plain dicts of the same keys, order and values."""
from __future__ import annotations

import copy
import dataclasses
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from analyzer import outputs, pipeline, report
from analyzer import rows as ROWS
from analyzer.rows import Layouts, Row, RowList, Table, columns_of, fill, iter_floats, keys_of
from analyzer.stream import build
from shared.batch import BatchDir
from shared.numbers import finite
from tests import synth as S


def _same(row: Row, d: dict) -> None:
    assert list(row) == list(d)
    assert list(row.items()) == list(d.items())
    assert list(row.values()) == list(d.values())
    assert list(row.keys()) == list(d.keys())
    assert len(row) == len(d) and len(row.items()) == len(d)
    assert row == d and d == row and not (row != d)
    assert dict(row) == d and list({**row}) == list(d) and row.copy() == d
    assert repr(row) == repr(d)
    assert row.keys() >= set(d) and set(row.keys()) == set(d)
    for k in ("a", "b", "zz", "missing"):
        assert (k in row) == (k in d)
        assert row.get(k) == d.get(k) and row.get(k, 7) == d.get(k, 7)


# the tables a row is tested on: the usual one (nothing spilled at these sizes), and tables of tiny
# parts that hold few of them, so that nearly every read and edit goes through the spill file
TABLES = {"held": lambda: Table(), "spilled": lambda: Table(part_rows=4, resident=3),
          "one-row parts": lambda: Table(part_rows=1, resident=1)}
tables = pytest.mark.parametrize("table", list(TABLES))


@tables
def test_row_follows_a_dict_through_random_edits(table):
    rnd = random.Random(5)
    layouts = Layouts(TABLES[table]())
    keys = ["a", "b", "c", "d", "e", "zz"]
    for trial in range(200):
        start = {k: rnd.random() for k in rnd.sample(keys, rnd.randint(0, 4))}
        d, row = dict(start), layouts.row(start)
        _same(row, d)
        for _ in range(12):
            k, v = rnd.choice(keys), rnd.choice([None, 1, 2.5, "x", True])
            op = rnd.randrange(5)
            if op == 0:
                d[k] = v
                row[k] = v
            elif op == 1 and k in d:
                del d[k]
                del row[k]
            elif op == 2:
                assert row.pop(k, "none") == d.pop(k, "none")
            elif op == 3:
                assert row.setdefault(k, v) == d.setdefault(k, v)
            else:
                extra = {rnd.choice(keys): v}
                d.update(extra)
                row.update(extra)
            _same(row, d)


@tables
def test_fill_is_setdefault_none_of_each_key(table):
    """rows.fill: every row given each missing key (None) in the keys' order, its own values kept,
    whatever layout the row had (one built so, one grown, one with a key deleted, a plain dict)."""
    layouts = Layouts(TABLES[table]())
    starts = [{"a": 1.5, "b": "x"}, {"b": "y"}, {}, {"c": 2, "a": None}, {"a": 2.5, "b": "z"}]
    rows = [layouts.row(d) for d in starts] + [{"b": 3}]
    rows[1]["z"] = 4.5
    del rows[4]["a"]  # its old value stays in the column: fill must give None, not 2.5
    dicts = [dict(r) for r in rows]
    keys = ("a", "c", "b", "d", "a")
    fill(rows, keys)
    for d in dicts:
        for k in keys:
            d.setdefault(k, None)
    assert [list(r.items()) for r in rows] == [list(d.items()) for d in dicts]
    for row, d in zip(rows[:-1], dicts):
        _same(row, d)
    assert keys_of(rows[:3]) == {"a", "b", "c", "d", "z"} and keys_of([layouts.row({"q": 1}), {"r": 2}]) == {"q", "r"}
    assert keys_of([]) == set()


def test_a_copied_row_is_its_own():
    row = Layouts().row({"a": 1})
    other = copy.copy(row)
    other["a"], other["b"] = 2, 3
    assert list(row.items()) == [("a", 1)] and list(other.items()) == [("a", 2), ("b", 3)]
    assert pickle.loads(pickle.dumps(row)) == row and copy.deepcopy(other) == other


def test_rows_built_alike_share_one_layout():
    layouts = Layouts()
    rows = [layouts.row({"a": i, "b": None}) for i in range(3)]
    for r in rows:
        r["c"] = 1.0  # the same edit moves every row to the same next layout
    assert len({id(r._layout) for r in rows}) == 1
    table = layouts.table
    assert table.columns["a"].parts[0].vals.typecode == "q" and table.columns["c"].parts[0].vals.typecode == "d"
    assert not table.columns["b"].parts  # a column still all None holds nothing


@tables
def test_values_read_back_as_stored(table):
    """Column-wise storage keeps every value's type and bits: ints and floats apart, -0.0, NaN's
    payload, bools, integers beyond int64, numpy scalars; a column that meets a second type keeps both."""
    nan = struct.unpack("<d", bytes.fromhex("0100000000f8ff7f"))[0]
    values = [1, 2.5, -0.0, nan, float("inf"), True, None, 1 << 70, np.float64(0.1), "x", [1], 3]
    layouts = Layouts(TABLES[table]())
    rows = [layouts.row({"v": v, "f": float(i), "i": i}) for i, v in enumerate(values)]
    rows[3]["f"] = None
    rows[5]["late"] = 7  # rows 0-4 never had the key: a key, not a None
    for i, (row, v) in enumerate(zip(rows, values)):
        got = row["v"]
        assert type(got) is type(v) and (got is v or struct.pack("<d", got) == struct.pack("<d", v) if
                                          type(v) is float else got == v)
        assert row["f"] == (None if i == 3 else float(i)) and type(row["i"]) is int
        assert ("late" in row) == (i == 5)
    if table == "held":
        assert layouts.table.columns["f"].parts[0].vals.typecode == "d" and type(layouts.table.columns["v"].parts[0].vals) is list


def test_a_long_table_holds_few_parts_and_reads_back_every_edit():
    """Rows beyond what the table holds go to its spill file and come back as they were, edits of
    old rows included (a part read back, changed, spilled again; one that becomes a list and grows)."""
    table = Table(part_rows=64, resident=6)
    layouts = Layouts(table)
    rnd = random.Random(11)
    dicts = [{"f": rnd.random(), "i": k, "s": f"r{k}", "n": None if k % 3 else k * 0.5} for k in range(2000)]
    rows = [layouts.row(d) for d in dicts]
    for k in rnd.sample(range(2000), 300):  # old rows edited after their parts were spilled
        v = rnd.choice([None, 7, 1.25, "text " * rnd.randint(1, 30), True])
        rows[k]["f"] = dicts[k]["f"] = v
        rows[k]["late"] = dicts[k]["late"] = k
    for k in range(0, 2000, 7):
        del rows[k]["s"]
        del dicts[k]["s"]
    held = [p for col in table.columns.values() for p in col.parts if p.vals is not None]
    assert len(held) <= 6 and table.spilled > 100 and table._file is not None
    assert [dict(r) for r in rows] == dicts and [list(r) for r in rows] == [list(d) for d in dicts]
    names = ["f", "i", "s", "n", "late", "never"]
    assert columns_of(rows, names) == [[d.get(c) for d in dicts] for c in names]
    some = rows[1500::-3] + rows[::250]
    assert columns_of(some, names) == [[r.get(c) for r in some] for c in names]
    assert [type(r["f"]) for r in rows] == [type(d["f"]) for d in dicts]


def test_a_table_holds_its_bytes_but_a_part_of_each_column():
    """The parts held are counted by their bytes (a part of text ~10x one of numbers): the oldest go to
    the spill file beyond the table's bytes (or parts), but one part a column stays, so a pass in row
    order over every column reads each part back once, not once a row."""
    table = Table(part_rows=64, resident_bytes=60_000)
    layouts = Layouts(table)
    dicts = [{"f": k * 0.5, "s": f"text {k} " * 10, "status": "ok" if k % 5 else "failed"} for k in range(3000)]
    rows = [layouts.row(d) for d in dicts]
    held = [p for col in table.columns.values() for p in col.parts if p.vals is not None]
    assert table.held_bytes == sum(p.cost for p in held) <= 60_000 and table.spilled > 50
    number, text, status = (table.columns[k].part(1) for k in ("f", "s", "status"))
    assert number.measure() == 64 * 9 and text.measure() > 10 * number.measure()
    assert status.measure() < 2 * number.measure()  # ("ok" and "failed": one object each)
    table.budget, table.resident = 1, 1  # less than any part, fewer parts than columns: still one a column
    before = table.loaded
    assert [dict(r) for r in rows] == dicts
    assert table.loaded - before == sum(len(col.parts) for col in table.columns.values())
    assert len([p for col in table.columns.values() for p in col.parts if p.vals is not None]) == 3


def test_a_table_needs_parts_of_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        Table(part_rows=100)


def test_an_analysis_whose_rows_spill_gives_the_same_files(tmp_path, monkeypatch):
    """The pipeline's rows on a table that holds three parts of two rows (every pass reads back what it
    needs), report.md's tables made two rows at a time: the same results and files as the usual way."""
    opts = pipeline.Options(quality=False, idle_baseline=True)
    want = pipeline.analyze(_batch(), opts)
    outputs.write_all(want, BatchDir(tmp_path / "held"), make_plots=False, lang="en")
    monkeypatch.setattr(ROWS, "PART_ROWS", 2)
    monkeypatch.setattr(ROWS, "RESIDENT_PARTS", 3)
    monkeypatch.setattr(report, "MD_BLOCK", 2)
    got = pipeline.analyze(_batch(), opts)
    outputs.write_all(got, BatchDir(tmp_path / "spilled"), make_plots=False, lang="en")
    assert got.results[0]._layout.table.spilled > 0
    assert repr([dict(r) for r in got.results + got.warmups]) == repr([dict(r) for r in want.results + want.warmups])
    a, b = _files(tmp_path / "held"), _files(tmp_path / "spilled")
    assert len(a) > 10 and list(a) == list(b) and all(a[k] == b[k] for k in a)


def _batch():
    gpus = [S.Gpu(S.constant(100.0)), S.Gpu(S.square(200.0, 80.0, 2.0))]
    reqs = [S.Req(1.0, 4.0, run=0, chunk_s=[0.2, 0.3, 0.5, 0.9]), S.Req(5.0, 9.0, run=1, ok=False),
            S.Req(10.0, 12.0, run=2, warmup=True), S.Req(13.0, 20.0, run=3, chunk_s=[0.5, 0.6]),
            S.Req(21.0, 25.0, run=4, end=False), S.Req(24.0, 28.0, run=5, task="code", model="m2")]
    spec = S.Spec(duration_s=30.0, gpus=gpus, rapl_w=40.0, server_cores=2.0, requests=reqs, planned=6)
    return build(S.messages(spec), 120.0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_files_from_rows_are_the_files_from_plain_dicts(tmp_path):
    a = pipeline.analyze(_batch(), pipeline.Options(quality=False, idle_baseline=True))
    assert a.results and a.warmups and all(isinstance(r, Row) for r in a.results + a.warmups)
    assert {r["status"] for r in a.results} == {"ok", "failed", "incomplete"}
    plain = dataclasses.replace(a, results=[dict(r) for r in a.results], warmups=[dict(r) for r in a.warmups])
    assert all(type(r) is dict for r in plain.results)
    outputs.write_all(a, BatchDir(tmp_path / "rows"), make_plots=False, lang="both")
    outputs.write_all(plain, BatchDir(tmp_path / "dicts"), make_plots=False, lang="both")
    got, want = _files(tmp_path / "rows"), _files(tmp_path / "dicts")
    assert len(want) > 10 and list(got) == list(want)
    for name in want:
        assert got[name] == want[name], name
    # each request JSON's summary: the row's columns in the row's order, as from a dict
    for row in a.results:
        summary = a.request_json[row["rid"]]["system_metrics_summary"]
        assert list(summary.items()) == [(k, v) for k, v in dict(row).items() if pipeline._in_summary(k)]


@tables
def test_columns_of_reads_what_get_reads(table):
    """A column at a time, over rows of several layouts (one grown by a key), plain dicts and names
    some rows lack: each value is the row's get()."""
    layouts = Layouts(TABLES[table]())
    grown = layouts.row({"a": 1, "b": 2.5})
    grown["z"] = "zz"
    rows = [layouts.row({"a": 1, "b": 2.5}), layouts.row({"b": None, "c": "x"}), {"a": 5, "c": [1]}, grown,
            layouts.row({"a": 7, "b": 8.5})]
    for names in (["a"], ["b", "a"], ["c", "a", "z"], ["missing"], [], ["z", "z"]):
        assert columns_of(rows, names) == [[r.get(c) for r in rows] for c in names], names
    assert columns_of([], ["a", "b"]) == [[], []]
    alike = [layouts.row({"a": k, "b": k * 0.5}) for k in range(10)]  # one layout: no list of places made
    for some in (alike, alike[::-2], alike[3:4]):
        assert columns_of(some, ["b", "z", "a"]) == [[r.get(c) for r in some] for c in ("b", "z", "a")]


@tables
def test_columns_of_is_a_get_per_row_and_column(table):
    rnd = random.Random(7)
    layouts = Layouts(TABLES[table]())
    rows = [layouts.row({k: rnd.choice([None, 1, 2.5, "x", True]) for k in rnd.sample("abcd", rnd.randint(0, 4))})
            for _ in range(60)]
    for r in rows[::3]:
        r["late"] = 1.5  # a column set on some rows only, after the others were made
    for k, r in enumerate(rows):
        r["f"] = None if k % 4 == 0 else k * 0.5  # a column of floats, some None
    names = ["a", "b", "c", "d", "late", "never", "f"]
    want = [[r.get(c) for r in rows] for c in names]
    assert columns_of(rows, names) == want
    picked = rows[::-2] + [{"a": 9}]  # some rows, out of order, and a plain dict
    assert columns_of(picked, names) == [[r.get(c) for r in picked] for c in names]
    rows.append(layouts.row({"b": 3.5}))  # a row beyond where most columns end
    for some in (rows[::-3], rows[:60:3], rows[10:30], rows[40:], rows[5:6], rows[-1:], [rows[7], rows[2]]):
        got = columns_of(some, names)  # runs of rows, other rows, one row
        assert got == [[r.get(c) for r in some] for c in names]
        assert [[type(v) for v in col] for col in got] == [[type(r.get(c)) for r in some] for c in names]
    assert columns_of([], names) == [[] for _ in names] and columns_of(rows, []) == []


def _as_finite(values) -> list:
    """finite() of each value, NaN for None, as bits (NaN compares unequal; -0.0 must stay -0.0)."""
    return [float("nan") if (x := finite(v)) is None else x for v in values]


def _bits(values) -> list:
    return [np.float64(v).tobytes() for v in values]


@tables
def test_iter_floats_is_finite_of_each_value(table):
    """Each column as doubles: finite() of every value (floats, ints, a big int, numeric text, text, bools,
    inf and NaN, None, a list), NaN where it gives None, for runs of rows, other rows, a RowList and its
    groups, rows that lack the key and plain dicts; the parts of numbers read as arrays, the others by value."""
    rnd = random.Random(11)
    layouts = Layouts(TABLES[table]())
    odd = [None, 3, 2.5, -0.0, "4.5", "x", " ", True, float("inf"), float("nan"), 2 ** 60 + 1, [1]]
    rows = [layouts.row({k: rnd.choice(odd) for k in rnd.sample("abc", rnd.randint(0, 3))}) for _ in range(40)]
    for k, r in enumerate(rows):
        r["f"] = None if k % 5 == 0 else (k - 20) * 0.25 if k % 7 else float("-inf")  # a part of floats
        r["i"] = None if k % 6 == 0 else (k - 9) * 10 ** 15  # a part of ints (beyond 2**53 some)
    for r in rows[::4]:
        r["late"] = 1.5  # set on some rows only, after the others were made
    names = ["a", "b", "c", "f", "i", "late", "never"]
    table_of = rows[0]._t
    listed = RowList(table_of, np.array([r._i for r in rows], dtype=np.int64))
    # (and rows from the first to the last of a run, but not in order: not read as the run)
    some_sets = (rows, rows[::-3], rows[10:30], rows[5:6], [rows[7], rows[2]], listed, listed.take(np.arange(39, -1, -2)),
                 rows[:3] + [{"a": 1.25, "f": "2"}], listed.take([10, 12, 11, 13]), [rows[10], rows[10], rows[11]])
    for some in some_sets:
        got = list(iter_floats(some, names))
        assert [g.dtype for g in got] == [np.float64] * len(names)
        assert [_bits(g) for g in got] == [_bits(_as_finite(r.get(c) for r in some)) for c in names]
    assert [g.size for g in iter_floats([], names)] == [0] * len(names)


def test_rows_are_the_same_whatever_the_block_of_windows_converted(monkeypatch):
    """The per-window figures become row values a block of windows at a time (pipeline._Cells): blocks
    of two, cut between every other request, give the rows of one block."""
    opts = pipeline.Options(quality=False, idle_baseline=True)
    want = pipeline.analyze(_batch(), opts)
    monkeypatch.setattr(pipeline._Cells, "BLOCK", 2)
    got = pipeline.analyze(_batch(), opts)
    assert len(want.results) > 4 and any(r.get("gpu_energy_j") is not None for r in want.results)
    assert repr([dict(r) for r in got.results + got.warmups]) == repr([dict(r) for r in want.results + want.warmups])


@tables
def test_a_row_list_makes_rows_that_see_every_edit(table):
    """RowList: rows by number, a Row made when read. The table notes each row's layout, so a Row made
    before another Row of the same row added or removed keys sees it; take, slices, ==, + and pickling
    behave as the list of rows it stands for, and columns_of / keys_of / fill read it as that list."""
    rnd = random.Random(3)
    layouts = Layouts(TABLES[table]())
    dicts = [{k: rnd.choice([None, 1, 2.5, "x"]) for k in rnd.sample("abc", rnd.randint(1, 3))} for _ in range(30)]
    made = [layouts.row(d) for d in dicts]
    rows = ROWS.RowList(layouts.table, [r._i for r in made])
    assert len(rows) == 30 and rows == made and made == list(rows) and rows == dicts
    early = rows[4]
    for k, r in enumerate(rows):  # edits through Rows made by the list, one at a time
        if k % 3 == 0:
            r["late"] = k * 1.5
            dicts[k]["late"] = k * 1.5
        if k % 5 == 0:
            key = next(iter(r))
            del r[key]
            del dicts[k][key]
    assert early == dicts[4] and rows[4] == dicts[4] and made[3] == dicts[3]  # (Rows made before the edits)
    _same(rows[9], dicts[9])
    assert rows[-1] == dicts[-1] and rows[::7] == dicts[::7] and isinstance(rows[::7], ROWS.RowList)
    some = rows.take([12, 3, 3, 27])
    assert some == [dicts[12], dicts[3], dicts[3], dicts[27]] and len(some) == 4
    assert rows[:2] + [{"z": 1}] == dicts[:2] + [{"z": 1}] and [{"z": 1}] + rows[:1] == [{"z": 1}, dicts[0]]
    assert pickle.loads(pickle.dumps(rows)) == dicts
    names = ["a", "late", "b", "never", "c"]
    for part in (rows, rows[::-2], some, rows[5:6], rows[:0]):
        want = [[r.get(c) for r in part] for c in names]
        assert columns_of(part, names) == want
        assert keys_of(part) == set().union(*(set(r) for r in part))
    fill(rows, ["zz", "a"])
    for d in dicts:
        d.setdefault("zz", None)
        d.setdefault("a", None)
    assert rows == dicts and [list(r) for r in rows] == [list(d) for d in dicts]


@tables
@pytest.mark.parametrize("block", [7, 1 << 15])  # key columns read in blocks of rows: one, or many
def test_group_by_a_row_list_is_group_by_its_rows(table, block, monkeypatch):
    monkeypatch.setattr(ROWS, "GROUP_BLOCK", block)
    rnd = random.Random(5)
    layouts = Layouts(TABLES[table]())
    dicts = [{"m": rnd.choice(["x", "y", None]), "ok": rnd.choice([True, False, None]), "v": k} for k in range(50)]
    rows = ROWS.RowList(layouts.table, [layouts.row(d)._i for d in dicts])
    key = (lambda m, ok: None if m is None else (m, bool(ok)))
    got, want = ROWS.group_by(rows, ["m", "ok"], key), ROWS.group_by(dicts, ["m", "ok"], key)
    assert list(got) == list(want) and all(got[k] == want[k] for k in want)  # groups in first-seen order
    assert all(isinstance(g, ROWS.RowList) for g in got.values()) and all(type(g) is list for g in want.values())
    assert sum(map(len, got.values())) == sum(d["m"] is not None for d in dicts)
    assert ROWS.truthy(rows, "ok") == [d for d in dicts if d["ok"]] == ROWS.truthy(dicts, "ok")
    assert ROWS.truthy(rows.take([k for k, d in enumerate(dicts) if not d["ok"]]), "ok") == []
    every = ROWS.group_by(rows, ["v"], lambda v: "all")  # one group of every row: the rows, not a copy of them
    assert list(every) == ["all"] and every["all"] is rows


@pytest.mark.parametrize("block", [5, 1 << 14])
def test_stats_of_a_row_list_read_in_blocks_are_those_of_its_dicts(block, monkeypatch):
    """stats.csv's and stats_per_case.csv's rows from a RowList, its cases and bases read a block of rows
    at a time (cases as codes, run-to-run spread found by a sort of them), are those of the plain dicts."""
    from analyzer import tables as T

    monkeypatch.setattr(T, "_BLOCK", block)
    rnd = random.Random(11)
    dicts = []
    for k in range(120):
        case = rnd.randrange(9)
        dicts.append({"rid": f"r{k}", "model": rnd.choice(["a", "b"]), "task": "qa", "load": "short",
                      "ok": k % 13 != 0, "status": "ok" if k % 13 else "failed", "case": case,
                      "case_hash": None if case % 3 == 0 else f"h{case}",
                      "quality_basis": rnd.choice(["bartscore", "chrf", None]),
                      "latency_s": rnd.choice([None, 0.5 + rnd.random(), 2.0]), "quality_score": rnd.random(),
                      "total_energy_j": 10.0 * rnd.random()})
    layouts = Layouts(Table(part_rows=8, resident=3))
    rows = RowList(layouts.table, [layouts.row(d)._i for d in dicts])
    want = T.stats(dicts, False)
    assert {r["n_repeated_cases"] for r in want if r["metric"] == "latency_s"} - {0, None}
    assert repr(T.stats(rows, False)) == repr(want)
    assert repr(T.per_case(rows, False)) == repr(T.per_case(dicts, False))
