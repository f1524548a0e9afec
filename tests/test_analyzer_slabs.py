"""Measuring a batch a slab of time at a time (analyzer.slabs): the plan partitions the time axis and
every window, and a synthetic batch measured in slabs of a few seconds gives the exact energies, the
same request JSON and the same samples as measured whole."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analyzer import columnar, pipeline, slabs as SL, stream
from shared import messages as M
from tests import synth as S


def test_one_slab_when_the_telemetry_spans_at_most_a_slab():
    (only,) = SL.plan(np.array([1.0, 2.0]), np.array([3.0, 9.0]), (0.0, 600.0))
    assert only.whole and list(only.rows) == [0, 1]
    (empty,) = SL.plan(np.zeros(0), np.zeros(0), (float("nan"), float("nan")))
    assert empty.whole


def test_plan_partitions_time_and_windows():
    rng = np.random.default_rng(3)
    a = np.sort(rng.uniform(0, 100, 200))
    b = a + rng.uniform(0, 15, 200)
    slabs = SL.plan(a, b, (0.0, 110.0), slab_s=10.0, margin_s=2.0)
    assert len(slabs) == 11
    assert slabs[0].own_lo_s == -SL.INF and slabs[-1].own_hi_s == SL.INF and slabs[0].lo_s == -SL.INF
    for left, right in zip(slabs, slabs[1:]):
        assert left.own_hi_s == right.own_lo_s
    rows = np.concatenate([s.rows for s in slabs])
    assert sorted(rows.tolist()) == list(range(200))
    for s in slabs:
        assert ((a[s.rows] >= s.own_lo_s) & (a[s.rows] < s.own_hi_s)).all()
        assert (a[s.rows] - 2.0 >= s.lo_s).all() and (b[s.rows] + 2.0 <= s.hi_s).all()
    owner, pa, pb, which = SL.pieces(a, b, slabs)
    total = np.zeros(200)
    np.add.at(total, owner, pb - pa)
    assert np.allclose(total, b - a)
    for j, s in enumerate(slabs):
        sel = which == j
        assert (pa[sel] >= s.own_lo_s).all() and (pb[sel] <= s.own_hi_s).all()


def test_context_holds_every_overlapping_window():
    a = np.array([0.0, 1.0, 5.0, 9.0, 20.0])
    b = np.array([6.0, 2.0, 9.5, 10.0, 21.0])
    assert SL.context(a, b, np.array([2])).tolist() == [0, 2, 3]


def test_overlaps_found_by_search_are_those_a_pass_over_every_window_finds():
    """Windows in no order (long ones, zero-length ones, equal starts): for any set of rows, the windows
    overlapping their span found by Overlaps' two searches are those the comparison of every window gives;
    and a plan's slabs hold each window once, each slab's in index order."""
    rng = np.random.default_rng(8)
    for n in (1, 2, 7, 300):
        a = rng.choice(np.arange(0.0, 50.0, 0.5), n)  # (repeated starts)
        b = a + np.where(rng.random(n) < 0.1, rng.uniform(0, 40, n), rng.choice([0.0, 0.5, 2.0], n))
        found = SL.Overlaps(a, b)
        for _ in range(40):
            rows = np.sort(rng.choice(n, rng.integers(1, n + 1), replace=False))
            lo, hi = a[rows].min(), b[rows].max()
            want = np.union1d(np.flatnonzero((a <= hi) & (b >= lo)), rows)
            assert found.context(rows).tolist() == want.tolist()
        slabs = SL.plan(a, b, (0.0, 90.0), slab_s=7.0)
        assert [s.rows.tolist() for s in slabs] == [sorted(s.rows.tolist()) for s in slabs]
        assert sorted(np.concatenate([s.rows for s in slabs]).tolist()) == list(range(n))


def test_envelope_keeps_peaks_and_bounds_points():
    t = np.arange(100_000, dtype=float)
    y = np.sin(t / 50.0)
    y[12_345] = 9.0
    tt, yy = SL.envelope(t, y, buckets=100)
    assert tt.size <= 200 and 9.0 in yy and (np.diff(tt) > 0).all()


@pytest.mark.parametrize("base", [5_000_000_000_000, 2 ** 53 - 300, 1_700_000_000_000_000_000])
def test_stamp_range_is_the_float_comparison_on_int64_stamps(base):
    """The integer bounds select exactly the stamps numpy's ``lo <= t <= hi`` selects (int64 compared
    as float64): exact below 2**53, and past it the stamps that round onto a bound as well."""
    rng = np.random.default_rng(5)
    t = np.sort(base + rng.integers(-2000, 2000, 400))
    edges = [float(x) for x in t[::7]] + [float(base) + x for x in rng.uniform(-2100, 2100, 60)]
    for lo in edges:
        for hi in (lo, lo + 0.5, lo + 700.0, SL.INF):
            i0, i1 = SL.stamp_range(t, lo, hi)
            assert np.array_equal(np.flatnonzero((t >= lo) & (t <= hi)), np.arange(i0, i1)), (lo, hi)
    assert SL.stamp_range(t, -SL.INF, SL.INF) == (0, t.size)
    assert SL.stamp_range(t, float("nan"), SL.INF) == (t.size, t.size)


def _spec() -> S.Spec:
    # overlapping requests across slab cuts, a counter and a power reading, a ramp, RAPL and the server
    reqs = [S.Req(0.5 + 1.7 * k, 0.5 + 1.7 * k + 2.9, run=k, chunk_s=[0.3, 0.5]) for k in range(10)]
    return S.Spec(duration_s=20.0, rate_hz=50.0, dither=True, rapl_w=20.0, server_cores=1.0,
                  gpus=[S.Gpu(S.constant(120.0)), S.Gpu(S.ramp(60.0, 3.0), refresh_s=0.1)], requests=reqs)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("slabs") / "experiments_1_20260101_000000"
    bd = S.write_batch(root, _spec())
    dec, _ = columnar.decode_file(bd.stream, keep_copy=False)
    batch = columnar.to_batch(dec)
    whole = pipeline.analyze(batch, pipeline.Options(quality=False, idle_baseline=True))
    sliced = pipeline.analyze(batch, pipeline.Options(quality=False, idle_baseline=True, slab_s=3.0))
    margin, SL.MARGIN_S = SL.MARGIN_S, 1.0
    try:  # slabs that read only their own stretch: fits of their own
        tight = pipeline.analyze(batch, pipeline.Options(quality=False, idle_baseline=True, slab_s=3.0))
    finally:
        SL.MARGIN_S = margin
    return batch, whole, sliced, tight


def test_a_long_runs_timeline_is_shared_out_among_its_slabs(monkeypatch):
    """A run of many slabs keeps TIMELINE_POINTS per GPU at most, spread over the whole run, each slab's
    peak kept; the energies are not touched (the timeline is for the plots)."""
    bursts = [(1.0 + 2.0 * k, 0.05, 300.0 + k) for k in range(29)]  # a short peak in every slab
    spec = S.Spec(duration_s=60.0, rate_hz=50.0, gpus=[S.Gpu(S.pulses(80.0, bursts))],
                  requests=[S.Req(0.5 + 2.0 * k, 1.5 + 2.0 * k, run=k) for k in range(29)])
    batch = stream.build(S.messages(spec))
    opts = pipeline.Options(quality=False, slab_s=2.0)
    full = pipeline.analyze(batch, opts)
    monkeypatch.setattr(SL, "TIMELINE_POINTS", 600)
    slabs = SL.plan(np.array([0.5]), np.array([1.5]), (0.0, 60.0), 2.0)
    assert len(slabs) == 30 and {s.buckets for s in slabs} == {10}
    lean = pipeline.analyze(batch, opts)
    (tl,), (tl_full,) = lean.timelines, full.timelines
    assert tl["t_s"].size <= 600 < tl_full["t_s"].size
    assert tl["t_s"][0] < 2.0 and tl["t_s"][-1] > 58.0 and (np.diff(tl["t_s"]) > 0).all()
    assert {300.0 + k for k in range(29)} <= set(tl["power_w"].tolist())
    assert [r["gpu_energy_j"] for r in lean.results] == [r["gpu_energy_j"] for r in full.results]


def test_slabs_give_the_exact_energies(measured):
    _, whole, sliced, _ = measured
    spec = _spec()
    for w_row, s_row in zip(whole.results, sliced.results):
        assert w_row["rid"] == s_row["rid"]
        i = int(w_row["rid"].rsplit("-", 1)[1])
        r = spec.requests[i]
        # concurrent requests share the energy of their overlap: the sum over requests is exact
        assert s_row["gpu_energy_j"] == pytest.approx(w_row["gpu_energy_j"], rel=1e-6)
        assert s_row["cpu_energy_j"] == pytest.approx(w_row["cpu_energy_j"], rel=1e-6)
        assert s_row["effective_window_s"] == w_row["effective_window_s"]
        assert r.b_s > r.a_s
    exact = sum(g.power.e_j(spec.requests[-1].b_s) - g.power.e_j(spec.requests[0].a_s) for g in spec.gpus)
    assert sum(r["gpu_energy_j"] for r in sliced.results) == pytest.approx(exact, rel=1e-3)


def test_slabs_with_their_own_fits_stay_exact(measured):
    _, whole, _, tight = measured
    spec = _spec()
    exact = sum(g.power.e_j(spec.requests[-1].b_s) - g.power.e_j(spec.requests[0].a_s) for g in spec.gpus)
    assert sum(r["gpu_energy_j"] for r in tight.results) == pytest.approx(exact, rel=1e-3)
    for w_row, t_row in zip(whole.results, tight.results):
        assert t_row["gpu_energy_j"] == pytest.approx(w_row["gpu_energy_j"], rel=1e-3)
        assert t_row["gpu_energy_uncertainty_j"] > 0
    assert {r["gpu_idle_w"] for r in tight.results} == {whole.results[0]["gpu_idle_w"]}


def test_slabs_give_the_same_request_json_samples_and_timelines(measured):
    _, whole, sliced, _ = measured
    assert sorted(whole.request_json) == sorted(sliced.request_json)
    for rid in whole.request_json:
        a, b = whole.request_json[rid], sliced.request_json[rid]
        assert json.dumps(a["system_metrics_full"], sort_keys=True) == json.dumps(b["system_metrics_full"], sort_keys=True)
    for name in ("gpu_samples", "host_samples"):
        w, s = getattr(whole, name), getattr(sliced, name)
        assert w.rows == s.rows and list(w) == list(s)
        assert len(list(s.pieces())) > len(list(w.pieces()))  # a piece per slab
        for col in ("t_ns", "seq"):
            assert sorted(w[col].tolist()) == sorted(s[col].tolist())  # every sample once
    for tw, ts in zip(whole.timelines, sliced.timelines):
        assert np.array_equal(tw["t_s"], ts["t_s"]) and np.array_equal(tw["power_w"], ts["power_w"], equal_nan=True)


class _Counted(SL.InMemory):
    """A source that notes the stretches asked of it."""

    def __init__(self, batch):
        super().__init__(batch)
        self.ranges = []

    @property
    def asked(self) -> int:
        return len(self.ranges)

    def between(self, lo_s, hi_s):
        self.ranges.append((lo_s, hi_s))
        return super().between(lo_s, hi_s)

    def reads(self) -> int:
        """The reads a source keeping its last stretch (analyzer.gpu_store.Store) makes for these asks."""
        held, n = None, 0
        for lo, hi in self.ranges:
            if held is None or not (held[0] <= lo and hi <= held[1]):
                held, n = (lo, hi), n + 1
        return n


def test_sample_tables_written_together_read_each_slab_once(measured, tmp_path, monkeypatch):
    """The GPU and host sample tables written together read each slab's stretch once for all their
    pieces, and hold what each table written alone holds (a row group a piece here: none joined)."""
    import pyarrow.parquet as pq

    from analyzer import outputs

    monkeypatch.setattr(outputs, "ROW_GROUP_BYTES", 1)

    batch = measured[0]
    src = _Counted(batch)
    slabs = SL.plan(np.array([0.5, 16.0]), np.array([15.5, 19.0]), src.span_s(), 3.0)
    assert len(slabs) > 3 and batch.gpus and batch.host is not None
    gpu, host = pipeline._samples(batch, src, slabs)
    together = outputs.SampleTables([(tmp_path / "gpu.parquet", gpu), (tmp_path / "host.parquet", host)], "k").finish()
    assert src.asked == len(slabs)
    for path, table in zip(together, (gpu, host)):
        alone = outputs.SampleTables([(tmp_path / f"alone_{path.name}", table)]).finish()[0]
        a, b = pq.read_table(path), pq.read_table(alone)
        assert a.num_rows == table.rows > 0 and pq.ParquetFile(path).metadata.num_row_groups == len(list(table.pieces()))
        for col in a.column_names:
            assert list(map(repr, a.column(col).to_pylist())) == list(map(repr, b.column(col).to_pylist()))  # (NaN too)


def test_a_slabs_request_json_and_samples_are_written_from_one_read(measured, tmp_path):
    """Writing the outputs reads each slab's stretch once: its requests' JSON and its samples (a
    source keeping its last stretch, as the copy's reader does, serves the rest), with the same JSON."""
    import dataclasses

    from analyzer import outputs
    from shared.batch import BatchDir

    batch, _, sliced, _ = measured
    src = _Counted(batch)
    opts = pipeline.Options(quality=False, idle_baseline=True, slab_s=3.0, jobs=1)
    a = pipeline.analyze(dataclasses.replace(batch, source=src), opts)
    slabs = len(list(a.gpu_samples.stretches()))
    assert slabs > 3
    src.ranges.clear()
    bd = BatchDir(tmp_path / "b")
    outputs.write_all(a, bd, make_plots=False)
    assert src.reads() == slabs
    for rid in sliced.request_json:
        assert bd.request_json(rid).read_text() == outputs.json_text(sliced.request_json[rid])


def test_a_request_without_a_window_does_not_write_the_samples_early(tmp_path, monkeypatch):
    """A request with no window (started, never ended) among the others has no stretch: it writes no
    slab's samples ahead of their requests' JSON, so each slab is still read once (margins short
    enough that one slab's stretch does not hold the next's)."""
    import dataclasses

    from analyzer import outputs
    from shared.batch import BatchDir

    spec = _spec()
    spec.requests[3] = dataclasses.replace(spec.requests[3], end=False)
    monkeypatch.setattr(SL, "MARGIN_S", 0.5)
    bd = S.write_batch(tmp_path / "experiments_1_20260101_000000", spec)
    dec, _ = columnar.decode_file(bd.stream, keep_copy=False)
    batch = columnar.to_batch(dec)
    src = _Counted(batch)
    a = pipeline.analyze(dataclasses.replace(batch, source=src), pipeline.Options(quality=False, slab_s=3.0, jobs=1))
    rids = list(a.request_json)
    assert any(a.request_json.stretch(rid) is None for rid in rids[:-3])  # (in the middle, not last)
    slabs = len(list(a.gpu_samples.stretches()))
    src.ranges.clear()
    outputs.write_all(a, BatchDir(tmp_path / "out"), make_plots=False)
    assert src.reads() == slabs


def _level_energy(batch, a: np.ndarray, b: np.ndarray, slab_s: float) -> dict[str, np.ndarray]:
    """The energies of level windows [a, b] as the analysis measures them: with its slabs."""
    from analyzer import energy as E

    src = SL.InMemory(batch)
    slabs = SL.plan(a, b, src.span_s(), slab_s)
    levels = pipeline._LevelPieces(a, b, slabs)
    *_, got = pipeline._measure(batch, src, slabs, E.Window(a, b), a, None, pipeline.Options(), levels)
    return levels.measured(got, a, b)


def test_level_energy_adds_up_over_slabs(measured):
    batch, _, _, _ = measured
    a, b = np.array([0.5, 16.0]), np.array([15.5, 19.0])
    one = _level_energy(batch, a, b, SL.SLAB_S)
    many = _level_energy(batch, a, b, 3.0)
    assert set(one) == set(many) == {"gpu_j", "gpu_unc_j", "cpu_j"}
    spec = _spec()
    exact = np.array([sum(g.power.e_j(y) - g.power.e_j(x) for g in spec.gpus) for x, y in zip(a, b)])
    assert np.allclose(many["gpu_j"], one["gpu_j"], rtol=1e-6) and np.allclose(many["gpu_j"], exact, rtol=1e-3)
    assert np.allclose(many["cpu_j"], one["cpu_j"], rtol=1e-6)


def _rows(a) -> list[dict]:
    keep = ("rid", "gpu_energy_j", "gpu_energy_uncertainty_j", "cpu_energy_j", "gpu_coverage", "gpu_power_avg_w",
            "gpu_samples", "gpu_seq_gaps", "gpu_energy_method", "cpu_util_avg", "energy_basis")
    return [{k: r.get(k) for k in keep} for r in a.results]


@pytest.mark.parametrize("case", ["synthetic", "clock", "messy"])
@pytest.mark.parametrize("slab_s", [SL.SLAB_S, 1.0])
def test_gpu_samples_read_from_disk_by_stretch_equal_the_in_memory_batch(tmp_path, monkeypatch, case, slab_s):
    """The GPU samples left in the columnar copy and read by stretch (analyzer.gpu_store) give the same
    rows, request JSON and samples as the whole recording in memory: whole (one slab) and in slabs of a
    second with a half-second margin, on a multi-host recording with a mapped clock, and on a shuffled
    one with duplicates and lost samples."""
    from tests.test_analyzer_columnar import clock_items, messy_items, write

    items = {"synthetic": lambda: S.messages(_spec()), "clock": clock_items, "messy": messy_items}[case]()
    path = write(tmp_path / "raw" / "stream.msgpack", items)
    monkeypatch.setattr(SL, "MARGIN_S", 0.5)
    monkeypatch.setattr(columnar.gpu_store, "ROW_GROUP", 64)  # many row groups: stretches read a few
    monkeypatch.setattr(columnar.parquet_parts, "PART_GROUPS", 3)  # in parts: stretches cross them
    monkeypatch.setattr(columnar.gpu_store, "HOST_ROW_GROUP", 16)  # the host's too
    opts = pipeline.Options(quality=False, idle_baseline=True, slab_s=slab_s)
    dec, _ = columnar.decode_file(path, keep_copy=False)
    memory = pipeline.analyze(columnar.to_batch(dec), opts)
    lazy_batch, _ = columnar.load_batch(path)
    assert lazy_batch.source is not None and (tmp_path / "raw" / "columns" / "gpu").is_dir()
    assert max(len(f["parts"]) for f in lazy_batch.source.files) > 1
    lazy = pipeline.analyze(lazy_batch, opts)
    assert _rows(lazy) == _rows(memory)
    assert [r["gpu_energy_j"] for r in lazy.results] == [r["gpu_energy_j"] for r in memory.results]
    for rid in memory.request_json:
        assert json.dumps(lazy.request_json[rid], sort_keys=True, default=str) == \
            json.dumps(memory.request_json[rid], sort_keys=True, default=str)
    for name in ("gpu_samples", "host_samples"):
        m, z = getattr(memory, name), getattr(lazy, name)
        assert m.rows == z.rows and list(m) == list(z)
        for col in ("t_ns", "seq"):
            assert m[col].tolist() == z[col].tolist()
    for tm, tz in zip(memory.timelines, lazy.timelines):
        assert np.array_equal(tm["t_s"], tz["t_s"]) and np.array_equal(tm["power_w"], tz["power_w"], equal_nan=True)


def test_a_long_recording_is_read_a_slab_at_a_time(tmp_path, monkeypatch):
    """Memory follows the slab, not the recording: analysing a recording ten slabs long never holds
    more GPU rows at once than a slab and its margins (plus a row group per GPU), nor more host rows
    than a slab's (plus a row group at each end), while every request's energy is the exact one."""
    from tests.test_analyzer_columnar import write

    reqs = [S.Req(0.3 + 0.8 * k, 0.9 + 0.8 * k, run=k, chunk_s=[0.1]) for k in range(48)]
    spec = S.Spec(duration_s=40.0, rate_hz=50.0, gpus=[S.Gpu(S.constant(150.0)), S.Gpu(S.constant(70.0))],
                  requests=reqs)
    path = write(tmp_path / "raw" / "stream.msgpack", S.messages(spec))
    monkeypatch.setattr(SL, "MARGIN_S", 0.5)
    monkeypatch.setattr(columnar.gpu_store, "ROW_GROUP", 64)
    monkeypatch.setattr(columnar.parquet_parts, "PART_GROUPS", 4)
    monkeypatch.setattr(columnar.gpu_store, "READ_AHEAD_S", 4.0)
    monkeypatch.setattr(columnar.gpu_store, "HOST_ROW_GROUP", 16)
    data, _ = columnar.load_batch(path)
    total = sum(g.meta["samples"] for g in data.gpus)
    a = pipeline.analyze(data, pipeline.Options(quality=False, slab_s=4.0))
    for rid in a.request_json:  # as outputs.write_all writes them: in time order
        a.request_json[rid]
    list(a.gpu_samples.pieces())
    list(a.host_samples.pieces())
    slab_rows = 2 * 50 * (4.0 + 0.6 + 2 * 0.5 + 2 * columnar.gpu_store.PAD_NS / 1e9)
    assert 0 < data.source.most_rows <= slab_rows + 2 * 64 and data.source.most_rows < total / 4
    # the host's rows (sampled with the GPUs here): read by stretch too, the whole table never held
    host_total = data.host.meta["samples"]
    assert data.host.t_ns.size == 0 and host_total == 50 * 40
    assert 0 < data.source.host_file.most_rows <= slab_rows / 2 + 2 * 16 < host_total / 4
    assert [r["cpu_energy_j"] for r in a.results] == [r["cpu_energy_j"] for r in pipeline.analyze(
        SL.materialise(data), pipeline.Options(quality=False, slab_s=4.0)).results]
    for row in a.results:
        assert row["gpu_energy_j"] == pytest.approx(220.0 * 0.6, rel=1e-6)
    # the row group each GPU file keeps decoded for the next stretch holds its own buffers, not those
    # of the whole read it came from; of the file's parts (a footer each), one is open: the last read's
    store = data.source
    for f in store.files:
        reader = store._file(f)
        g, names, kept = reader._kept
        assert len(f["parts"]) > 2 and reader._open[0] == len(f["parts"]) - 1
        alone = reader._part(g // 4).read_row_group(g % 4, columns=list(names), use_threads=False)
        assert kept.num_rows == f["groups"][g][2] and kept.get_total_buffer_size() == alone.get_total_buffer_size()


def _host_cut(items, gap: tuple[float, float], since_s: float) -> list:
    """The messages with no host sample in ``gap`` (s) and a second watched process from ``since_s`` on."""
    out = []
    for topic, p in items:
        if topic == M.TEL_HOST:
            t = (p["t"] - S.T0_NS) / 1e9
            if gap[0] <= t < gap[1]:
                continue
            if t >= since_s:
                p = {**p, "procs": {**p["procs"], "vllm": {"pid": 7, "cpu_pct": 5.0, "rss_mib": 100.0 + t}}}
        out.append((topic, p))
    return out


def test_rows_made_slab_by_slab_have_the_whole_runs_columns(tmp_path, monkeypatch):
    """A request's row is made when its slab is measured: a slab that saw no host sample, and a process
    watched only from a later slab on, still leave every row the whole run's columns, in one slab's
    order (None where its own slab had none); and the rows keep the requests' order, a request without
    a window among them, in the table too (where its runs are read as slices)."""
    import dataclasses

    from tests.test_analyzer_columnar import write

    spec = _spec()
    spec.requests[3] = dataclasses.replace(spec.requests[3], end=False)
    monkeypatch.setattr(SL, "MARGIN_S", 0.5)
    monkeypatch.setattr(columnar.gpu_store, "HOST_ROW_GROUP", 16)  # a stretch's processes: those of its rows
    # slab [6, 9) reads [5.5, 12.4]: no host sample; vllm only in the stretches from slab [12, 15) on
    path = write(tmp_path / "raw" / "stream.msgpack", _host_cut(S.messages(spec), (4.5, 13.5), 15.0))
    opts = pipeline.Options(quality=False)
    sliced = pipeline.analyze(columnar.load_batch(path)[0], dataclasses.replace(opts, slab_s=3.0))
    whole = pipeline.analyze(columnar.load_batch(path)[0], opts)
    assert [list(r) for r in sliced.results] == [list(r) for r in whole.results]
    assert "proc_vllm_rss_peak_mib" in whole.columns and sliced.columns == whole.columns
    vllm = [r["proc_vllm_rss_peak_mib"] for r in sliced.results]
    assert vllm[:7] == [None] * 7 and None not in vllm[-2:]
    assert whole.results[4]["cpu_util_avg"] is not None and sliced.results[4]["cpu_util_avg"] is None
    plain = pipeline.analyze(stream.build(S.messages(spec)), dataclasses.replace(opts, slab_s=3.0))
    assert plain.results[3]["status"] == "incomplete"
    assert [r._i for r in plain.results] == list(range(len(spec.requests)))  # (rows.Row: its table row)


def test_freed_memory_is_handed_back_on_linux():
    """analyzer.memory finds glibc's malloc_trim on Linux (else the peak-memory figures of a long run
    climb to a high-water mark no live data explains); giving back never changes a result."""
    import sys

    from analyzer import memory

    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert memory._TRIM is not None
    memory.give_back()


def test_sample_tables_join_slabs_into_row_groups_with_the_same_rows(measured, tmp_path, monkeypatch):
    """The sample tables' pieces (a slab's each) are joined into row groups of about ROW_GROUP_BYTES (a
    row group a slab kept ~15 KiB of writer metadata each until the file closed): fewer row groups, the
    same rows, in the same order, as one row group a piece."""
    import dataclasses

    import pyarrow.parquet as pq

    from analyzer import outputs
    from shared.batch import BatchDir

    batch, _, _, _ = measured
    opts = pipeline.Options(quality=False, idle_baseline=True, slab_s=3.0, jobs=1)
    got = {}
    for name, size in (("apart", 1), ("joined", 1 << 30)):
        monkeypatch.setattr(outputs, "ROW_GROUP_BYTES", size)
        a = pipeline.analyze(dataclasses.replace(batch), opts)
        bd = BatchDir(tmp_path / name)
        outputs.write_all(a, bd, make_plots=False)
        got[name] = {t: (pq.read_metadata(bd.raw / f"{t}.parquet").num_row_groups, pq.read_table(bd.raw / f"{t}.parquet"))
                     for t in ("samples_gpu", "samples_host")}
    for t in ("samples_gpu", "samples_host"):
        (apart, whole_a), (joined, whole_j) = got["apart"][t], got["joined"][t]
        assert apart > 3 and joined == 1, t
        assert whole_a.schema == whole_j.schema and whole_a.schema.metadata == whole_j.schema.metadata, t
        assert _plain(whole_a).equals(_plain(whole_j)), t  # (each piece's text dictionary: compared as text)


def _plain(table):
    import pyarrow as pa

    return pa.table({n: c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c
                     for n, c in zip(table.column_names, table.columns)}).to_pandas()
