"""Slabs measured on every core: what one slab computes, run in this process or in worker processes.

A long recording's slabs are independent given what the parent sends with each (the windows of its
context, the idle power): ``runner`` maps a slab function over stretches of time, in this process or
in a pool of workers, and yields the results in task order, so the caller (pipeline._measure,
_level_energy) combines them exactly as in one process, bit for bit. Each worker reads the columnar
copy's GPU files itself (its own analyzer.gpu_store.Store, sent once without its caches or the
requests): nothing of a slab's samples crosses a pipe, only its results. Workers start by "spawn"
(all Windows has) and import this module and what a slab reads with; they ignore Ctrl-C (it reaches
every process of the console: the parent stops the pool) and exit as soon as the parent does, however
it ends (SIGTERM, a crash), so none is left behind.
"""
from __future__ import annotations

import copy
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from analyzer import energy as E
from analyzer import gpu_store
from analyzer import slabs as SL
from analyzer.stream import BatchData

# (lo_s, hi_s, args): fn(the telemetry of [lo_s, hi_s], *args)
Task = tuple[float, float, tuple]
Run = Callable[[Callable[..., Any], Iterable[Task]], Iterator[Any]]


def jobs(wanted: int | None, source: SL.Source, slabs: list[SL.Slab]) -> int:
    """How many processes measure the slabs: workers only for more than one slab read from the
    columnar copy on disk (an in-memory source stays in this process); ``wanted`` None: one a core."""
    if len(slabs) < 2 or not isinstance(source, gpu_store.Store):
        return 1
    n = (os.cpu_count() or 1) if wanted is None else wanted
    return max(1, min(n, len(slabs)))


@contextmanager
def runner(source: SL.Source, n: int) -> Iterator[Run]:
    """``run(fn, tasks)``: fn(source.between(lo_s, hi_s), *args) per task, in task order, read when
    its result is taken (in this process: one stretch held at a time); in ``n`` workers when n > 1."""
    if n <= 1:
        yield lambda fn, tasks: (fn(source.between(lo, hi), *args) for lo, hi, args in tasks)
        return
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                               initargs=(portable(source),))
    try:
        yield lambda fn, tasks: _gather(pool, fn, tasks)
    except BaseException:  # an error, Ctrl-C: the other slabs are not waited for
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """The pool's workers ended now, busy or not (a slab may take seconds)."""
    stop = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if stop is not None:
        stop()
        return
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        p.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _gather(pool: ProcessPoolExecutor, fn: Callable[..., Any], tasks: Iterable[Task]) -> Iterator[Any]:
    futures: list[Future] = [pool.submit(_run, fn, lo, hi, args) for lo, hi, args in tasks]
    try:
        for f in futures:
            yield f.result()  # a worker's exception is raised here as it was raised there
    finally:
        for f in futures:
            f.cancel()


def portable(store: gpu_store.Store) -> gpu_store.Store:
    """The store as a worker gets it: without the stretch and row groups it keeps decoded, the requests
    and the host's whole series (a stretch's host rows come from its tables, store.dec)."""
    out = copy.copy(store)
    out._cache, out._last_group = None, {}
    b = store.base
    host = None if b.host is None else dataclasses.replace(
        b.host, t_ns=b.host.t_ns[:0], seq=b.host.seq[:0], values={k: v[:0] for k, v in b.host.values.items()})
    out.base = dataclasses.replace(b, requests=[], host=host, procs={}, rapl={}, source=None)
    return out


_store: gpu_store.Store | None = None  # a worker's reader of the copy


def _start(store: gpu_store.Store) -> None:
    global _store
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    _store = store


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # ready when the parent has ended
    os._exit(1)


def _run(fn: Callable[..., Any], lo_s: float, hi_s: float, args: tuple) -> Any:
    return fn(_store.between(lo_s, hi_s), *args)


# -- what a slab computes (in a worker or here) ---------------------------------------------------------
def measure_slab(tele: BatchData, s: SL.Slab, counted: list[str], w: E.Window, mid: np.ndarray, mine: np.ndarray,
                 idle_until: float | None, idle: dict[str, float | None], cpu_tdp_w: float) -> tuple[dict, dict]:
    """One slab: ({(GPU key or None for the host, column): values of the slab's windows}, {GPU key:
    its power over the slab's own stretch: whole on one slab, the min/max envelope on more}). ``w``,
    ``mid``: the windows of the slab's context (its own and every one overlapping them: concurrent
    requests share energy); ``mine``: where the slab's own windows are among them."""
    origin = tele.origin_ns
    gpus = {g.key: g for g in tele.gpus}
    cols: dict[tuple, np.ndarray] = {}
    shapes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in counted:
        g = gpus[key]
        got = E.gpu_columns(g, origin, tele.src_seqs.get(g.src, np.zeros(0, dtype=np.int64)), w,
                            idle_until if s.whole else None, mid, idle_w=idle[key])
        cols.update({(key, c): v[mine] for c, v in got.items()})
        t_s, p_w = E.seconds(g, origin), g.values["power_mw"] / 1000.0
        if s.whole:
            shapes[key] = (t_s, p_w)
        else:
            own = (t_s >= s.own_lo_s) & (t_s < s.own_hi_s)
            shapes[key] = SL.envelope(t_s[own], p_w[own])
    got = E.host_columns(tele.host, tele.procs, tele.rapl, origin, tele.src_seqs, w, cpu_tdp_w)
    cols.update({(None, c): np.asarray(v)[mine] for c, v in got.items()})
    return cols, shapes


def energy_parts(tele: BatchData, counted: set[str], a: np.ndarray, b: np.ndarray,
                 cpu_tdp_w: float) -> dict[str, np.ndarray]:
    """GPU energy (every counted GPU of ``tele`` summed) and the host's CPU energy, RAPL and TDP, over
    windows [a, b]."""
    gpus = [g for g in tele.gpus if g.key in counted]
    w = E.Window(a, b)
    out: dict[str, np.ndarray] = {}
    if gpus:
        cols = [E.gpu_columns(g, tele.origin_ns, tele.src_seqs.get(g.src, np.zeros(0, dtype=np.int64)), w)
                for g in gpus]
        out["gpu_j"] = np.sum([c["energy_j"] for c in cols], axis=0)
        out["gpu_unc_j"] = np.sum([c["energy_uncertainty_j"] for c in cols], axis=0)
    host = E.host_columns(tele.host, tele.procs, tele.rapl, tele.origin_ns, tele.src_seqs, w, cpu_tdp_w)
    out["rapl"], out["approx"] = host["cpu_energy_j_rapl"], host["cpu_energy_j_approx"]
    return out
