"""analyzer.mapped: the arrays that grow with the requests, kept in temporary files mapped into memory.

Their values are the arrays' own whatever the OS does with the pages; memory.give_back hands the pages
back; and an analysis with every such array mapped (the size threshold at zero, the spools spilling
every three values) writes the very files of one with none mapped."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from analyzer import mapped, memory, pipeline, stream
from tests.test_analyzer_columnar import STORED

LINUX = pytest.mark.skipif(not mapped._CAN, reason="a mapping's pages are dropped with madvise (Linux)")
ROOT = Path(__file__).resolve().parents[1]


def _rss_file_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


@LINUX
def test_a_large_array_lives_in_a_file_and_give_back_drops_its_pages():
    a = np.arange(2 << 20, dtype=np.int64)  # 16 MiB
    m = mapped.kept(a)
    assert mapped.is_mapped(m) and mapped.is_mapped(m[5:9]) and not mapped.is_mapped(a)
    assert np.array_equal(m, a)
    m[7] = -1  # written pages are the file's: dropped, then read back as written
    before = _rss_file_mib()
    memory.give_back()
    assert _rss_file_mib() < before - 12, "the mapping's pages were not handed back"
    assert m[7] == -1 and int(m.sum()) == int(a.sum()) - 8


@LINUX
def test_an_array_made_in_a_file_is_not_left_resident_once_written():
    """kept() and full() hand the pages they wrote back at once: a pass that makes a run's array does not
    leave it resident beside the next pass's (the values are still read back)."""
    a = np.arange(2 << 20, dtype=np.int64)  # 16 MiB
    memory.give_back()
    before = _rss_file_mib()
    m, f = mapped.kept(a), mapped.full(2 << 20, 7, np.int64)
    assert _rss_file_mib() < before + 4, "the written pages stayed resident"
    assert np.array_equal(m, a) and int(f.sum()) == 7 * (2 << 20)
    assert mapped.written(a) is a  # (an array on the heap: as it was)


@pytest.mark.parametrize("size, overlap", [(1, 0), (3, 1), (4096, 1), (1 << 20, 0)])
def test_a_pass_in_blocks_sees_every_value_once_and_leaves_no_pages(size, overlap):
    a = mapped.kept(np.arange(3 << 19, dtype=np.int64))  # 12 MiB
    blocks = list(mapped.in_blocks(a[:10], size, overlap))
    assert [b.tolist() for b in blocks] == [list(range(lo, min(lo + size + overlap, 10))) for lo in range(0, 10, size)]
    if size < 4096:
        return
    want = int(a.sum())
    memory.give_back()
    before = _rss_file_mib()
    assert sum(int(b[:size].sum()) for b in mapped.in_blocks(a, size, overlap)) == want
    if mapped._CAN:
        assert _rss_file_mib() < before + 9, "the pass left the array's pages resident"


@pytest.mark.parametrize("shape", [(3 << 19,), (3 << 17, 4)])
def test_take_gathers_the_values_a_block_at_a_time_and_leaves_no_pages(shape):
    """take(a, idx) is a[idx]: mapped where a or idx is, and neither they nor the result left resident
    (a heap array taken at heap positions stays a plain gather)."""
    a = mapped.kept(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape))  # 12 MiB
    rng = np.random.default_rng(7)
    idx = mapped.kept(rng.integers(-shape[0], shape[0], size=shape[0], dtype=np.int64))
    want = np.asarray(a)[np.asarray(idx)]
    memory.give_back()
    before = _rss_file_mib()
    got = mapped.take(a, idx)
    if mapped._CAN:
        assert mapped.is_mapped(got)
        assert _rss_file_mib() < before + 9, "the gather left its arrays' pages resident"
    assert np.array_equal(got, want)
    small = np.arange(10) * 3
    assert mapped.take(small, [9, 0, -1]).tolist() == [27, 0, 27]
    assert mapped.take(small, np.zeros(0, dtype=np.int64)).size == 0


