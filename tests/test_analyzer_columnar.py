"""The streaming, columnar path of ``analyzer --batch`` (analyzer.columnar) against the in-memory path
(analyzer.stream.build on the message list): the same BatchData, array for array, and so the same
per-request figures, on the stored test batch and on synthetic recordings that exercise every rule
(duplicates, invalid messages, lost samples, several GPUs and hosts, a mapped clock, procs and RAPL
zones appearing late, chunk boundaries). Then the columnar copy: used when it is this recording's,
rebuilt when stale or damaged, and a cut recording analysed up to the cut at every byte."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import msgpack
import numpy as np
import pytest

from analyzer import columnar, pipeline, slabs as SL, stream
from shared import messages as M
from shared.recording import RecordingWriter, read_recording
from tests import synth as S

ROOT = Path(__file__).resolve().parent.parent
STORED = ROOT / "tests" / "data" / "analyzer_batch" / "raw" / "stream.msgpack"


def assert_same(a, b, path="batch"):
    """Exact equality of two BatchData trees (arrays: same dtype, shape and values, NaN = NaN). A
    request's answer is compared as stream.answer reads it, wherever it is held (the copy leaves it on disk)."""
    if isinstance(a, stream.Request) and isinstance(b, stream.Request):
        # its events as typed (read back from the copy's file, or held), the answer wherever it is
        assert stream.answer(a) == stream.answer(b), (path, stream.answer(a), stream.answer(b))
        for name in ("rid", "start_t", "end_t", "warmup", "ok", "start", "first_tokens"):
            assert_same(getattr(a, name), getattr(b, name), f"{path}.{name}")
        assert_same(*(r.end and dataclasses.replace(r.end, text=None, thinking=None) for r in (a, b)), f"{path}.end")
        return
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, dict):
        assert list(a) == list(b), (path, list(a), list(b))
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and a != a:  # NaN (a power limit sent as NaN, kept as sent)
        assert isinstance(b, float) and b != b, (path, a, b)
    else:
        assert a == b, (path, a, b)


def assert_same_telemetry(want, got):
    """A batch whose GPU samples are read by stretch from the columnar copy (analyzer.gpu_store), read
    whole: every series, request, marker and clock equals the message list's."""
    assert got.source is not None
    whole = SL.materialise(got)
    for g in whole.gpus + ([whole.host] if whole.host is not None else []):
        g.meta = {k: v for k, v in g.meta.items() if k not in ("samples", "file")}  # where it was read from
    skip = {"src_seqs", "duplicates", "invalid", "source"}  # bookkeeping of the reading, not the batch
    for f in dataclasses.fields(want):
        if f.name not in skip:
            assert_same(getattr(want, f.name), getattr(whole, f.name), f"batch.{f.name}")


def write(path: Path, items) -> Path:
    with RecordingWriter(path, meta={"batch": "t"}) as w:
        for topic, payload in items:
            w.write(topic, payload)
    return path


def both(path: Path):
    """(in-memory BatchData, columnar BatchData) of one recording; the columnar one without a copy."""
    _, items, problem = read_recording(path)
    dec, problem2 = columnar.decode_file(path, keep_copy=False)
    assert problem2 == problem
    return stream.build(items), columnar.to_batch(dec)


def energies(data) -> dict:
    a = pipeline.analyze(data, pipeline.Options(quality=False))
    return {r["rid"]: (r["gpu_energy_j"], r["cpu_energy_j"], r["gpu_energy_prefill_j"]) for r in a.results}


def clock_items() -> list:
    """Two daemons, one on another host whose clock runs 30 s ahead with 40 ppm drift, probed by clock.sync."""
    reqs = [S.Req(1.0, 2.0), S.Req(2.5, 3.5, run=1)]
    a = S.Spec(duration_s=5.0, requests=reqs, tel_src="telemetry@gpu-a", base_url="http://gpu-b:1",
               gpus=[S.Gpu(S.constant(100.0), uuid="GPU-a")], rapl_w=30.0)
    b = S.Spec(duration_s=5.0, requests=reqs, tel_src="telemetry@gpu-b", server_cores=2.0,
               gpus=[S.Gpu(S.constant(300.0), uuid="GPU-b"), S.Gpu(S.ramp(50.0, 10.0), uuid="GPU-b2")])
    skew = lambda t: t + 30_000_000_000 + int(40e-6 * (t - S.T0_NS))  # noqa: E731
    items = S.messages(a)
    for topic, p in S.messages(b):
        if p["src"] == "telemetry@gpu-b":
            items.append((topic, {**p, "t": skew(p["t"])}))
    probe = M.Stamper("collector@gpu-a", first_seq=10_000)
    for k in range(6):
        sent = S.T0_NS + k * 1_000_000_000
        body = M.ClockSync(source="telemetry@gpu-b", sent_ns=sent, received_ns=sent + 400_000,
                           remote_ns=skew(sent + 200_000), phase="during").to_msg()
        items.append((M.CLOCK_SYNC, probe.stamp(body, t=sent + 400_000, wall=S.WALL0_NS)))
    return items


