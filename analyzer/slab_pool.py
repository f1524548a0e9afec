"""Slabs measured on several cores (--jobs N): what one slab computes, run in this process or in worker processes.

A long recording's slabs are independent given what the parent sends with each (the windows of its
context, the idle power, its pieces of the load levels): ``runner`` maps a slab function over
stretches of time, in this process or in a pool of workers, and yields the results in task order, so
the caller (pipeline._measure) combines them exactly as in one process, bit for bit. Each worker reads
the columnar copy's GPU files itself (its own analyzer.gpu_store.Store, sent once without its caches or
the requests): nothing of a slab's samples crosses a pipe, only its results. Workers start by "spawn"
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
import pickle
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from analyzer import energy as E
from analyzer import gpu_store, memory
from analyzer import slabs as SL
from analyzer.stream import BatchData

# (lo_s, hi_s, args): fn(the telemetry of [lo_s, hi_s], *args)
Task = tuple[float, float, tuple]
Run = Callable[[Callable[..., Any], Iterable[Task]], Iterator[Any]]


def jobs(wanted: int | None, source: SL.Source, slabs: list[SL.Slab]) -> int:
    """How many processes measure the slabs (this one and workers): more than one only for more than
    one slab read from the columnar copy on disk (an in-memory source stays here); ``wanted`` None:
    one a core."""
    if len(slabs) < 2 or not isinstance(source, gpu_store.Store):
        return 1
    n = (os.cpu_count() or 1) if wanted is None else wanted
    return max(1, min(n, len(slabs)))


@contextmanager
def runner(source: SL.Source, n: int) -> Iterator[Run]:
    """``run(fn, tasks)``: fn(source.between(lo_s, hi_s), *args) per task, in task order, read when
    its result is taken (here: one stretch held at a time); when n > 1, by this process and n - 1
    workers, each taking runs of consecutive tasks (stretches read in time order share row groups)."""
    def here(fn: Callable[..., Any], task: Task) -> Any:
        return fn(source.between(task[0], task[1]), *task[2])

    if n <= 1:
        yield lambda fn, tasks: (here(fn, t) for t in tasks)
        return
    spawn = multiprocessing.get_context("spawn")
    # the store goes by a queue, written by its own thread: starting a worker writes only a few bytes to
    # it, so this process goes on measuring while the workers import (and a worker that dies starting
    # cannot hold up a write)
    handoff = spawn.Queue()
    handoff.cancel_join_thread()  # a copy no worker took must not hold up this process's exit
    store = pickle.dumps(portable(source), protocol=pickle.HIGHEST_PROTOCOL)
    for _ in range(n - 1):
        handoff.put(store)
    del store
    pool = ProcessPoolExecutor(n - 1, mp_context=spawn, initializer=_start, initargs=(handoff,))
    try:
        yield lambda fn, tasks: _gather(pool, n, fn, list(tasks), here)
    except BaseException:  # an error, Ctrl-C: the other slabs are not waited for
        _stop(pool)
        raise
    finally:
        handoff.close()
    pool.shutdown(wait=True)


def _gather(pool: ProcessPoolExecutor, n: int, fn: Callable[..., Any], tasks: list[Task],
            here: Callable[[Callable[..., Any], Task], Any]) -> Iterator[Any]:
    """The results in task order: runs of tasks handed to the workers (two each in hand, so none
    waits), and the next run taken here while they work; an error raised where its task comes."""
    size = max(1, min(RUN_TASKS, len(tasks) // (4 * n)))
    runs = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    outcome: dict[int, Future | list | Exception] = {}
    busy: set[Future] = set()
    given = 0
    try:
        for k in range(len(runs)):
            while True:
                while len(busy) < 2 * (n - 1) and given < len(runs):
                    outcome[given] = pool.submit(_run, fn, runs[given])
                    busy.add(outcome[given])
                    given += 1
                got = outcome.get(k)
                if got is not None and not (isinstance(got, Future) and not got.done()):
                    break
                if given < len(runs):  # this process takes the next run meanwhile
                    try:
                        outcome[given] = [here(fn, t) for t in runs[given]]
                    except Exception as exc:  # raised in its turn, as a worker's
                        outcome[given] = exc
                    given += 1
                else:
                    wait(busy, return_when=FIRST_COMPLETED)
                busy = {f for f in busy if not f.done()}
            got = outcome.pop(k)
            if isinstance(got, Exception):
                raise got
            yield from got.result() if isinstance(got, Future) else got  # a worker's error is raised here
    finally:
        for f in busy:
            f.cancel()


RUN_TASKS = 3  # consecutive tasks a worker takes at a time: few, so that the processes end together


def _stop(pool: ProcessPoolExecutor) -> None:
    """The pool's workers ended now, busy or not (a slab may take seconds)."""
    stop = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if stop is not None:
        stop()
        return
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        p.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def portable(store: gpu_store.Store) -> gpu_store.Store:
    """The store as a worker gets it: without the stretch and row groups it keeps decoded, the requests
    and the host's whole series (a stretch's host rows come from its tables, store.dec)."""
    out = copy.copy(store)  # (its open files and decoded row groups are not pickled: Store.__getstate__)
    b = store.base
    host = None if b.host is None else dataclasses.replace(
        b.host, t_ns=b.host.t_ns[:0], seq=b.host.seq[:0], values={k: v[:0] for k, v in b.host.values.items()})
    out.base = dataclasses.replace(b, requests=[], host=host, procs={}, rapl={}, source=None)
    return out


_store: gpu_store.Store | None = None  # a worker's reader of the copy


def _start(handoff: Any) -> None:
    global _store
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    memory.fix_mmap_threshold()  # (as the parent's: a slab's arrays handed back as they are freed)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    _store = pickle.loads(handoff.get())


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # ready when the parent has ended
    os._exit(1)


def _run(fn: Callable[..., Any], tasks: list[Task]) -> list[Any]:
    out = []
    for lo_s, hi_s, args in tasks:
        out.append(fn(_store.between(lo_s, hi_s), *args))
        memory.give_back()  # the slab's temporaries, freed (as the analyzer's process does after each)
    return out


# -- what a slab computes (in a worker or here) ---------------------------------------------------------
def measure_slab(tele: BatchData, s: SL.Slab, counted: list[str], w: E.Window, mid: np.ndarray, mine: np.ndarray,
                 idle_until: float | None, idle: dict[str, float | None], cpu_tdp_w: float,
                 level: tuple[float, float, np.ndarray, np.ndarray] | None = None) -> tuple[dict, dict, dict | None]:
    """One slab: ({(GPU key or None for the host, column): values of the slab's windows}, {GPU key:
    its power over the slab's own stretch: whole on one slab, the min/max envelope on more}, the load
    levels' pieces in the slab or None). ``w``, ``mid``: the windows of the slab's context (its own and
    every one overlapping them: concurrent requests share energy); ``mine``: where the slab's own
    windows are among them; ``level``: (lo_s, hi_s, a, b): the level pieces [a, b] and the stretch
    they are measured over (within the slab's: a view of it, as a fresh read of it would be)."""
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
            shapes[key] = SL.envelope(t_s[own], p_w[own], s.buckets)
    got = E.host_columns(tele.host, tele.procs, tele.rapl, origin, tele.src_seqs, w, cpu_tdp_w)
    cols.update({(None, c): np.asarray(v)[mine] for c, v in got.items()})
    levels = None
    if level is not None:
        lo_s, hi_s, a, b = level
        levels = energy_parts(SL.InMemory(tele).between(lo_s, hi_s), set(counted), a, b, cpu_tdp_w)
    return cols, shapes, levels


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
