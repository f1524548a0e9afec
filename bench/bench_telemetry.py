"""Telemetry benchmarks: daemon sample rate/jitter/CPU with the simulated GPU, bus and recorder throughput.

    python -m bench --only telemetry --no-write
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zmq

from shared.bus import Inbox, Publisher, bind_pub, connect_sub
from shared.messages import TEL_GPU, TEL_HB
from shared.recording import RecordingWriter, read_recording

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gpu_body(i: int) -> dict:
    """A body shaped like a real slow-tick tel.gpu sample from an H100."""
    return {"gpu": 0, "uuid": "GPU-8f3c2a1e-0000-4b7d-9c1e-123456789abc", "name": "NVIDIA H100 80GB HBM3",
            "power_kind": "instant", "power_mw": 312_000 + i % 1000, "energy_mj": 9_876_543_210 + i,
            "util_gpu_pct": 97, "util_mem_pct": 41, "mem_used_mib": 71_234.5, "mem_total_mib": 81_559.0,
            "temp_c": 67, "sm_clock_mhz": 1980, "pstate": "P0", "procs": {41234: 70_912.0}}


def daemon_rate(gpu_hz: float, seconds: float) -> dict:
    """Run the daemon with --gpu sim at ``gpu_hz``; measure from its samples and heartbeats."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "telemetry", "--gpu", "sim", "--gpu-hz", str(gpu_hz), "--endpoint", endpoint,
           "--duration", str(seconds + 1.0), "--watch", "--no-rapl"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    sub = connect_sub(ctx, endpoint, ["tel.gpu", "tel.hb"])
    inbox, t_gpu, hbs = Inbox(), [], []
    ps = psutil.Process(proc.pid)
    cpu_start = wall_start = None
    try:
        end = time.monotonic() + seconds + 5
        while time.monotonic() < end and proc.poll() is None:
            msg = inbox.recv(sub, timeout_ms=100)
            if msg is None:
                continue
            topic, payload = msg
            if cpu_start is None:  # start measuring CPU once the daemon is up (skips interpreter start)
                cpu_start, wall_start = sum(ps.cpu_times()[:2]), time.monotonic()
            if topic == TEL_GPU:
                t_gpu.append(payload["t"])
            elif topic == TEL_HB:
                hbs.append(payload)
            try:
                cpu_now, wall_now = sum(ps.cpu_times()[:2]), time.monotonic()
            except psutil.Error:
                break
    finally:
        sub.close(linger=0)
        ctx.term()
        if proc.poll() is None:
            proc.wait(15)
    steady = [h["sources"]["gpu0"] for h in hbs[1:]] or [h["sources"]["gpu0"] for h in hbs]
    span_s = (t_gpu[-1] - t_gpu[0]) / 1e9 if len(t_gpu) > 1 else float("nan")
    return {
        "target_hz": gpu_hz,
        "achieved_hz": (len(t_gpu) - 1) / span_s if span_s > 0 else float("nan"),
        "jitter_p50_ms": statistics.median(s.get("jitter_ms_p50", float("nan")) for s in steady),
        "jitter_p99_ms": max(s.get("jitter_ms_p99", float("nan")) for s in steady),
        "dropped": hbs[-1]["sources"]["gpu0"]["dropped_ticks"] if hbs else None,
        "cpu_pct": 100 * (cpu_now - cpu_start) / (wall_now - wall_start) if cpu_start is not None else float("nan"),
    }


def _publisher_worker(endpoint: str, n: int, raw: bool, ready, go, send_s) -> None:
    """Child process: bind, publish probes until the subscriber is live, then ``n`` tel.gpu messages."""
    from shared.messages import encode

    ctx = zmq.Context()
    sock = bind_pub(ctx, endpoint)
    try:
        pub = Publisher(sock, "telemetry@bench")
        bodies = [_gpu_body(i) for i in range(1000)]
        while not go.is_set():
            pub.publish("tel.probe", {})
            ready.wait(0.01)
        start = time.perf_counter()
        if raw:  # pre-encoded payloads: what the transport alone can carry
            frames = [encode({"v": 1, "src": "x", "seq": i, "t": i, "wall": i, **b}) for i, b in enumerate(bodies)]
            for i in range(n):
                sock.send_multipart([b"tel.gpu", frames[i % 1000]])
        else:  # the daemon's path: stamp + msgpack + send
            for i in range(n):
                pub.publish(TEL_GPU, bodies[i % 1000])
        send_s.value = time.perf_counter() - start
        time.sleep(1.0)  # let the I/O thread flush before the socket closes
    finally:
        sock.close(linger=0)
        ctx.term()