def messy_items() -> list:
    """Shuffled, duplicated, with invalid messages, lost samples, a proc and a RAPL zone that appear late."""
    spec = S.Spec(duration_s=4.0, rate_hz=50.0, dither=True, rapl_w=20.0, server_cores=1.0,
                  gpus=[S.Gpu(S.square(200.0, 50.0, 0.7), refresh_s=0.1), S.Gpu(S.constant(80.0), counter=False)],
                  requests=[S.Req(0.5, 1.5), S.Req(1.0, 2.2, run=1), S.Req(3.0, 3.9, run=2, end=False)],
                  drop_telemetry_seqs={40, 41, 42, 300})
    items = S.messages(spec)
    for k, (topic, p) in enumerate(items):
        if topic == M.TEL_GPU and p["gpu"] == 0 and k % 7 == 0:  # slow fields: driver, a power cap that changes
            p["driver"] = "550.54" if k < 400 else "555.1"
            p["power_limit_w"] = 300.0 if k % 3 else 250
        if topic == M.TEL_HOST and p["t"] > S.T0_NS + 2_000_000_000:
            p["procs"] = {**p["procs"], "late": {"cpu_pct": 5.0, "rss_mib": "12"}}  # text counts as a number
            p["rapl_uj"] = {**p["rapl_uj"], "dram": 7}
    rng = random.Random(7)
    dup = [items[i] for i in rng.sample(range(len(items)), 30)]
    bad = [(M.TEL_GPU, {**items[5][1], "power_mw": "lots"}),            # wrong type: invalid
           (M.TEL_GPU, {k: v for k, v in items[7][1].items() if k != "gpu"}),  # required key missing
           (M.TEL_HOST, {**items[9][1], "v": 99}),                      # unreadable schema version
           (M.REQ_END, {"v": 2, "src": "x", "seq": 1, "t": 1, "wall": 1}),  # no rid
           ("tel.future", {"v": 2, "src": "new@h", "seq": 0, "t": S.T0_NS + 5, "wall": 1})]  # unknown topic
    items = items + dup + bad
    rng.shuffle(items)
    return items


@pytest.mark.parametrize("chunk", [3, 64, columnar.CHUNK])
@pytest.mark.parametrize("case", ["stored", "tiny", "clock", "messy"])
def test_columnar_path_gives_the_in_memory_batch_exactly(tmp_path, monkeypatch, case, chunk):
    monkeypatch.setattr(columnar, "CHUNK", chunk)  # small chunks: boundaries everywhere
    if case == "stored":
        path = STORED
    else:
        items = {"tiny": lambda: S.messages(S.tiny_spec()), "clock": clock_items, "messy": messy_items}[case]()
        path = write(tmp_path / "stream.msgpack", items)
    old, new = both(path)
    assert_same(old, new)
    if case == "messy":
        assert new.invalid == 4 and new.duplicates == 30 and "late" in new.procs and "dram" in new.rapl
        assert new.gpus[0].meta["driver"] == "555.1" and len(new.gpus[0].meta["power_limit_changes"]) > 3
    if case == "clock":
        assert new.clock["telemetry@gpu-b"].method == "offset+drift" and len(new.gpus) == 3
    e_old, e_new = energies(old), energies(new)
    assert e_old == e_new and any(v[0] for v in e_new.values())


@pytest.mark.parametrize("chunk", [8, columnar.CHUNK])
def test_rows_with_as_many_keys_but_other_ones_or_in_another_order(monkeypatch, chunk):
    """A chunk's rows are grouped by their number of keys and read by the first row's keys: a row with
    two readings in each other's place reads the same; one with a key swapped for an undeclared one,
    or for a declared one of the wrong type (as many keys both), is refused, as stream.build does."""
    monkeypatch.setattr(columnar, "CHUNK", chunk)
    items = S.messages(S.tiny_spec())
    at = [i for i, (t, _) in enumerate(items) if t == M.TEL_GPU]
    swap = {at[3]: ("gpu", "fan_pct", 1.0), at[9]: ("temp_c", "simulated", "yes")}
    for i, (drop, key, value) in swap.items():
        items[i] = (M.TEL_GPU, {**{k: v for k, v in items[i][1].items() if k != drop}, key: value})
    keys = list(items[at[20]][1])
    a, b = keys.index("power_mw"), keys.index("temp_c")  # two readings swap places: read by name, not place
    keys[a], keys[b] = keys[b], keys[a]
    moved = {k: items[at[20]][1][k] for k in keys}
    items[at[20]] = (M.TEL_GPU, moved)
    new = columnar.to_batch(columnar.decode_items(items))  # (message by message: chunks of exactly ``chunk``)
    assert_same(stream.build(items), new)
    assert new.invalid == 2
    assert any(moved["seq"] in g.seq.tolist() for g in new.gpus) and moved["power_mw"] != moved["temp_c"]


