"""The live analyzer's memory over a long run, in process (tracemalloc; flat with hours means bounded
memory over a day):

- the open batch (analyzer.live.LiveBuffer with its spool, analyzer.live_spool): G GPUs at 100 Hz, the
  host at 10 Hz, a heartbeat a second and a request every 2 s, all inside one open batch, fed as fast
  as they can be made; the memory held, the messages held and the spool's bytes at checkpoints, beside
  what the message list the live analyzer used to keep would hold (its bytes per message measured here);
- the per-request rows and page state (analyzer.live_rows.RowTracker, analyzer.live_state.LiveState):
  one simulated GPU at 100 Hz with its energy counter, the host at 10 Hz, one 2-s request every 10 s;
  the time to compute each request's row and the memory both hold.

    python -m bench --only live --quick --no-write
    python -m bench.bench_live --batch-hours 4 --gpus 2     # the open-batch figures in BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from analyzer import pipeline
from analyzer.live import LiveBuffer
from analyzer.live_rows import RowTracker
from analyzer.live_spool import Spool
from analyzer.live_state import LiveState
from shared import messages as M


def _feed(hours: float, checkpoints: list[float]) -> dict:
    tel, col = M.Stamper("telemetry@bench"), M.Stamper("collector@bench")
    tracker, state = RowTracker(pipeline.Options(quality=False)), LiveState()
    t0, wall0 = 10**12, 1_790_000_000 * 10**9
    row_s: list[float] = []
    marks: list[dict] = []
    energy_mj, k_hz = 0.0, 100
    n = int(hours * 3600 * k_hz)
    next_mark = 0
    tracemalloc.start()
    try:
        def send(stamper, topic, body, t_s):
            t = t0 + int(t_s * 1e9)
            p = stamper.stamp(body, t=t, wall=wall0 + (t - t0))
            tracker.feed(topic, p, t_s)
            state.on_message(topic, p)

        for k in range(n):
            t = k / k_hz
            busy = (t % 10.0) >= 1.0 and (t % 10.0) < 3.0
            w = 250.0 if busy else 60.0
            energy_mj += w * 1000 / k_hz
            send(tel, M.TEL_GPU, {"gpu": 0, "uuid": "GPU-bench", "power_mw": w * 1000, "power_kind": "sim",
                                  "energy_mj": math.floor(energy_mj / 5000) * 5000, "simulated": True}, t)
            if k % 10 == 0:
                send(tel, M.TEL_HOST, {"cpu_pct": 20.0 + (30.0 if busy else 0.0)}, t)
            if k % 100 == 0:
                send(tel, M.TEL_HB, {"gpu_source": "sim", "simulated": True, "gpus": 1}, t)
            phase = k % (10 * k_hz)
            rid = f"b/{k // (10 * k_hz)}"
            if phase == 1 * k_hz:
                send(col, M.REQ_START, {"rid": rid, "model": "m", "task": "qa"}, t)
            elif phase == 3 * k_hz:
                send(col, M.REQ_END, {"rid": rid, "ok": True, "text": "x" * 500, "api": {"eval_count": 100}}, t)
            tracker.tick(t)
            due = tracker.due(t)
            if due:
                started = time.perf_counter()
                for row in tracker.rows(due):
                    state.on_row(row)
                row_s.append(time.perf_counter() - started)
            if next_mark < len(checkpoints) and t >= checkpoints[next_mark] * 3600:
                current, _ = tracemalloc.get_traced_memory()
                marks.append({"hours": checkpoints[next_mark], "mib": current / 2**20,
                              "telemetry": sum(len(q) for q in tracker.telemetry.values()), "rows": len(state.rows)})
                next_mark += 1
    finally:
        tracemalloc.stop()
    return {"rows": len(row_s), "row_ms": np.array(row_s) * 1e3, "marks": marks}


def _traffic(gpus: int, lookback_s: float):
    """(topic, body, t_s, stamper) forever, as a collector and one daemon send them (t_s from the start;
    the batch opens at ``lookback_s``): bodies shaped like the daemon's (bench_scale's)."""
    tel, col = M.Stamper("telemetry@bench"), M.Stamper("collector@bench")
    k = 0
    while True:
        t = k / 100
        for g in range(gpus):
            yield M.TEL_GPU, {"gpu": g, "uuid": f"GPU-bench-{g}", "name": "Bench GPU", "power_kind": "instant",
                              "power_mw": 150_000.0 + 100 * (k % 50), "energy_mj": 1500 * k, "util_gpu_pct": 80.0,
                              "util_mem_pct": 30.0, "mem_used_mib": 4000.0 + g, "mem_total_mib": 24000.0,
                              "temp_c": 60.0 + (k % 100) / 10, "sm_clock_mhz": 1800.0, "pstate": "P0"}, t, tel
        if k % 10 == 0:
            yield M.TEL_HOST, {"cpu_pct": 25.0 + (k % 7), "cpu_pct_per_core": [25.0] * 8, "mem_used_mib": 8000.0,
                               "mem_total_mib": 32000.0, "cpu_count": 8, "disk_read_b": 10 * k, "disk_write_b": 20 * k,
                               "rapl_uj": {"intel-rapl:0/package-0": 350_000 * k},
                               "procs": {"ollama": {"pid": 42, "pids": [42], "cpu_pct": 10.0, "rss_mib": 500.0}}}, t, tel
        if k % 100 == 0:
            yield M.TEL_HB, {"gpu_source": "nvml", "gpus": gpus, "uptime_s": t}, t, tel
        if k == int(lookback_s * 100):
            yield M.BATCH_START, {"batch": "bench", "backend": "ollama", "models": {"m": {"family": "bench"}}}, t, col
        phase, rid = k % 200, f"bench/m/0/short/{k // 200}"
        if t > lookback_s and phase == 40:
            yield M.REQ_START, {"rid": rid, "model": "m", "task": "qa", "load": "short", "prompt": "Say something.",
                                "params": {"temperature": 0.7}}, t, col
        elif t > lookback_s and phase == 50:
            yield M.REQ_FIRST_TOKEN, {"rid": rid, "kind": "content"}, t, col
        elif t > lookback_s and phase == 160:
            yield M.REQ_END, {"rid": rid, "ok": True, "text": "word " * 50, "api": {"eval_count": 50},
                              "client": {"latency_s": 1.2, "first_token_s": 0.1, "chunks": 50}}, t, col
        k += 1


def _message_bytes(gpus: int, n: int = 20_000) -> float:
    """Bytes one bus message costs held as a Python map (what the message list of an open batch held)."""
    gen = _traffic(gpus, 0.0)
    tracemalloc.start()
    try:
        held = [(topic, st.stamp(body, t=int(t_s * 1e9), wall=0)) for topic, body, t_s, st in
                (next(gen) for _ in range(n))]
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del held
    return current / n


def open_batch(hours: float, checkpoints: list[float], gpus: int = 2, lookback_s: float = 120.0) -> dict:
    """Feed one open batch of ``hours`` into LiveBuffer (spooling to a temp directory); checkpoints in hours."""
    root = Path(tempfile.mkdtemp(prefix="bench-live-"))
    marks: list[dict] = []
    t0 = 10**12
    started = time.process_time()
    tracemalloc.start()
    try:
        buf = LiveBuffer(lookback_s=lookback_s, grace_s=1.0, spool=Spool(root))
        end_s, next_mark, fed = lookback_s + hours * 3600, 0, 0
        for topic, body, t_s, st in _traffic(gpus, lookback_s):
            if t_s > end_s:
                break
            t = t0 + int(t_s * 1e9)
            buf.feed(topic, st.stamp(body, t=t, wall=t), t_s)
            fed += 1
            if next_mark < len(checkpoints) and t_s - lookback_s >= checkpoints[next_mark] * 3600:
                current, _ = tracemalloc.get_traced_memory()
                spooled = buf.batch.messages if buf.batch is not None else 0
                marks.append({"hours": checkpoints[next_mark], "mib": current / 2**20, "held": buf.held(),
                              "spooled": spooled, "spool_mib": buf.batch.path.stat().st_size / 2**20})
                next_mark += 1
        _, peak = tracemalloc.get_traced_memory()
        buf.close()
    finally:
        tracemalloc.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {"marks": marks, "peak_mib": peak / 2**20, "fed": fed, "cpu_s": time.process_time() - started}


def open_batch_section(hours: float, checkpoints: list[float], gpus: int) -> str:
    per_msg = _message_bytes(gpus)
    r = open_batch(hours, checkpoints, gpus)
    lines = ["### the open batch (`analyzer --live` between batch.start and batch.end)", "",
             f"`analyzer.live.LiveBuffer` fed one open batch of {hours:g} h: {gpus} GPUs at 100 Hz, host 10 Hz, "
             "heartbeat 1 Hz, a request every 2 s (start, first token, end), after 120 s of look-back "
             f"({r['fed']:,} messages, {r['cpu_s']:.0f} s CPU with tracemalloc on). The open batch goes to a spool "
             "file (`analyzer.live_spool`); memory holds the look-back per source only. The message list the live "
             f"analyzer held before this change costs {per_msg / 1024:.2f} KB per message (tracemalloc, these "
             "messages); its column is that times the messages of the batch so far.", "",
             "| hours into the batch | memory held (tracemalloc, MiB) | messages held | messages spooled | "
             "spool file (MiB) | the message list before (MiB, computed) |",
             "|---|---|---|---|---|---|"]
    for m in r["marks"]:
        lines.append(f"| {m['hours']:g} | {m['mib']:.1f} | {m['held']:,} | {m['spooled']:,} | {m['spool_mib']:,.0f} | "
                     f"{m['spooled'] * per_msg / 2**20:,.0f} |")
    lines += ["", f"Peak traced memory over the whole feed: {r['peak_mib']:.1f} MiB. At batch.end the spool is "
              "read by the batch analyzer's streaming reader (`analyzer.columnar.decode_file` → `to_batch`), so the "
              "analysis costs what `analyzer --batch` costs on the same recording (see scale)."]
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> str:
    batch_hours = 0.25 if quick else 4.0
    batch_marks = [0.05, 0.1, 0.25] if quick else [0.25, 1.0, 2.0, 4.0]
    return rows_section(quick) + "\n" + open_batch_section(batch_hours, batch_marks, gpus=2)


def rows_section(quick: bool = False) -> str:
    hours = 0.25 if quick else 1.0
    checkpoints = [0.05, 0.1, 0.2] if quick else [0.1, 0.25, 0.5, 0.75, 0.99]
    r = _feed(hours, checkpoints)
    lines = ["## live rows and page state", "", "### per-request rows and the page", "",
             f"`analyzer.live_rows.RowTracker` + `analyzer.live_state.LiveState` fed {hours:g} h of one simulated GPU "
             "at 100 Hz (energy counter refreshing every 50 ms), host 10 Hz, one 2-s request every 10 s "
             f"({r['rows']} rows).", "",
             f"- time to compute a request's row once its telemetry is in: median {np.median(r['row_ms']):.1f} ms, "
             f"p99 {np.percentile(r['row_ms'], 99):.1f} ms (with tracemalloc on, which slows Python several-fold; "
             "2 shared cores)", "",
             "| hours fed | memory held (tracemalloc, MiB) | telemetry messages held | rows on the page |",
             "|---|---|---|---|"]
    for m in r["marks"]:
        lines.append(f"| {m['hours']:g} | {m['mib']:.1f} | {m['telemetry']:,} | {m['rows']} |")
    lines.append("")
    lines.append("Flat across hours: memory is bounded by time (the context before the oldest running request, "
                 "5 minutes of page points, the last 1000 rows), not by the length of the run.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_live", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-hours", type=float, default=4.0, help="length of the open batch (default 4)")
    ap.add_argument("--gpus", type=int, default=2)
    args = ap.parse_args(argv)
    marks = sorted({h for h in (0.25, 1.0, 2.0, 4.0, 8.0, 24.0) if h < args.batch_hours} | {args.batch_hours})
    print(open_batch_section(args.batch_hours, marks, args.gpus))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
