"""Slabs measured in worker processes (analyzer.slab_pool): the same files byte for byte as in one
process, a worker's error raised as the same error, and no worker left once the analyzer has ended."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pickle
import psutil
import pytest

from analyzer import cli, columnar, pipeline, slab_pool, slabs as SL
from shared.batch import BatchDir
from tests import synth as S

ROOT = Path(__file__).resolve().parent.parent


def _spec() -> S.Spec:
    # a swept batch (load levels: their energies are measured by slab too), overlapping requests across
    # the cuts, a counter GPU and a power-only one with its own refresh, RAPL and the server's CPU
    reqs = [S.Req(1.5 + 1.3 * k, 1.5 + 1.3 * k + 2.2, run=k, chunk_s=[0.3, 0.5], sweep="concurrency",
                  sweep_level=float(1 + k // 6)) for k in range(16)]
    return S.Spec(duration_s=25.0, rate_hz=50.0, dither=True, rapl_w=20.0, server_cores=1.0, load={"swept": True},
                  gpus=[S.Gpu(S.constant(120.0)), S.Gpu(S.ramp(60.0, 3.0), refresh_s=0.1, counter=False)],
                  requests=reqs)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "columns" not in p.parts}


def test_workers_write_the_same_files_as_one_process(tmp_path):
    spec = _spec()
    first = S.write_batch(tmp_path / "jobs1" / spec.batch_id, spec)
    shutil.copytree(first.root, tmp_path / "jobs2" / spec.batch_id)  # one recording (its header has the time)
    got = {}
    for jobs in (1, 2):
        bd = BatchDir(tmp_path / f"jobs{jobs}" / spec.batch_id)
        data, _ = columnar.load_batch(bd.stream)
        opts = pipeline.Options(quality=False, idle_baseline=True, slab_s=3.0, progress=False, jobs=jobs)
        slabs = SL.plan(np.zeros(1), np.zeros(1), data.source.span_s(), opts.slab_s)
        assert slab_pool.jobs(jobs, data.source, slabs) == jobs and len(slabs) > 4
        analysis = cli.analyse_data(data, bd, opts, plots=False)
        assert analysis.load_curve and all(row["gpu_energy_j"] for row in analysis.load_curve)
        got[jobs] = (_files(bd.root), [r["gpu_energy_j"] for r in analysis.results])
    (one, e1), (two, e2) = got[1], got[2]
    assert e1 == e2 and all(e > 0 for e in e1)  # energies bit for bit
    assert sorted(one) == sorted(two) and any(name.endswith(".json") for name in one)
    assert [name for name in one if one[name] != two[name]] == []


def test_load_levels_measured_with_their_slabs_equal_each_piece_read_on_its_own(tmp_path, monkeypatch):
    """A level's pieces are measured from the read of the slab that holds them (a view of it): the same
    energies, bit for bit, as each piece's stretch read afresh from the copy by a store holding nothing
    (margins short enough that a piece's stretch is not its slab's)."""
    from analyzer import load_curve as LC

    monkeypatch.setattr(SL, "MARGIN_S", 0.5)
    bd = S.write_batch(tmp_path / "b", _spec())
    data, _ = columnar.load_batch(bd.stream)
    opts = pipeline.Options(quality=False, slab_s=3.0, progress=False)
    analysis = pipeline.analyze(data, opts)
    origin = data.source.base.origin_ns
    spans = {r.rid: ((r.start.t - origin) / 1e9, (r.end.t - origin) / 1e9) for r in data.requests}
    a, b = LC.level_windows(LC.groups(analysis.results, spans), spans)
    slabs = SL.plan(np.array([x for x, _ in spans.values()]), np.array([y for _, y in spans.values()]),
                    data.source.span_s(), opts.slab_s)
    owner, pa, pb, which = SL.pieces(a, b, slabs)
    assert len(slabs) > 4 and np.bincount(owner).max() > 1  # (levels over several slabs)
    want = {k: np.zeros(a.size) for k in ("gpu_j", "gpu_unc_j", "rapl")}
    for j in np.unique(which):
        sel = which == j
        fresh = columnar.load_batch(bd.stream)[0].source
        piece = fresh.between(float(pa[sel].min()) - SL.MARGIN_S, float(pb[sel].max()) + SL.MARGIN_S)
        got = slab_pool.energy_parts(piece, {g.key for g in data.gpus}, pa[sel], pb[sel], opts.cpu_tdp_w)
        for k, v in want.items():
            np.add.at(v, owner[sel], got[k])
    for name, key in (("gpu_energy_j", "gpu_j"), ("gpu_energy_uncertainty_j", "gpu_unc_j"), ("cpu_energy_j", "rapl")):
        assert [row[name] for row in analysis.load_curve] == [x if np.isfinite(x) else None for x in want[key]]
    assert (want["gpu_j"] > 0).all() and (want["rapl"] > 0).all()


def test_in_memory_and_single_slab_sources_stay_in_this_process(tmp_path):
    bd = S.write_batch(tmp_path / "b", _spec())
    dec, _ = columnar.decode_file(bd.stream, keep_copy=False)
    memory = SL.InMemory(columnar.to_batch(dec))
    lazy, _ = columnar.load_batch(bd.stream)
    many = SL.plan(np.zeros(1), np.zeros(1), lazy.source.span_s(), 3.0)
    assert slab_pool.jobs(None, memory, many) == 1
    assert slab_pool.jobs(None, lazy.source, many[:1]) == 1
    assert slab_pool.jobs(None, lazy.source, many) == min(os.cpu_count() or 1, len(many))
    assert slab_pool.jobs(64, lazy.source, many) == len(many)


def test_a_worker_gets_the_store_without_its_cached_samples(tmp_path):
    bd = S.write_batch(tmp_path / "b", _spec())
    data, _ = columnar.load_batch(bd.stream)
    store = data.source
    before = len(pickle.dumps(slab_pool.portable(store)))
    whole = store.between(-SL.INF, SL.INF)  # now held by the store: not sent to the workers
    assert len(pickle.dumps(slab_pool.portable(store))) < before + 64  # (a count or two grew)
    assert len(pickle.dumps(whole.gpus)) > 2 * (before - len(pickle.dumps(store.dec)))  # (what it would have sent)
    assert slab_pool.portable(store).base.requests == [] and data.requests
    part = slab_pool.portable(store).between(5.0, 9.0)
    assert [g.t_ns.tolist() for g in part.gpus] == [g.t_ns.tolist() for g in SL.InMemory(whole).between(5.0, 9.0).gpus]


def test_the_store_lets_go_of_its_last_stretch_once_a_pass_is_done(tmp_path):
    """A stretch and the files' decoded row groups are kept only while a pass over the slabs reads
    them: after the measure pass, and after the request files are built (RequestJson.release), none is
    (a slab of 8 GPUs' is ~100 MiB, else held beside the reports); a later read reads it again."""
    bd = S.write_batch(tmp_path / "b", _spec())
    data, _ = columnar.load_batch(bd.stream)
    store = data.source
    a = pipeline.analyze(data, pipeline.Options(quality=False, slab_s=3.0))
    assert not store.holding
    rid = next(iter(a.request_json))
    built = a.request_json[rid]
    assert store.holding and built["system_metrics_full"]
    a.request_json.release()
    assert not store.holding
    assert a.request_json[rid] == built


def test_a_worker_error_is_raised_as_in_one_process(tmp_path):
    spec = _spec()
    raised = {}
    for jobs in (1, 2):
        bd = S.write_batch(tmp_path / f"jobs{jobs}" / spec.batch_id, spec)
        data, _ = columnar.load_batch(bd.stream)
        for f in (bd.raw / "columns" / "gpu").iterdir():  # the copy damaged after it was opened
            f.write_bytes(b"not parquet")
        with pytest.raises(Exception) as exc:
            pipeline.analyze(data, pipeline.Options(quality=False, slab_s=3.0, jobs=jobs))
        raised[jobs] = (type(exc.value), str(exc.value).replace(str(bd.root), "BATCH"))
    assert raised[1] == raised[2]


def _block(tele, marks: str) -> None:
    """A slab that takes a minute: the worker is busy when the analyzer ends."""
    (Path(marks) / str(os.getpid())).write_text("")
    time.sleep(60)


def _drive(stream: str, marks: str) -> None:
    data, _ = columnar.load_batch(Path(stream))
    with slab_pool.runner(data.source, 3) as run:  # two workers (this process waits: two tasks only)
        list(run(_block, [(0.0, 5.0, (marks,)), (5.0, 10.0, (marks,))]))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_no_worker_outlives_the_analyzer(tmp_path, how):
    if how == "interrupt" and sys.platform == "win32":
        pytest.skip("SIGINT to one process is a POSIX thing")
    bd = S.write_batch(tmp_path / "b", _spec())
    marks = tmp_path / "marks"
    marks.mkdir()
    code = "import sys; from tests.test_analyzer_slab_pool import _drive; _drive(sys.argv[1], sys.argv[2])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(bd.stream), str(marks)], cwd=ROOT,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        workers = [int(p.name) for p in marks.iterdir()]
        assert len(workers) == 2, proc.stderr.read().decode() if proc.poll() is not None else "no workers"
        if how == "kill":  # as SIGTERM ends the analyzer: at once, nothing of it runs after
            proc.kill()
        else:  # Ctrl-C
            proc.send_signal(signal.SIGINT)
        proc.wait(30)
        deadline = time.monotonic() + 20
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(pid) for pid in workers)
        if how == "interrupt":
            assert b"KeyboardInterrupt" in proc.stderr.read()  # the parent's, raised where it waited
    finally:
        if proc.poll() is None:
            proc.kill()