@pytest.mark.parametrize("case", ["stored", "clock", "messy"])
def test_the_copy_read_back_gives_the_in_memory_batch_exactly(tmp_path, case):
    """Through the columnar copy (its request events left in events.msgpack, noted as columns: shuffled,
    duplicated, restarted), the batch is the message list's: requests, their order and events, the
    duplicates counted and every publisher's seqs."""
    if case == "stored":
        path = tmp_path / "stream.msgpack"
        shutil.copyfile(STORED, path)
    else:
        path = write(tmp_path / "stream.msgpack", {"clock": clock_items, "messy": messy_items}[case]())
    _, items, _ = read_recording(path)
    mem = stream.build(items)
    events = path.parent / "columns" / "events.msgpack"
    written = []
    # the copy written from the decoded recording held whole, and as the pass reads it (its events spilled)
    for write_copy in (lambda: columnar.decode_file(path), lambda: columnar.decode_to_copy(path)):
        shutil.rmtree(path.parent / "columns", ignore_errors=True)
        write_copy()
        written.append(events.read_bytes())
        dec, _ = columnar.read_copy(path)
        assert dec.requests is not None and len(dec.requests)
        assert not any(t in stream.REQUEST_TOPICS for _, t, _ in dec.events)
        assert_same(mem, columnar.to_batch(dec))
    assert written[0] == written[1]
    if case == "messy":
        assert mem.duplicates == 30 and len(mem.requests) == 3


def test_whole_analysis_identical_through_the_cli_paths(tmp_path):
    """--batch (columns, then the copy) writes the same results.csv as the message path."""
    from analyzer import cli, outputs

    root = tmp_path / "b"
    shutil.copytree(STORED.parent.parent, root)
    opts = pipeline.Options(quality=False, progress=False)
    bd, items, problem = cli.load_batch(root)
    a = cli.analyse_messages(items, bd, opts, 120.0, False, problem)
    mem = (root / "summary" / "results.csv").read_bytes()
    for _ in range(2):  # stream.msgpack (writes the copy), then the copy
        bd, dec, problem = cli.load_columns(root)
        b = cli.analyse_data(columnar.to_batch(dec, 120.0), bd, opts, False, problem)
        assert (root / "summary" / "results.csv").read_bytes() == mem
        assert [r["gpu_energy_j"] for r in b.results] == [r["gpu_energy_j"] for r in a.results]
    assert (root / "raw" / "columns" / "meta.json").is_file()
    assert outputs.json_text(b.request_json[b.results[0]["rid"]]) == outputs.json_text(a.request_json[a.results[0]["rid"]])
    shutil.rmtree(root / "raw" / "columns")
    for _ in range(2):  # the GPU samples left on disk and read by stretch (analyzer.gpu_store): again the same
        bd, data, problem = cli.load_data(root, 120.0)
        assert data.source is not None and all(g.t_ns.size == 0 for g in data.gpus)
        c = cli.analyse_data(data, bd, opts, False, problem)
        assert (root / "summary" / "results.csv").read_bytes() == mem
        for rid in a.request_json:
            assert outputs.json_text(c.request_json[rid]) == outputs.json_text(a.request_json[rid])


