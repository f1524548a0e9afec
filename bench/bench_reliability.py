"""Reliability under load: 1 kHz telemetry through daemon → bus → recorder → analyzer, with loss counted.

    python -m bench --only reliability --no-write [--quick]

Two measurements, both over real ZeroMQ sockets on 127.0.0.1 and real processes:

1. live: ``python -m telemetry --gpu sim --gpu-hz 1000`` (SIMULATED GPU) for a short wall time,
   recorded by ``python -m telemetry.record`` (which also records a small batch of request events
   published from here), then ``python -m analyzer --batch``. Loss = seq gaps in the recording.
2. replay: 600,000 synthetic tel.gpu samples (10 minutes' worth at 1 kHz, stamped 1 ms apart on a
   synthetic monotonic timeline, plus tel.host at 10 Hz and tel.hb at 1 Hz) and 300 requests,
   published through a real PUB socket at a paced rate into ``python -m telemetry.record``, then
   analysed by ``python -m analyzer --batch``. Loss = published − recorded (and seq gaps).
   A real daemon would need 10 minutes of wall time for this; the replay pushes the same number of
   messages through the same recorder and analyzer in seconds.
"""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from shared.batch import BatchDir
from shared.bus import Publisher, bind_pub
from shared.messages import BATCH_END, BATCH_START, REQ_END, REQ_START, TEL_GPU, TEL_HB, TEL_HOST, Stamper
from shared.recording import read_recording

ROOT = Path(__file__).resolve().parent.parent
T0_NS = 7_000_000_000_000  # synthetic monotonic origin of the replay


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ep() -> str:
    return f"tcp://127.0.0.1:{_free_port()}"


def _start(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen, timeout_s: float = 30) -> int:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def _wait_recording(path: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 200:
            return
        time.sleep(0.02)
    raise RuntimeError(f"the recorder wrote nothing to {path} within {timeout_s:g} s")


def _gaps(seqs: list[int]) -> int:
    return sum(b - a - 1 for a, b in zip(seqs, seqs[1:]) if b > a + 1)


def _analyze(batch: Path) -> tuple[float, list[dict]]:
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "analyzer", "--batch", str(batch), "--no-quality", "--no-plots",
                        "--no-progress", "--log-level", "warning"], cwd=ROOT, capture_output=True, text=True,
                       encoding="utf-8", errors="replace", timeout=600)
    took = time.monotonic() - started
    if r.returncode != 0:
        raise RuntimeError(f"analyzer failed ({r.returncode}): {r.stderr[-2000:]}")
    with open(batch / "summary" / "results.csv", encoding="utf-8-sig", newline="") as fh:
        return took, list(csv.DictReader(fh))


def _batch_start(batch_id: str) -> dict:
    return {"batch": batch_id, "config": {}, "backend": "bench", "base_url": "-", "models": {"bench": {}},
            "cases": [{"prompt": "q", "task": "qa", "load": "short", "lang": "en"}]}


def _req(rid: str, run: int) -> dict:
    return {"rid": rid, "model": "bench", "task": "qa", "load": "short", "run": run, "case": 0, "warmup": False,
            "prompt": "q", "params": {}}


def _req_end(rid: str, latency_s: float) -> dict:
    return {"rid": rid, "ok": True, "text": "a", "api": {"eval_count": 100},
            "client": {"latency_s": latency_s, "first_token_s": 0.01}}