def bus_throughput(n: int, raw: bool = False) -> tuple[float, int, float]:
    """Messages/s from a publisher process to this subscriber process over tcp loopback.

    ``raw=False``: Publisher.publish -> Inbox.drain (stamp, msgpack both ways, size
    check), the path of the daemon and of the tail/record/prometheus subscribers. ``raw=True``: pre-encoded frames, plain recv_multipart."""
    import multiprocessing as mp

    mpc = mp.get_context("spawn")  # portable: Windows has no fork
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    ready, go, send_s = mpc.Event(), mpc.Event(), mpc.Value("d", float("nan"))
    child = mpc.Process(target=_publisher_worker, args=(endpoint, n, raw, ready, go, send_s), daemon=True)
    child.start()
    ctx = zmq.Context()
    sub = connect_sub(ctx, endpoint, ["tel.gpu", "tel.probe"])
    inbox, received = Inbox(), 0
    try:
        while inbox.recv(sub, timeout_ms=10_000) is None:
            pass  # the child is starting
        sub.setsockopt(zmq.UNSUBSCRIBE, b"tel.probe")
        go.set()
        start = None
        while received < n:
            if raw:
                if not sub.poll(2000):
                    break
                while received < n:
                    try:
                        sub.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    received += 1
                    start = start or time.perf_counter()
            else:
                got = 0
                for topic, _ in inbox.drain(sub, timeout_ms=2000):
                    got += 1
                    if topic == TEL_GPU:
                        received += 1
                        start = start or time.perf_counter()
                if not got:
                    break
        elapsed = time.perf_counter() - (start or time.perf_counter())
    finally:
        sub.close(linger=0)
        ctx.term()
        child.join(15)
        if child.is_alive():
            child.kill()
    rate = (received - 1) / elapsed if elapsed > 0 else float("nan")
    return rate, n - received, n / send_s.value


def stage_rates(n: int) -> dict[str, float]:
    """Single-thread rates of the per-message steps (msgs/s): where a CPU's time goes."""
    from shared.messages import Stamper, decode, encode

    body, stamper = _gpu_body(1), Stamper("telemetry@bench")
    out = {}
    t = time.perf_counter()
    for _ in range(n):
        payload = stamper.stamp(body)
    out["stamp"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n):
        data = encode(payload)
    out["msgpack encode"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n):
        decode(data)
    out["msgpack decode"] = n / (time.perf_counter() - t)
    return out


def recorder_rate(n: int) -> tuple[float, int]:
    """Messages/s written through RecordingWriter (and checked by reading the file back)."""
    bodies = [_gpu_body(i) for i in range(1000)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "stream.msgpack"
        start = time.perf_counter()
        with RecordingWriter(path) as w:
            for i in range(n):
                payload = {"v": 1, "src": "telemetry@bench", "seq": i, "t": i, "wall": i, **bodies[i % 1000]}
                w.write(TEL_GPU, payload)
        elapsed = time.perf_counter() - start
        _, items, problem = read_recording(path)
        assert problem is None and len(items) == n, "recording did not read back intact"
        size = path.stat().st_size
    return n / elapsed, size // n


def run(quick: bool = False) -> str:
    seconds = 3.0 if quick else 8.0
    n_bus = 50_000 if quick else 200_000
    n_rec = 50_000 if quick else 200_000
    rows = [daemon_rate(hz, seconds) for hz in (100.0, 1000.0)]
    bus_rate, bus_lost, pub_rate = bus_throughput(n_bus)
    raw_rate, raw_lost, raw_pub_rate = bus_throughput(n_bus, raw=True)
    stages = stage_rates(n_bus // 2)
    rec_rate, rec_bytes = recorder_rate(n_rec)
    lines = [
        "## telemetry",
        "",
        f"Daemon with `--gpu sim` (simulated GPU), {seconds:.0f} s per rate; rate from the received tel.gpu "
        "timestamps, jitter from the heartbeats (median of per-second p50, max of per-second p99), CPU % of "
        "one core used by the daemon process (psutil).",
        "",
        "| target Hz | achieved Hz | jitter p50 ms | jitter p99 ms | dropped ticks | daemon CPU % |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['target_hz']:.0f} | {r['achieved_hz']:.1f} | {r['jitter_p50_ms']:.3f} | "
                     f"{r['jitter_p99_ms']:.3f} | {r['dropped']} | {r['cpu_pct']:.1f} |")
    lines += [
        "",
        "| throughput | value |",
        "|---|---:|",
        f"| bus, publisher process → subscriber process, Publisher.publish → subscriber receive + unpack ({n_bus:,} msgs, "
        f"tel.gpu-sized; target ≥ 100,000 msg/s) | {bus_rate:,.0f} msg/s ({bus_lost} lost) |",
        f"| … of which the publisher process alone (stamp + msgpack + send) | {pub_rate:,.0f} msg/s |",
        f"| bus transport only: pre-encoded frames, send_multipart → recv_multipart | "
        f"{raw_rate:,.0f} msg/s ({raw_lost} lost; sender alone {raw_pub_rate:,.0f} msg/s) |",
        *[f"| single step: {k} | {v:,.0f} msg/s |" for k, v in stages.items()],
        f"| RecordingWriter ({n_rec:,} msgs, {rec_bytes} B each) | {rec_rate:,.0f} msg/s |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