def test_copy_is_used_then_rebuilt_when_stale_or_damaged(tmp_path):
    path = write(tmp_path / "raw" / "stream.msgpack", S.messages(S.tiny_spec()))
    assert columnar.read_copy(path) is None
    first, _ = columnar.load(path)                      # decodes stream.msgpack, writes the copy
    meta = json.loads((tmp_path / "raw" / "columns" / "meta.json").read_text(encoding="utf-8"))
    assert meta["source_bytes"] == path.stat().st_size
    again = columnar.read_copy(path)
    assert again is not None
    assert_same(columnar.to_batch(first), columnar.to_batch(again[0]))

    # stale: the recording grew (a resumed batch) and the copy is newer by mtime; length says stale
    extra = M.Stamper("collector@synth", first_seq=5000).stamp(
        M.ReqStart(rid="late/one", model="m1", task="qa").to_msg(), t=S.T0_NS + 9_000_000_000, wall=S.WALL0_NS)
    with RecordingWriter(path) as w:
        w.write(M.REQ_START, extra)
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))
    assert columnar.read_copy(path) is None
    rebuilt, _ = columnar.load(path)
    assert "late/one" in {r.rid for r in columnar.to_batch(rebuilt).requests}
    assert columnar.read_copy(path) is not None

    # same length, other bytes at the end (another recording copied over): the tail hash says stale
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert columnar.read_copy(path) is None

    # a damaged copy is never trusted: rebuilt from stream.msgpack
    columnar.load(path)
    for damaged in ("tel.host.parquet", "gpu/0.parquet"):
        pq_file = tmp_path / "raw" / "columns" / damaged
        pq_file.write_bytes(pq_file.read_bytes()[:100])
        assert columnar.read_copy(path) is None and columnar.read_copy(path, gpus=False) is None
        dec, _ = columnar.load(path)
        assert columnar.to_batch(dec).gpus and columnar.read_copy(path) is not None
    # the GPU samples left on disk: a file gone means the copy is rebuilt, not a batch without that GPU
    (tmp_path / "raw" / "columns" / "gpu" / "0.parquet").unlink()
    assert columnar.read_copy(path, gpus=False) is None
    data, _ = columnar.load_batch(path)
    assert data.source is not None and [g.key for g in data.gpus] == [g.key for g in columnar.to_batch(dec).gpus]


@pytest.mark.slow  # thousands of analyses (~20 s on a shared machine)
def test_cut_at_every_byte_is_analysed_up_to_the_cut(tmp_path):
    """Every prefix of a small recording: the columnar path (and its copy) equals the in-memory path
    on the same prefix, the cut is reported, and the copy of a cut file is not taken for the whole one."""
    spec = S.Spec(duration_s=0.3, rate_hz=20.0, requests=[S.Req(0.05, 0.2)], rapl_w=10.0)
    whole = write(tmp_path / "whole.msgpack", S.messages(spec)).read_bytes()
    path = tmp_path / "raw" / "stream.msgpack"
    path.parent.mkdir()
    header = _header_len(whole)
    seen_problems = 0
    for cut in range(header, len(whole) + 1):
        path.write_bytes(whole[:cut])
        _, items, problem = read_recording(path)
        stride = cut % 61 == 0 or cut == len(whole)
        # at a stride, through load(): it writes the copy of this prefix (the rest: the decoder alone)
        dec, problem2 = columnar.load(path) if stride else columnar.decode_file(path, keep_copy=False)
        assert problem2 == problem
        seen_problems += problem is not None
        assert_same(stream.build(items), columnar.to_batch(dec))
        if stride:  # the copy of this prefix reads back the same, and is not taken for a longer file
            again = columnar.read_copy(path)
            assert again is not None and again[1] == problem
            assert_same(stream.build(items), columnar.to_batch(again[0]))
            lazy, problem3 = columnar.load_batch(path)  # and its GPU samples read by stretch
            assert problem3 == problem
            assert_same_telemetry(stream.build(items), lazy)
    assert seen_problems > 0.9 * (len(whole) - header)


def _header_len(data: bytes) -> int:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    next(unpacker)
    return unpacker.tell()


@pytest.mark.slow
def test_two_hour_recording_analysed_in_bounded_memory(tmp_path):
    """A 2 h, 100 Hz recording (~800k messages, ~230 MB) through ``python -m analyzer --batch`` stays under
    1 GiB peak RSS (the message-list path needed about 2.3 KB per message, ~2 GB here), and again from
    the columnar copy; every request's energy is the exact one; the GPU rows held at once are a slab's."""
    from bench import bench_scale as B

    root = tmp_path / "experiments_long"
    path, exact = B.generate(root, 1, 2.0)
    for _ in range(2):
        _, _, _, rss_mib = B.run_analyzer(root)  # the analyzer's processes together
        assert rss_mib < 1024, f"peak RSS {rss_mib:.0f} MiB for a 2 h recording"
        assert B.worst_error(root, exact) < 1e-6
    assert (root / "raw" / "columns" / "meta.json").is_file()
    # and why it stays bounded: never more than a slab (and its margins, a row group) of GPU rows at once,
    # so a regression that reads the recording whole fails here whatever the machine's memory
    from analyzer import gpu_store, slabs as SL

    data, _ = columnar.load_batch(path)
    a = pipeline.analyze(data, pipeline.Options(quality=False))
    for rid in a.request_json:
        a.request_json[rid]
    list(a.gpu_samples.pieces())
    total = sum(g.meta["samples"] for g in data.gpus)
    assert total == 2 * 3600 * B.RATE_HZ
    assert data.source.most_rows <= B.RATE_HZ * (SL.SLAB_S + 2 * SL.MARGIN_S + 10) + gpu_store.ROW_GROUP < total / 4