def live(seconds: float, work: Path) -> dict:
    """The real daemon at 1 kHz → recorder process (+ events from here) → analyzer."""
    tel, ev = _ep(), _ep()
    batch = BatchDir(work / "live")
    daemon = _start("telemetry", "--gpu", "sim", "--gpu-hz", "1000", "--host-hz", "10", "--endpoint", tel,
                    "--watch", "--no-rapl", "--duration", str(seconds + 4), log=work / "daemon.log")
    rec = _start("telemetry.record", "--out", str(batch.stream), "--endpoint", tel, "--endpoint", ev,
                 "--duration", str(seconds + 2), log=work / "rec_live.log")
    ctx = zmq.Context()
    sock = bind_pub(ctx, ev)
    try:
        pub = Publisher(sock, "collector@bench")
        _wait_recording(batch.stream)
        time.sleep(0.3)  # the recorder's subscription to the events socket settles
        pub.publish(BATCH_START, _batch_start("live"))
        n_req = 0
        end = time.monotonic() + seconds
        while time.monotonic() + 1.0 < end:
            rid = f"live/bench/000-qa/short/{n_req}"
            a = time.monotonic()
            pub.publish(REQ_START, _req(rid, n_req))
            time.sleep(0.5)
            pub.publish(REQ_END, _req_end(rid, time.monotonic() - a))
            n_req += 1
            time.sleep(0.1)
        pub.publish(BATCH_END, {"batch": "live", "requests": n_req, "ok": n_req, "failed": 0, "skipped": 0,
                                "interrupted": False})
        _stop(rec)
        _stop(daemon)
    finally:
        sock.close(linger=0)
        ctx.term()
        for p in (rec, daemon):
            if p.poll() is None:
                p.kill()
    _, items, problem = read_recording(batch.stream)
    tel_items = [(t, p) for t, p in items if p["src"].startswith("telemetry@")]
    gpu_t = [p["t"] for t, p in tel_items if t == TEL_GPU]
    hbs = [p for t, p in tel_items if t == TEL_HB]
    span_s = (gpu_t[-1] - gpu_t[0]) / 1e9
    took, rows = _analyze(batch.root)
    return {"seconds": span_s, "gpu_samples": len(gpu_t), "gpu_hz": (len(gpu_t) - 1) / span_s,
            "messages": len(tel_items), "seq_gaps": _gaps([p["seq"] for _, p in tel_items]),
            "dropped_ticks": hbs[-1]["sources"]["gpu0"]["dropped_ticks"] if hbs else None,
            "requests": len(rows), "coverage_min": min(float(r["gpu_coverage"] or 0) for r in rows) if rows else None,
            "analyze_s": took, "problem": problem}


