"""A long campaign through ``python -m analyzer --batch``: time and peak memory against the recording's length.

The bench writes synthetic recordings (G GPUs × H hours, 100 Hz GPU samples, 10 Hz host, 1 Hz heartbeat,
one request every 2 s) through shared.recording, then runs the analyzer on each as a user would (a
subprocess; peak RSS of it and its slab workers together) three times: first from stream.msgpack alone (it
writes the columnar copy), then again (it reads the copy), then with ``--jobs 2`` (slabs on two processes). Power is piecewise constant per GPU (it changes between requests,
never inside one) and the energy counter is fresh on every sample, so every request's energy is known
exactly: the table shows the largest relative error against it.

    python -m bench --only scale --quick --no-write      # a few minutes of recording
    python -m bench.bench_scale --sizes 1x2,4x2,1x8      # the figures in BENCHMARKS.md (hours x GPUs)

Recordings go to the system temp directory and are deleted after each size.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import psutil

from shared import messages as M
from shared.recording import RecordingWriter

ROOT = Path(__file__).resolve().parent.parent
T0_NS = 5_000_000_000_000
WALL0_NS = 1_790_000_000_000_000_000
PERIOD_S = 2.0                 # one request per period ...
REQ_A_S, REQ_B_S = 0.4, 1.6    # ... from 0.4 s to 1.6 s into it; power changes only at period boundaries
RATE_HZ = 100


def power_w(gpu: int, k: int) -> float:
    """GPU ``gpu``'s constant power during period ``k``."""
    return 90.0 + 35.0 * ((k + 2 * gpu) % 5)


def exact_energy_j(gpus: int, k: int) -> float:
    return sum(power_w(g, k) for g in range(gpus)) * (REQ_B_S - REQ_A_S)