@dataclasses.dataclass(kw_only=True)
class TelGpuWithFan(M.TelGpu):
    """tel.gpu as a build that declares one more reading would have it (nothing else edited)."""
    fan_pct: float | None = M._k("fan speed, % of its maximum", series=True)


def test_a_newly_declared_series_key_reaches_the_series_without_other_edits(monkeypatch):
    """Declaring a reading ``series=True`` is the whole change: the decoder reads it as a column, checks
    its type by the declaration, and to_batch hands it to every GPU's Series; absent ticks are NaN."""
    monkeypatch.setattr(columnar, "CHUNK", 64)  # chunks by shape (fast path) and the one with the bad message
    items, fan = [], {}
    for k, (topic, p) in enumerate(S.messages(S.tiny_spec())):
        if topic == M.TEL_GPU and k % 3:  # on some ticks only (a slow field): two message shapes
            p = {**p, "fan_pct": float(k % 97)}
            fan[(p["gpu"], p["seq"])] = p["fan_pct"]
        items.append((topic, p))
    plain = columnar.to_batch(columnar.decode_items(items))
    assert all("fan_pct" not in g.values for g in plain.gpus)  # not declared: not read
    bad = next(p for t, p in items if t == M.TEL_GPU and "fan_pct" in p)
    items.append((M.TEL_GPU, {**bad, "seq": 10**6, "fan_pct": "fast"}))  # wrong type for the declaration
    assert columnar.decode_items(items).invalid == 0          # an undeclared key is not checked
    dec = columnar.decode_items(items, bodies={M.TEL_GPU: TelGpuWithFan})
    data = columnar.to_batch(dec)
    assert dec.invalid == 1 and data.invalid == 1            # checked as declared: the text is refused
    assert data.gpus and fan
    for g, p in zip(data.gpus, plain.gpus):
        assert list(g.values) == [*M.GPU_SERIES, "fan_pct"]
        want = np.array([fan.get((g.meta["gpu"], s), np.nan) for s in g.seq.tolist()])
        assert np.array_equal(g.values["fan_pct"], want, equal_nan=True) and np.isfinite(want).any()
        for f in M.GPU_SERIES:  # the other readings as before
            assert np.array_equal(g.values[f], p.values[f], equal_nan=True)


def test_every_declared_series_key_is_a_column_and_a_series_value(tmp_path):
    """Both paths keep every declared reading; a copy lacking one (written before it was declared) is rebuilt."""
    import pyarrow.parquet as pq

    path = shutil.copy(STORED, tmp_path / "stream.msgpack")
    old, new = both(path)
    for data in (old, new):
        assert data.gpus and data.host is not None
        assert all(list(g.values) == list(M.GPU_SERIES) for g in data.gpus)
        assert list(data.host.values) == list(M.HOST_SERIES)
    dec, _ = columnar.load(path)                              # writes the copy
    for topic in columnar.TABLE_TOPICS:
        t = dec.tables[topic]
        assert set(M.BODIES[topic].series_keys()) | set(M.BODIES[topic].label_keys()) <= set(t.cols)
        assert set(t.strings) == set(M.BODIES[topic].label_keys())
    gpu_file = tmp_path / "columns" / "gpu" / "0.parquet"
    assert columnar.read_copy(path) is not None
    table = pq.read_table(gpu_file)
    pq.write_table(table.drop(["temp_c"]), gpu_file)         # as if temp_c had been declared since
    assert columnar.read_copy(path) is None and columnar.read_copy(path, gpus=False) is None
    dec, _ = columnar.load(path)
    assert "temp_c" in dec.tables[M.TEL_GPU].cols and columnar.read_copy(path) is not None


