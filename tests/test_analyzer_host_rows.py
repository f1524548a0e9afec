"""The host's rows (10 Hz: millions a week) never whole in memory. Written: the columnar copy's host and
heartbeat tables made as stream.msgpack is read (analyzer.table_spill), the Parquet file holding what
joining the chunks in memory gives (columnar._concat: columns in first-seen order, absent where a chunk
lacks them, the types np.concatenate makes), in row groups of the stated size, the decoder holding none
of those rows. Read: a lazy batch folds the host's meta from the file a row group at a time
(gpu_store.HostScan) where no host row repeats a message, giving the batch the whole table gives."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from analyzer import arrow_np, columnar, gpu_store, parquet_parts, table_spill
from shared import messages as M
from tests import synth as S
from tests.test_analyzer_columnar import clock_items, messy_items, write


def _chunk(rng, at: int, n: int, extra: list[str]) -> dict[str, np.ndarray]:
    cols = {"idx": np.arange(at, at + n, dtype=np.int64), "src": rng.integers(0, 3, n).astype(np.int32),
            "t": np.arange(at, at + n, dtype=np.int64) * 100_000_000, "cpu_pct": rng.random(n) * 100}
    for group in extra:
        cols[f"{group}:present"] = rng.random(n) < 0.8
        cols[f"{group}:rss_mib"] = np.where(cols[f"{group}:present"], rng.random(n) * 1e3, np.nan)
    return cols


@pytest.mark.parametrize("group", [7, 16, 1000])
def test_parts_joined_are_the_chunks_concatenated(tmp_path, group):
    """Chunks of uneven sizes whose column groups come, go and come back (a process watched late, then
    gone): the file's columns, their order, types and values are _concat's; its row groups ``group``
    rows each but the last."""
    rng = np.random.default_rng(5)
    plan = [(13, []), (40, []), (5, ["proc:a"]), (29, ["proc:a", "rapl:0"]), (1, []), (22, ["rapl:0"]), (31, [])]
    chunks, at = [], 0
    for n, extra in plan:
        chunks.append(_chunk(rng, at, n, extra))
        at += n
    spill = table_spill.TableSpill(tmp_path, {M.TEL_HOST: group, M.TEL_HB: group})
    for c in chunks:
        assert spill(M.TEL_HOST, {k: v.copy() for k, v in c.items()})
    assert not spill(M.TEL_GPU, chunks[0])  # not a table it was given
    assert spill.close() == {M.TEL_HOST: at}  # no heartbeat rows: no file, left to the caller
    assert not (tmp_path / f"{M.TEL_HB}.parquet").exists() and not (tmp_path / table_spill.PART_DIR).exists()

    want = columnar._concat(chunks)
    pf = pq.ParquetFile(tmp_path / f"{M.TEL_HOST}.parquet")
    got = arrow_np.read_columns(pf)
    assert list(got) == list(want) == ["idx", "src", "t", "cpu_pct", "proc:a:present", "proc:a:rss_mib",
                                        "rapl:0:present", "rapl:0:rss_mib"]
    for name, v in want.items():
        assert got[name].dtype == v.dtype and np.array_equal(got[name], v, equal_nan=v.dtype.kind == "f"), name
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
    assert sum(sizes) == at and all(s == group for s in sizes[:-1]) and 0 < sizes[-1] <= group


def test_a_column_sent_as_two_types_is_joined_as_concatenate_joins_it(tmp_path):
    a = {"idx": np.arange(3, dtype=np.int64), "t": np.arange(3, dtype=np.int64), "n": np.array([1, 2, 3], np.int32)}
    b = {"idx": np.arange(3, 5, dtype=np.int64), "t": np.arange(3, 5, dtype=np.int64), "n": np.array([0.5, 7.0])}
    spill = table_spill.TableSpill(tmp_path, {M.TEL_HB: 2})
    spill(M.TEL_HB, dict(a))
    spill(M.TEL_HB, dict(b))
    spill.close()
    got = arrow_np.read_columns(pq.ParquetFile(tmp_path / f"{M.TEL_HB}.parquet"))
    want = columnar._concat([a, b])
    assert got["n"].dtype == want["n"].dtype == np.float64 and got["n"].tolist() == [1.0, 2.0, 3.0, 0.5, 7.0]


def test_the_pass_holds_no_host_rows_and_the_copy_has_them_all(tmp_path, monkeypatch):
    """decode_to_copy's pass on a recording whose host gains a process part-way, decoded in chunks of 16
    messages: the decoder keeps no host or heartbeat rows (a day's would be hundreds of MB), the copy's
    tables are the in-memory decode's exactly, and the read-back batch the same."""
    monkeypatch.setattr(columnar, "CHUNK", 16)
    path = write(tmp_path / "raw" / "stream.msgpack", messy_items())
    mem, _ = columnar.decode_file(path, keep_copy=False)
    tmp = tmp_path / "spill"
    tables = table_spill.TableSpill(tmp, {M.TEL_HOST: 8, M.TEL_HB: 8})
    dec, _ = columnar._decode(path, sink=tables)
    assert dec.tables[M.TEL_HOST].n == 0 and dec.tables[M.TEL_HB].n == 0
    assert dec.tables[M.TEL_HOST].extra == mem.tables[M.TEL_HOST].extra != []
    assert tables.close() == {M.TEL_HOST: mem.tables[M.TEL_HOST].n, M.TEL_HB: mem.tables[M.TEL_HB].n}
    for topic in (M.TEL_HOST, M.TEL_HB):
        got = arrow_np.read_columns(pq.ParquetFile(tmp / f"{topic}.parquet"))
        want = mem.tables[topic].cols
        assert list(got) == list(want)
        for name, v in want.items():
            assert got[name].dtype == v.dtype and np.array_equal(got[name], v, equal_nan=v.dtype.kind == "f")
    shutil.rmtree(tmp)
    assert columnar.decode_to_copy(path)
    copy = columnar.copy_dir(path)
    assert not (copy / table_spill.PART_DIR).exists()
    back, _ = columnar.read_copy(path)
    for topic in (M.TEL_HOST, M.TEL_HB):
        assert back.tables[topic].n == mem.tables[topic].n
        assert back.tables[topic].extra == mem.tables[topic].extra
        for name, v in mem.tables[topic].cols.items():
            assert np.array_equal(back.tables[topic].cols[name], v, equal_nan=v.dtype.kind == "f"), name


def _meta(series):
    return None if series is None else (series.key, series.src, series.simulated, dict(series.meta),
                                         sorted(series.values), series.t_ns.dtype, series.seq.dtype)


def _procs_spec_items() -> list:
    """One host, a process watched from 1.5 s and a RAPL zone throughout, a request every half second."""
    spec = S.Spec(duration_s=4.0, rate_hz=50.0, rapl_w=20.0, server_cores=1.0, gpus=[S.Gpu(S.constant(90.0))],
                  requests=[S.Req(0.5 * k + 0.2, 0.5 * k + 0.6, run=k) for k in range(6)])
    items = S.messages(spec)
    for topic, p in items:
        if topic == M.TEL_HOST and p["t"] > S.T0_NS + 1_500_000_000:
            p["procs"] = {**p["procs"], "late": {"cpu_pct": 5.0, "rss_mib": 12.0}}
    return items


@pytest.mark.parametrize("case,usual", [("procs", True), ("clock", True), ("messy", False)])
def test_the_host_folded_by_row_group_is_the_whole_tables(tmp_path, monkeypatch, case, usual):
    """A lazy batch's host, processes and RAPL zones (meta, flags, samples in scope) equal those the whole
    host table gives, and so do its duplicates, origin, clock notes and the host's first and last stamps:
    folded from the file (nothing of the host held) on clean recordings, one host or two on mapped
    clocks; read whole on a shuffled one with duplicates. The file in parts of two row groups."""
    monkeypatch.setattr(gpu_store, "HOST_ROW_GROUP", 16)
    monkeypatch.setattr(parquet_parts, "PART_GROUPS", 2)
    items = {"procs": _procs_spec_items, "clock": clock_items, "messy": messy_items}[case]()
    path = write(tmp_path / "raw" / "stream.msgpack", items)
    assert columnar.decode_to_copy(path)
    (dec, _), files = columnar.read_copy(path, gpus=False)
    assert dec.tables[M.TEL_HOST].cols["t"].size == 0  # the host's rows left in the file
    scan = gpu_store.HostScan(parquet_parts.parts_on_disk(columnar.copy_dir(path), f"{M.TEL_HOST}.parquet"),
                                columnar.message_keys(dec))
    assert scan.usual is usual and len(scan.spans) > 4 and len(scan.file.paths) == -(-len(scan.spans) // 2)
    folded, _ = columnar.load_batch(path)
    with monkeypatch.context() as m:  # the whole table read, as a host row that repeats another makes it
        m.setattr(columnar, "message_keys", lambda dec: None)
        whole, _ = columnar.load_batch(path)
    full, _ = columnar.read_copy(path)
    want = columnar.to_batch(full)  # (its series hold their samples)
    assert folded.host.meta["samples"] == whole.host.meta["samples"] == want.host.t_ns.size > 10
    for got in (folded, whole):
        assert _meta(got.host) == _meta(gpu_store._empty(want.host))[:3] + ({"samples": want.host.t_ns.size},) \
            + _meta(want.host)[4:]
        assert {k: _meta(v) for k, v in got.procs.items()} == {k: _meta(v) for k, v in want.procs.items()}
        assert {k: _meta(v) for k, v in got.rapl.items()} == {k: _meta(v) for k, v in want.rapl.items()}
        assert got.origin_ns == want.origin_ns
        assert got.source._host_ends == [int(want.host.t_ns[0]), int(want.host.t_ns[-1])]
    assert folded.duplicates == whole.duplicates and folded.clock_notes == whole.clock_notes
    if case == "procs":
        assert sorted(folded.procs) == ["late", "ollama"] and folded.rapl


def test_a_host_row_sharing_another_messages_seq_is_read_whole(tmp_path):
    """A host row whose (source, seq) an event also has (a publisher's seqs are its messages' own): not the
    usual case, so the table is read whole and de-duplicated with the others, as before."""
    items = _procs_spec_items()
    host = next(p for t, p in items if t == M.TEL_HOST)
    items.append((M.BATCH_START, {**next(p for t, p in items if t == M.BATCH_START), "src": host["src"],
                                  "seq": host["seq"]}))
    path = write(tmp_path / "raw" / "stream.msgpack", items)
    assert columnar.decode_to_copy(path)
    (dec, _), _ = columnar.read_copy(path, gpus=False)
    scan = gpu_store.HostScan(parquet_parts.parts_on_disk(columnar.copy_dir(path), f"{M.TEL_HOST}.parquet"),
                                columnar.message_keys(dec))
    assert not scan.usual