@pytest.mark.parametrize("n", [0, 5, 3 << 17])
def test_inverse_is_each_positions_place(n):
    rng = np.random.default_rng(n)
    places = mapped.kept(rng.permutation(n)[:n // 2])
    want = np.full(n, -1, dtype=np.int64)
    want[np.asarray(places)] = np.arange(places.size)
    got = mapped.inverse(places, n)
    assert got.dtype == np.int64 and np.array_equal(got, want)
    assert mapped.is_mapped(got) == (mapped._CAN and n >= 3 << 17)


def test_small_arrays_and_objects_stay_on_the_heap():
    small = np.arange(100)
    assert mapped.kept(small) is small
    objs = np.array(["a", None] * 100_000, dtype=object)
    assert mapped.kept(objs) is objs
    assert not mapped.is_mapped(mapped.full(10, -1, np.int64))
    assert mapped.full(10, -1, np.int64).tolist() == [-1] * 10


@pytest.mark.parametrize("chunk, least", [(1, 0), (3, 0), (3, 80), (7, 800), (1 << 16, 0)])
def test_a_spooled_array_is_every_value_appended(monkeypatch, chunk, least):
    """Spilled every ``chunk`` values once ``least`` bytes are held: the values left held at the end (fewer
    than that) are read back with the rest."""
    monkeypatch.setattr(mapped, "MIN_BYTES", least)
    s = mapped.Spooled("q")
    values = [(-1) ** k * k * 1_000_003 for k in range(1000)]
    for k, v in enumerate(values, 1):
        s.buf.append(v)
        if k % chunk == 0:
            s.spill()
    assert len(s) == len(values)
    got = s.array()
    assert got.dtype == np.int64 and got.tolist() == values
    assert s.array().tolist() == values  # (asked again: the same)
    assert mapped.Spooled("b").array().tolist() == []


def _analyse(root):
    from analyzer import cli

    bd, data, problem = cli.load_data(root, 120.0)
    a = cli.analyse_data(data, bd, pipeline.Options(quality=False, progress=False), False, problem)
    files = {p.name: p.read_bytes() for p in (root / "summary").glob("*.csv")}
    files.update({p.name: p.read_bytes() for p in (root / "raw").glob("*.json")})
    return a, data, files


@pytest.mark.parametrize("least", [0, 40])
def test_an_analysis_with_every_index_array_mapped_writes_the_same_files(tmp_path, monkeypatch, least):
    """``least``: MIN_BYTES; at 40 the spools of bytes spill later than those of int64 (5 values)."""
    plain = tmp_path / "plain"
    shutil.copytree(STORED.parent.parent, plain)
    a, data, want = _analyse(plain)
    assert isinstance(data.requests, stream.StoredRequests) and not mapped.is_mapped(data.requests._cols.start)
    monkeypatch.setattr(mapped, "MIN_BYTES", least)
    monkeypatch.setattr(mapped.Spooled, "CHUNK", 3)
    forced = tmp_path / "forced"
    shutil.copytree(STORED.parent.parent, forced)
    b, data, got = _analyse(forced)
    if mapped._CAN:  # (elsewhere nothing is mapped: the same files all the more)
        cols = data.requests._cols
        assert all(mapped.is_mapped(x) for x in (cols.start, cols.end, cols.rid, cols.firsts, data.requests._rows))
        assert len(cols.rid) == len(a.results) + 1  # (every request, the warm-up too: none lost in a spool)
    assert len(a.results) == len(b.results) > 2
    assert set(got) == set(want) and "results.csv" in got and "stats.csv" in got
    for name in want:
        assert got[name] == want[name], name


@pytest.mark.parametrize("least", [0, 1 << 18])
def test_a_sources_event_seqs_are_sorted_once_each(monkeypatch, least):
    """gpu_store._sorted_once: np.unique of the parts, whether one part already rises (kept as it is, no
    sort), parts that each rise but interleave, or repeats; joined and sorted in a mapped file."""
    from analyzer.gpu_store import _sorted_once

    monkeypatch.setattr(mapped, "MIN_BYTES", least)
    rng = np.random.default_rng(3)
    rising = np.cumsum(rng.integers(1, 5, 1000))
    cases = [[rising], [rising[::2], rising[1::2]], [rising, rising[:10]], [rng.integers(0, 50, 300)],
             [np.zeros(0, dtype=np.int64)], [np.array([7])], [np.array([5, 5])]]
    for parts in cases:
        got = _sorted_once([np.asarray(p, dtype=np.int64) for p in parts])
        assert got.dtype == np.int64 and got.tolist() == np.unique(np.concatenate(parts)).tolist()


@pytest.mark.skipif(memory._MALLOPT is None, reason="glibc's mallopt (Linux)")
def test_a_fixed_mmap_threshold_hands_large_blocks_back_whatever_was_freed_before():
    """memory.fix_mmap_threshold (glibc): after a 16 MiB array is freed, glibc would serve 1 MiB arrays
    from its heap, where the one still held pins the rest freed below it; fixed, each is its own mapping
    and goes back to the OS when freed. Run in a fresh interpreter (the setting is the process's)."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from analyzer import memory

        def anon_mib():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024

        fixed = memory.fix_mmap_threshold() if sys.argv[1] == "fixed" else False
        big = np.ones(2 << 20)  # 16 MiB, mapped, then freed: glibc raises its threshold to that
        del big
        before = anon_mib()
        arrays = [np.ones(1 << 17) for _ in range(48)]  # 48 blocks of 1 MiB
        last = arrays.pop()
        del arrays  # all but the last (made last: on a heap, on top of the others) freed
        print(fixed, anon_mib() - before)
        """)
    got = {}
    for how in ("fixed", "moving"):
        out = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, cwd=ROOT,
                             check=True).stdout.split()
        got[how] = (out[0] == "True", float(out[1]))
    assert got["fixed"][0], "mallopt(M_MMAP_THRESHOLD) refused"
    assert got["fixed"][1] < 8, f"{got['fixed'][1]:.0f} MiB still held with the threshold fixed"
    assert got["moving"][1] > 30, "glibc's moving threshold no longer pins the freed blocks: the test shows nothing"