def test_re_analysis_keeps_sample_files_and_unchanged_request_files(tmp_path):
    """The samples Parquet carries what it was built from (columnar.samples_key): a re-analysis of the
    same recording leaves it, a changed recording or lookback writes it again, and so does a file whose
    rows do not match its key. Request JSON files whose bytes would not change are left too."""
    import pyarrow.parquet as pq

    from analyzer import cli, outputs

    root = tmp_path / "b"
    shutil.copytree(STORED.parent.parent, root)
    samples = root / "raw" / "samples_gpu.parquet"
    argv = ["--batch", str(root), "--no-quality", "--no-plots", "--no-progress"]

    def ident(p: Path) -> tuple:
        st = p.stat()
        return st.st_ino, st.st_mtime_ns

    assert cli.main(argv) == 0
    key = pq.read_metadata(samples).metadata[outputs.SAMPLES_KEY]
    assert json.loads(key)["recording"]["source_bytes"] == (root / "raw" / "stream.msgpack").stat().st_size
    table = pq.read_table(samples)
    some_json = sorted((root / "raw").glob("*.json"))[0]
    before = ident(samples), ident(some_json), some_json.read_bytes()
    assert cli.main(argv) == 0                                   # the copy, same lookback: nothing rewritten
    assert (ident(samples), ident(some_json), some_json.read_bytes()) == before

    some_json.write_text("{}", encoding="utf-8")                 # a request file that differs: written again
    assert cli.main(argv) == 0
    assert some_json.read_bytes() == before[2]

    assert cli.main(argv + ["--lookback-s", "30"]) == 0          # another lookback: another key
    assert ident(samples) != before[0] and pq.read_metadata(samples).metadata[outputs.SAMPLES_KEY] != key

    # the right key on a table that is not the one it names (fewer rows): not trusted
    pq.write_table(table.slice(0, 5).replace_schema_metadata({outputs.SAMPLES_KEY: key}), samples)
    assert cli.main(argv) == 0
    assert pq.read_table(samples).num_rows == table.num_rows

    with RecordingWriter(root / "raw" / "stream.msgpack") as w:   # the recording grew: another key
        w.write(M.REQ_START, M.Stamper("collector@synth", first_seq=9000).stamp(
            M.ReqStart(rid="late/one", model="m1", task="qa").to_msg(), t=S.T0_NS + 9_000_000_000, wall=S.WALL0_NS))
    kept = ident(samples)
    assert cli.main(argv) == 0
    assert ident(samples) != kept and pq.read_metadata(samples).metadata[outputs.SAMPLES_KEY] != key


def test_a_recording_read_while_written_gives_no_samples_key(tmp_path):
    path = write(tmp_path / "raw" / "stream.msgpack", S.messages(S.tiny_spec()))
    dec, _ = columnar.decode_file(path, keep_copy=False)        # (no fingerprint taken: nothing to key on)
    assert columnar.samples_key(dec.source, 120.0) is None
    dec, _ = columnar.decode_file(path)
    assert columnar.samples_key(dec.source, 120.0) == columnar.samples_key(columnar.read_copy(path)[0].source, 120.0)
    assert columnar.samples_key(dec.source, 120.0) != columnar.samples_key(dec.source, 60.0)


def test_gpu_files_with_columns_in_another_order_read_the_same(tmp_path):
    """GPU files whose columns differ (here one written in another column order) are joined by name:
    the stretches read from them are the in-memory batch's, as from files written alike."""
    import pyarrow.parquet as pq

    spec = S.Spec(duration_s=3.0, requests=[S.Req(0.5, 1.5), S.Req(1.0, 2.5, run=1)],
                  gpus=[S.Gpu(S.square(200.0, 50.0, 0.7)), S.Gpu(S.constant(80.0))])
    path = write(tmp_path / "raw" / "stream.msgpack", S.messages(spec))
    _, items, _ = read_recording(path)
    columnar.load(path)  # writes the copy
    gpu_file = tmp_path / "raw" / "columns" / "gpu" / "1.parquet"
    table = pq.read_table(gpu_file)
    pq.write_table(table.select(table.column_names[::-1]), gpu_file)
    lazy, _ = columnar.load_batch(path)
    assert lazy.source is not None and len(lazy.gpus) == 2
    assert_same_telemetry(stream.build(items), lazy)
    e_want = energies(stream.build(items))
    assert e_want == energies(lazy) and all(v[0] for v in e_want.values())


def test_gpu_meta_read_by_row_group_equals_the_in_memory_batch(tmp_path, monkeypatch):
    """A GPU file in time order has its meta read a row group at a time, a label or flag holding one value
    throughout a group filled in from the group's statistics: the same meta (driver, power kinds, the
    power limit's changes, simulated) as the whole recording in memory, where one GPU sends its driver
    and a changing power limit on some ticks and the other never does."""
    spec = S.Spec(duration_s=4.0, rate_hz=50.0, requests=[S.Req(0.5, 1.5), S.Req(1.0, 3.2, run=1)],
                  gpus=[S.Gpu(S.square(200.0, 50.0, 0.7)), S.Gpu(S.constant(80.0))])
    items = S.messages(spec)
    slow = [p for topic, p in items if topic == M.TEL_GPU and p["gpu"] == 0][::23]
    for n, p in enumerate(slow):
        p["driver"] = "550.54" if n < len(slow) // 2 else "555.1"
        p["power_limit_w"] = 300.0 if n % 4 < 2 else 250
    path = write(tmp_path / "raw" / "stream.msgpack", items)
    monkeypatch.setattr(columnar.gpu_store, "ROW_GROUP", 16)  # groups with and without the slow fields
    _, items, _ = read_recording(path)
    lazy, _ = columnar.load_batch(path)
    want = stream.build(items)
    assert want.gpus[0].meta["driver"] == "555.1" and len(want.gpus[0].meta["power_limit_changes"]) > 3
    assert "driver" not in want.gpus[1].meta and not want.gpus[1].meta["power_limit_changes"]
    assert [g.meta["power_limit_changes"] for g in lazy.gpus] == [g.meta["power_limit_changes"] for g in want.gpus]
    assert_same_telemetry(want, lazy)