def replay(n_gpu: int, rate_msgs_s: float, work: Path) -> dict:
    """``n_gpu`` synthetic 1 kHz samples + host/hb + requests, paced through PUB → recorder → analyzer."""
    tel = _ep()
    batch = BatchDir(work / "replay")
    n_req = max(1, n_gpu // 2000)  # one 1 s request every 2 s of synthetic time
    rec = _start("telemetry.record", "--out", str(batch.stream), "--endpoint", tel, "--duration", "900",
                 log=work / "rec_replay.log")
    ctx = zmq.Context()
    sock = bind_pub(ctx, tel)
    tel_st, col_st = Stamper("telemetry@replay"), Stamper("collector@replay")
    sent = 0
    try:
        pub = Publisher(sock, "telemetry@replay")
        # wait until the recorder is subscribed: probes it will record (they are counted as sent)
        deadline = time.monotonic() + 20
        while not (batch.stream.exists() and batch.stream.stat().st_size > 200):
            if time.monotonic() > deadline:
                raise RuntimeError("the recorder never received the probe heartbeats")
            pub.send(TEL_HB, tel_st.stamp({"gpus": 1, "gpu_source": "sim", "simulated": True}, t=T0_NS - 10**9))
            sent += 1
            time.sleep(0.05)
        time.sleep(0.3)
        pub.send(BATCH_START, col_st.stamp(_batch_start("replay"), t=T0_NS))
        body = {"gpu": 0, "uuid": "SIM-GPU-0000", "name": "Simulated GPU", "power_kind": "sim", "simulated": True}
        started = time.monotonic()
        for i in range(n_gpu):
            t = T0_NS + i * 1_000_000
            pub.send(TEL_GPU, tel_st.stamp({**body, "power_mw": 100_000 + (i % 2000) * 50,
                                            "energy_mj": i * 100 + (i % 2000) ** 2 // 80}, t=t))
            sent += 1
            if i % 100 == 0:
                pub.send(TEL_HOST, tel_st.stamp({"cpu_pct": 50.0, "mem_used_mib": 8000.0}, t=t))
                sent += 1
            if i % 1000 == 0:
                pub.send(TEL_HB, tel_st.stamp({"gpus": 1, "gpu_source": "sim", "simulated": True}, t=t))
                sent += 1
            k, r = divmod(i, 2000)  # request k: [k*2 s + 0.5 s, k*2 s + 1.5 s]
            if k < n_req and r in (500, 1500):
                rid = f"replay/bench/000-qa/short/{k}"
                if r == 500:
                    pub.send(REQ_START, col_st.stamp(_req(rid, k), t=t + 1))
                else:
                    pub.send(REQ_END, col_st.stamp(_req_end(rid, 1.0), t=t + 1))
                sent += 1
            if i % 500 == 0:  # pace: never run ahead of the target rate
                ahead = sent / rate_msgs_s - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        pub.send(BATCH_END, col_st.stamp({"batch": "replay", "requests": n_req, "ok": n_req, "failed": 0,
                                          "skipped": 0, "interrupted": False}, t=T0_NS + n_gpu * 1_000_000))
        sent += 2  # batch.start + batch.end
        publish_s = time.monotonic() - started
        # the recorder drains what is queued; stop it once its file stops growing
        last, still = -1, 0
        while still < 10:
            size = batch.stream.stat().st_size
            still = still + 1 if size == last else 0
            last = size
            time.sleep(0.1)
        rec.terminate()
        _stop(rec)
    finally:
        sock.close(linger=0)
        ctx.term()
        if rec.poll() is None:
            rec.kill()
    _, items, problem = read_recording(batch.stream)
    gpu = [p for t, p in items if t == TEL_GPU]
    tel_seqs = [p["seq"] for t, p in items if p["src"] == "telemetry@replay"]
    # probe heartbeats sent before the recorder's subscription arrived are not counted as sent
    unsubscribed = tel_seqs[0] if tel_seqs else 0
    sent -= unsubscribed
    took, rows = _analyze(batch.root)
    return {"n_gpu": n_gpu, "sent": sent, "recorded": len(items), "lost": sent - len(items),
            "gpu_recorded": len(gpu), "seq_gaps": _gaps(tel_seqs),
            "rate": sent / publish_s, "publish_s": publish_s, "bytes": batch.stream.stat().st_size,
            "requests": len(rows), "coverage_min": min(float(r["gpu_coverage"] or 0) for r in rows) if rows else None,
            "analyze_s": took, "problem": problem}


def run(quick: bool = False) -> str:
    seconds = 5.0 if quick else 15.0
    n_gpu = 60_000 if quick else 600_000
    rate = 40_000.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lv = live(seconds, work)
        rp = replay(n_gpu, rate, work)
    return "\n".join([
        "## reliability",
        "",
        "Real processes and ZeroMQ sockets on 127.0.0.1. The GPU is SIMULATED (`--gpu sim`, or synthetic samples "
        "in the replay). Loss = messages published but not in the recording (seq gaps and count).",
        "",
        "| path | messages | rate | lost | analyzer | requests, min coverage |",
        "|---|---:|---:|---:|---:|---:|",
        f"| live: `telemetry --gpu sim --gpu-hz 1000` for {lv['seconds']:.1f} s → `telemetry.record` → "
        f"`analyzer --batch` | {lv['messages']:,} ({lv['gpu_samples']:,} tel.gpu) | {lv['gpu_hz']:.1f} tel.gpu/s | "
        f"{lv['seq_gaps']} seq gaps, {lv['dropped_ticks']} dropped ticks | {lv['analyze_s']:.1f} s | "
        f"{lv['requests']}, {lv['coverage_min']:.3f} |",
        f"| replay: {rp['n_gpu']:,} tel.gpu = {rp['n_gpu'] / 60_000:.0f} min at 1 kHz (+ host, hb, requests), "
        f"paced PUB → `telemetry.record` → `analyzer --batch` | {rp['sent']:,} sent, {rp['recorded']:,} recorded "
        f"({rp['bytes'] / 1e6:.0f} MB) | {rp['rate']:,.0f} msg/s ({rp['publish_s']:.1f} s) | {rp['lost']} "
        f"({rp['seq_gaps']} seq gaps) | {rp['analyze_s']:.1f} s | {rp['requests']}, {rp['coverage_min']:.3f} |",
        "",
        f"The replay is paced at {rate:,.0f} msg/s (about 40x real time for one GPU at 1 kHz): the recorder is a "
        "single Python process, and PUB drops (rather than blocks) once a subscriber is more than the high-water "
        "mark behind. Recording problems reported: "
        f"live {lv['problem'] or 'none'}, replay {rp['problem'] or 'none'}.",
        "",
    ])


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
