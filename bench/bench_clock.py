"""The clock mapping's error against an injected skew: a real daemon posing as another host with its
clock offset and drifting (--test-clock-offset-s / --test-clock-drift-ppm), the real Recorder probing
it over loopback every second, the analyzer's fit. The error is the mapped time minus the true
collector time, over the batch (at every probe and on a 10 ms grid between the first and last)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from analyzer import clock
from collector.recorder import Recorder
from shared import messages as M
from shared.bus import free_port
from shared.recording import read_recording

ROOT = Path(__file__).resolve().parent.parent
CASES = ((30.0, 50.0), (-45.0, -200.0))  # (offset s, drift ppm)


def _one(tmp: Path, offset_s: float, drift_ppm: float, seconds: float) -> dict:
    ep, cep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "telemetry", "--gpu", "sim", "--gpu-hz", "20", "--host-hz", "2",
                             "--watch", "--no-rapl", "--endpoint", ep, "--clock-endpoint", cep,
                             "--test-pose-host", "far", "--test-clock-offset-s", str(offset_s),
                             "--test-clock-drift-ppm", str(drift_ppm), "--duration", str(seconds + 30)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = tmp / f"clock_{offset_s}_{drift_ppm}.msgpack"
    try:
        rec = Recorder(path, None, ep, clock_probe_s=1.0)
        try:
            rec.wait_heartbeat(30)
            time.sleep(seconds)
        finally:
            rec.close()
    finally:
        proc.kill()
        proc.wait(10)
    _, items, _ = read_recording(path)
    syncs = [M.ClockSync.from_msg(p) for t, p in items if t == M.CLOCK_SYNC]
    m = clock.fit([(M.CLOCK_SYNC, s.to_msg()) for s in syncs])["telemetry@far"]
    drift = drift_ppm * 1e-6
    local = np.concatenate([np.array([s.received_ns for s in syncs], dtype=float),
                            np.arange(syncs[0].sent_ns, syncs[-1].received_ns, 10_000_000, dtype=float)])
    err = np.array([m.to_collector(int(round(t + offset_s * 1e9 + drift * t))) - t for t in local]) / 1e6
    return {"offset": offset_s, "drift": drift_ppm, "probes": len(syncs), "span": (local.max() - local.min()) / 1e9,
            "max": float(np.abs(err).max()), "median": float(np.median(np.abs(err))), "u": m.uncertainty_ms,
            "rtt": m.rtt_ms_min}


def run(quick: bool = False) -> str:
    seconds = 6.0 if quick else 20.0
    with tempfile.TemporaryDirectory(prefix="bench-clock-") as tmp:
        rows = [_one(Path(tmp), o, d, seconds) for o, d in CASES]
    lines = ["## clock mapping", "",
             f"`python -m bench --only clock`: a daemon posing as another host with an injected clock offset and "
             f"drift, probed by the real Recorder over loopback every second for {seconds:.0f} s; the analyzer's "
             "offset + drift fit. Error = mapped time − true collector time, at every probe and on a 10 ms grid "
             "over the batch. `uncertainty` is what each row reports (`clock_uncertainty_ms`); the analyzer "
             f"refuses a batch over {clock.MAX_UNCERTAINTY_MS:.0f} ms.", "",
             "| injected offset (s) | injected drift (ppm) | probes | span (s) | max error (ms) | median error (ms) "
             "| reported uncertainty (ms) | shortest round trip (ms) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['offset']:+.0f} | {r['drift']:+.0f} | {r['probes']} | {r['span']:.1f} | {r['max']:.3f} "
                     f"| {r['median']:.3f} | {r['u']:.3f} | {r['rtt']:.3f} |")
    return "\n".join(lines) + "\n"