@pytest.mark.parametrize("chunk", [3, 64, columnar.CHUNK])
def test_hostile_messages_are_refused_alike_by_both_paths(tmp_path, monkeypatch, chunk):
    """A ``src`` that is a map or a list and integers beyond 64 bits (tests/synth.hostile) are counted
    invalid and dropped by the columnar decoder (its fast path included: they sit among good rows of a
    chunk) as by stream.build: the batch of the recording without them."""
    monkeypatch.setattr(columnar, "CHUNK", chunk)
    items = S.messages(S.tiny_spec())
    bad = S.hostile(items)
    mixed = list(items)
    for k, m in enumerate(bad):  # spread over the recording, so into several chunks
        mixed.insert((k + 1) * len(items) // (len(bad) + 1), m)
    old, new = both(write(tmp_path / "stream.msgpack", mixed))
    assert_same(old, new)
    assert new.invalid == len(bad)
    assert_same(dataclasses.replace(stream.build(items), invalid=len(bad)), new)
    # message by message, chunks of exactly ``chunk``: each hostile row among good ones of its chunk
    assert_same(new, columnar.to_batch(columnar.decode_items(mixed)))


def test_answers_stay_in_the_copy_and_are_read_back_where_used(tmp_path):
    """A request's text and thinking are left in the copy's events.msgpack (a day's answers are not all
    held): the quality scorer and the request JSON get them exactly as the message path has them, and a
    copy rewritten under a running analysis is an error naming the file, not another request's answer."""
    spec = S.tiny_spec()
    for k, r in enumerate(spec.requests):
        r.text = f"第{k}个回答 · answer {k} " * (k + 1)
    msgs = S.messages(spec)
    for topic, p in msgs:  # a thinking text on some answers, an empty one on others
        if topic == M.REQ_END:
            p["thinking"] = f"thought of {p['rid']}" if int(p["seq"]) % 2 else ""
    path = write(tmp_path / "raw" / "stream.msgpack", msgs)
    mem = stream.build(read_recording(path)[1])
    data, _ = columnar.load_batch(path)
    want = {r.rid: (r.end.text, r.end.thinking) for r in mem.requests if r.end is not None}
    assert any(t for _, t in want.values()) and all(r.end.text is None for r in data.requests if r.end)
    assert {r.rid: stream.answer(r) for r in data.requests if r.end is not None} == want

    scored = {}

    def assess(inputs, opts, progress=False):
        scored.update({q["rid"]: (q["text"], q["thinking"]) for q in inputs})
        return {}

    a = pipeline.analyze(data, pipeline.Options(progress=False, assess=assess))
    assert scored and scored == {rid: v for rid, v in want.items() if rid in scored}
    for rid, (text, thinking) in want.items():
        obj = a.request_json[rid]
        assert (obj["generated_text"], obj["thinking_text"]) == (text, thinking)

    events = tmp_path / "raw" / "columns" / "events.msgpack"
    events.write_bytes(b"\x00" * 8 + events.read_bytes())  # another copy in its place: every offset moved
    with pytest.raises(RuntimeError, match="events.msgpack.*run the analyzer again"):
        stream.answer(next(r for r in data.requests if r.answer_at is not None))


@pytest.mark.parametrize("block", [2, 1 << 16])
def test_stored_requests_are_columns_not_objects(tmp_path, monkeypatch, block):
    """A copy's requests are held as columns (stream.StoredRequests: an rid and a few numbers each), no
    Request object alive once the batch is read; each is made when read, equal to the message path's, and
    the arrays the analysis reads (stamps, flags, rids, a subset) are those of the requests themselves
    (their ends set a block of two at a time, in mapped files, as a day's are)."""
    import gc

    from analyzer import mapped

    monkeypatch.setattr(stream, "_BLOCK", block)
    monkeypatch.setattr(mapped, "MIN_BYTES", 1)

    spec = S.tiny_spec()
    msgs = S.messages(spec)
    unended = [p["rid"] for t, p in msgs if t == M.REQ_END][:2]
    msgs = [(t, p) for t, p in msgs if not (t == M.REQ_END and p["rid"] in unended)]  # two never ended
    path = write(tmp_path / "raw" / "stream.msgpack", msgs)
    mem = stream.build(read_recording(path)[1])
    data, _ = columnar.load_batch(path)
    gc.collect()
    assert isinstance(data.requests, stream.StoredRequests)
    assert not [o for o in gc.get_objects() if type(o) is stream.Request and o._file is not None]  # (mem's are held)
    assert_same(mem.requests, list(data.requests))
    want, got = stream.request_columns(mem.requests), stream.request_columns(data.requests)
    assert list(want) == list(got) and all(np.array_equal(want[k], got[k]) for k in want)
    assert not got["has_end"].all() and got["warmup"].any() and got["ok"].any()
    rids = stream.request_rids(data.requests)  # packed: one buffer, no str object a request
    assert isinstance(rids, stream.PackedStrings) and list(rids) == [r.rid for r in mem.requests]
    pick = np.array([3, 0, len(mem.requests) - 1])
    view = stream.take_requests(data.requests, pick)
    assert isinstance(view, stream.StoredRequests) and len(view) == 3
    assert_same([mem.requests[i] for i in pick.tolist()], list(view))
    assert list(stream.request_rids(view)) == [mem.requests[i].rid for i in pick.tolist()]
    assert_same(mem.requests[1:4], list(data.requests[1:4]))


def test_requests_events_stay_in_the_copy_and_are_read_back_when_used(tmp_path, monkeypatch):
    """A re-analysis holds no request's events but the last few read (stream.EventFile): each is read
    back from the copy's events.msgpack, typed exactly as the message path makes it, whatever the order
    asked; a copy rewritten under the analysis is an error naming the file, never another request's."""
    monkeypatch.setattr(stream.EventFile, "CACHE", 3)
    spec = S.tiny_spec()
    path = write(tmp_path / "raw" / "stream.msgpack", S.messages(spec))
    mem = stream.build(read_recording(path)[1])
    data, _ = columnar.load_batch(path)
    assert len(data.requests) == len(mem.requests) > 3
    for want, got in [*zip(mem.requests, data.requests), *reversed(list(zip(mem.requests, data.requests)))]:
        assert_same(want, got)
    files = {r._file for r in data.requests}
    assert len(files) == 1 and None not in files
    file = files.pop()
    assert len(file._cache) == 3 and all(r._start is None and r._end is None for r in data.requests)
    a = pipeline.analyze(data, pipeline.Options(progress=False, quality=False))
    assert [r["rid"] for r in a.results] == [r.rid for r in mem.requests if not r.start.warmup]

    events = tmp_path / "raw" / "columns" / "events.msgpack"
    events.write_bytes(b"\x00" * 8 + events.read_bytes())
    file._cache.clear()  # (none of the last read kept)
    with pytest.raises(RuntimeError, match="events.msgpack: byte .* no longer holds the req.start of"):
        data.requests[0].start




@pytest.mark.parametrize("block", [1, 3, 1 << 16])
def test_events_found_in_order_exactly_where_their_sort_would_keep_them(monkeypatch, block):
    """_in_order (a block at a time) is true exactly where lexsort by (t, rank of src, seq) is the
    identity; sorted_keys is the sort of every part's keys, src << 40 | seq (None for a seq beyond 40 bits)."""
    monkeypatch.setattr(columnar, "_KEY_BLOCK", block)
    rng = np.random.default_rng(block)
    rank = np.array([2, 0, 1])
    for _ in range(200):
        n = int(rng.integers(0, 9))
        cols = {"t": np.sort(rng.integers(0, 4, n)), "src": rng.integers(0, 3, n), "seq": rng.integers(0, 3, n)}
        if rng.random() < 0.3:
            cols["t"] = rng.integers(0, 4, n)
        want = np.array_equal(np.lexsort((cols["seq"], rank[cols["src"]], cols["t"])), np.arange(n))
        assert columnar._in_order(cols, rank) == want
    parts = [(rng.integers(0, 3, 7), rng.integers(0, 1 << 40, 7)), (np.zeros(0, np.int64), np.zeros(0, np.int64)),
             (rng.integers(0, 3, 5), rng.integers(0, 9, 5))]
    want = np.sort(np.concatenate([(s.astype(np.int64) << 40) | q for s, q in parts]))
    assert columnar.sorted_keys(parts).tolist() == want.tolist()
    assert columnar.sorted_keys(parts + [(np.zeros(1, np.int64), np.array([1 << 40]))]) is None
    assert columnar.sorted_keys(parts + [(np.zeros(1, np.int64), np.array([-1]))]) is None