def generate(root: Path, gpus: int, hours: float) -> tuple[Path, dict[str, float]]:
    """Write ``root/raw/stream.msgpack``; return (path, {rid: exact GPU energy, J})."""
    batch = root.name
    tel, col = M.Stamper("telemetry@bench"), M.Stamper("collector@bench")
    n = int(hours * 3600 * RATE_HZ)
    periods = int(hours * 3600 / PERIOD_S) - 1
    exact: dict[str, float] = {}
    cum_j = [0.0] * gpus

    def ns(t_s: float) -> int:
        return T0_NS + int(round(t_s * 1e9))

    def stamp(st, body, t_s):
        t = ns(t_s)
        return st.stamp(body, t=t, wall=WALL0_NS + (t - T0_NS))

    events: list[tuple[float, str, dict]] = [(0.0005, M.BATCH_START, {
        "batch": batch, "backend": "ollama", "planned": periods, "models": {"m": {"family": "bench"}},
        "cases": [{"prompt": "Say something.", "task": "qa", "load": "short"}]})]
    for k in range(1, periods):
        a, b = k * PERIOD_S + REQ_A_S, k * PERIOD_S + REQ_B_S
        rid = f"{batch}/m/0/short/{k}"
        exact[rid] = exact_energy_j(gpus, k)
        chunks = [ns(a + 0.1 + 0.02 * i) for i in range(50)]
        events += [(a, M.REQ_START, {"rid": rid, "model": "m", "task": "qa", "load": "short", "run": k, "case": 0,
                                     "prompt": "Say something.", "params": {"temperature": 0.7}}),
                   (a + 0.1, M.REQ_FIRST_TOKEN, {"rid": rid, "kind": "content"}),
                   (b, M.REQ_END, {"rid": rid, "ok": True, "text": "word " * 50,
                                   "api": {"eval_count": 50, "eval_duration_ns": 1_000_000_000},
                                   "client": {"latency_s": b - a, "first_token_s": 0.1, "first_chunk_s": 0.1,
                                              "chunks": 50, "chunk_t_ns": chunks}})]
    events.append((n / RATE_HZ, M.BATCH_END, {"batch": batch, "requests": periods - 1}))
    path = root / "raw" / "stream.msgpack"
    ei = 0
    with RecordingWriter(path, meta={"batch": batch}, flush_s=5.0) as w:
        for i in range(n):
            t = 0.003 + i / RATE_HZ
            while ei < len(events) and events[ei][0] <= t:
                et, topic, body = events[ei]
                w.write(topic, stamp(col, body, et))
                ei += 1
            k = int(t // PERIOD_S)
            for g in range(gpus):
                p = power_w(g, k)
                # the exact integral up to t (power changes only at k·PERIOD_S)
                start = k * PERIOD_S
                e_j = cum_j[g] + p * (t - max(start, 0.0))
                w.write(M.TEL_GPU, stamp(tel, {
                    "gpu": g, "uuid": f"GPU-bench-{g}", "name": "Bench GPU", "power_kind": "instant",
                    "power_mw": p * 1000.0, "energy_mj": int(round(e_j * 1000.0)), "util_gpu_pct": 80.0,
                    "util_mem_pct": 30.0, "mem_used_mib": 4000.0 + g, "mem_total_mib": 24000.0,
                    "temp_c": 60.0 + (i % 100) / 10, "sm_clock_mhz": 1800.0, "pstate": "P0"}, t))
            if i % 10 == 0:
                w.write(M.TEL_HOST, stamp(tel, {
                    "cpu_pct": 25.0 + (i % 7), "cpu_pct_per_core": [25.0] * 8, "mem_used_mib": 8000.0,
                    "mem_total_mib": 32000.0, "cpu_count": 8, "disk_read_b": 10 * i, "disk_write_b": 20 * i,
                    "rapl_uj": {"intel-rapl:0/package-0": int(35e6 * t)},
                    "procs": {"ollama": {"pid": 42, "pids": [42], "cpu_pct": 10.0, "rss_mib": 500.0}}}, t))
            if i % RATE_HZ == 0:
                w.write(M.TEL_HB, stamp(tel, {"gpu_source": "nvml", "gpus": gpus, "uptime_s": t}, t))
            # carry the exact integral to the next period boundary when one is crossed
            t_next = 0.003 + (i + 1) / RATE_HZ
            if int(t_next // PERIOD_S) != k:
                end = (k + 1) * PERIOD_S
                for g in range(gpus):
                    cum_j[g] += power_w(g, k) * (end - max(k * PERIOD_S, 0.0))
        for et, topic, body in events[ei:]:
            w.write(topic, stamp(col, body, et))
    return path, exact


def bare_iteration_s(path: Path) -> float:
    """The floor: msgpack.Unpacker over the file, nothing kept (CPU seconds: the machine may be shared)."""
    started = time.process_time()
    with open(path, "rb") as fh:
        for _ in msgpack.Unpacker(fh, raw=False, strict_map_key=False, max_buffer_size=64 << 20):
            pass
    return time.process_time() - started


def streaming_pass_s(path: Path) -> float:
    """CPU s of analyzer.columnar.decode_file alone (stream.msgpack to typed columns, all in memory), in
    a child process: done here, this process would grow to the recording's size, and a child started
    from a large parent is charged the parent's pages in its peak RSS (which skewed the figures)."""
    code = ("import sys, time; from pathlib import Path; from analyzer import columnar; t = time.process_time(); "
            "columnar.decode_file(Path(sys.argv[1]), keep_copy=False); print(time.process_time() - t)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_analyzer(batch: Path, jobs: int | None = None) -> tuple[float, float, float, float]:
    """(CPU s, wall s, peak RSS MiB of the largest process, peak RSS MiB of all its processes together) of
    one ``python -m analyzer --batch`` run. CPU is user + system of the analyzer and its slab workers (on a
    shared machine wall time says more about the neighbours); the OS gives the largest single peak, the
    sum over the process tree is sampled every 50 ms (slab workers run beside the parent)."""
    cmd = [sys.executable, "-m", "analyzer", "--batch", str(batch), "--no-plots", "--no-quality", "--no-progress",
           "--log-level", "warning", *(["--jobs", str(jobs)] if jobs else [])]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    total = _TreeRss(proc.pid)
    if hasattr(os, "wait4"):
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            total.sample()
            time.sleep(0.05)
        wall = time.perf_counter() - started
        rc = os.waitstatus_to_exitcode(status)
        rss = usage.ru_maxrss / 1024  # KiB on Linux: the largest of the analyzer and its waited-for workers
        cpu = usage.ru_utime + usage.ru_stime
        proc.returncode = rc
    else:  # pragma: no cover - Windows: no peak RSS from the OS here
        while proc.poll() is None:
            total.sample()
            time.sleep(0.05)
        rc, rss = proc.returncode, float("nan")
        cpu = wall = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if rc != 0:
        raise RuntimeError(f"analyzer failed on {batch} (exit {rc}): {err[-2000:]}")
    return cpu, wall, rss, max(total.peak_mib, rss if rss == rss else 0.0)


class _TreeRss:
    """The largest sum of RSS over a process and its descendants seen by ``sample``."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak_mib = 0.0

    def sample(self) -> None:
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak_mib = max(self.peak_mib, total / 2**20)


def worst_error(batch: Path, exact: dict[str, float]) -> float:
    # only the two cells kept: a day's rows as dicts would grow this process, and the next analyzer
    # started from it is charged its pages in its peak RSS
    with open(batch / "summary" / "results.csv", encoding="utf-8-sig", newline="") as fh:
        rows = {r["rid"]: {"gpu_energy_j": r["gpu_energy_j"]} for r in csv.DictReader(fh)}
    missing = set(exact) - set(rows)
    if missing:
        raise RuntimeError(f"{len(missing)} request(s) missing from results.csv, e.g. {sorted(missing)[0]}")
    return max(abs(float(rows[rid]["gpu_energy_j"]) / e - 1.0) for rid, e in exact.items())


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def measure(hours: float, gpus: int, tmp: Path) -> dict:
    root = tmp / f"experiments_{gpus}x{hours:g}h"
    started = time.perf_counter()
    path, exact = generate(root, gpus, hours)
    gen_s = time.perf_counter() - started
    messages = sum(1 for _ in msgpack.Unpacker(open(path, "rb"), raw=False, strict_map_key=False)) - 1
    bare = bare_iteration_s(path)
    decode_s = streaming_pass_s(path)
    first_s, first_wall, first_rss, first_total = run_analyzer(root)
    err = worst_error(root, exact)
    again_s, again_wall, again_rss, again_total = run_analyzer(root)
    two_s, two_wall, _, two_rss = run_analyzer(root, jobs=2)  # the copy again, slabs on two processes
    copy_bytes = dir_bytes(path.parent / "columns")  # analyzer.columnar.copy_dir
    gpu_hours = gpus * hours
    out = {"hours": hours, "gpus": gpus, "messages": messages, "requests": len(exact), "generate_s": gen_s,
           "stream_mib": path.stat().st_size / 2**20, "bare_s": bare, "decode_s": decode_s, "first_s": first_s, "first_wall": first_wall, "first_rss": first_total,
           "again_s": again_s, "again_wall": again_wall, "again_rss": again_total,
           "two_s": two_s, "two_wall": two_wall, "two_rss": two_rss, "worst_err": err,
           "stream_b_per_gpu_h": path.stat().st_size / gpu_hours, "copy_b_per_gpu_h": copy_bytes / gpu_hours}
    shutil.rmtree(root, ignore_errors=True)
    print(f"   {gpus} GPU x {hours:g} h: {out}", file=sys.stderr, flush=True)
    return out


def table(results: list[dict]) -> str:
    rows = ["| recording | messages | stream.msgpack (MiB) | bare msgpack iteration (s) | streaming pass alone (s) "
            "| first run: CPU (s) | ratio | wall (s) | peak RSS (MiB) | re-analysis: CPU (s) | wall (s) | peak RSS (MiB) "
            "| re-analysis `--jobs 2`: CPU (s) | wall (s) | peak RSS (MiB) | worst energy error "
            "| bytes / GPU-hour: recording | columnar copy |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['hours']:g} h × {r['gpus']} GPU | {r['messages']:,} | {r['stream_mib']:.0f} | {r['bare_s']:.1f} "
                    f"| {r['decode_s']:.1f} ({r['decode_s'] / r['bare_s']:.1f}×) "
                    f"| {r['first_s']:.1f} | {r['first_s'] / r['bare_s']:.1f}× | {r['first_wall']:.1f} | {r['first_rss']:.0f} "
                    f"| {r['again_s']:.1f} | {r['again_wall']:.1f} | {r['again_rss']:.0f} "
                    f"| {r['two_s']:.1f} | {r['two_wall']:.1f} | {r['two_rss']:.0f} | {r['worst_err']:.1e} "
                    f"| {r['stream_b_per_gpu_h'] / 1e6:.1f} MB | {r['copy_b_per_gpu_h'] / 1e6:.1f} MB |")
    return "\n".join(rows)


def compiled() -> None:
    """The analyzer's modules compiled to bytecode first, as an installed package's are: where the
    environment sets PYTHONDONTWRITEBYTECODE, every run would compile ~45 modules again (~0.2 s of a
    1-hour recording's 4-5 s) and the children still read the compiled files."""
    import compileall

    for package in ("analyzer", "shared"):
        compileall.compile_dir(ROOT / package, quiet=1)


def run(quick: bool = False, sizes: list[tuple[float, int]] | None = None) -> str:
    sizes = sizes or ([(0.05, 2)] if quick else [(0.25, 2)])
    compiled()
    tmp = Path(tempfile.mkdtemp(prefix="genai-power-scale-"))
    try:
        results = [measure(h, g, tmp) for h, g in sizes]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = ["## scale", "",
            "`python -m analyzer --batch DIR --no-plots --no-quality` on synthetic recordings (100 Hz per GPU, host "
            "10 Hz, a request every 2 s), peak RSS of the analyzer and its slab workers together; times are CPU seconds (user + system, workers "
            "included) and wall seconds. Ratio: the "
            "analyzer's time over a bare `msgpack.Unpacker` iteration of the same file; the streaming pass alone is "
            "analyzer.columnar.decode_file (stream.msgpack to typed columns). The first run reads stream.msgpack and "
            "writes the columnar copy (raw/columns/); the second reads the copy; the third reads it with "
            "`--jobs 2` (slabs measured by the analyzer and one worker).", "", table(results)]
    return "\n".join(text) + "\n"


def parse_sizes(text: str) -> list[tuple[float, int]]:
    out = []
    for part in text.split(","):
        h, _, g = part.strip().partition("x")
        out.append((float(h), int(g)))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.25x2", help="HOURSxGPUS,... (default %(default)s)")
    args = ap.parse_args()
    print(run(sizes=parse_sizes(args.sizes)))
