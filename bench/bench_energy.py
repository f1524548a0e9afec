"""Energy accuracy end to end: the real telemetry daemon reading a fake pynvml (tests/fake_pynvml.py)
that plays power traces with an exact integral, recorded by the real ``telemetry.record``, analysed
by the analyzer's own functions; random windows against the exact integral.

Traces that look like inference besides the smooth ones: single bursts of 10, 30 and 100 ms
(decode steps, short prefills) over a 60 W idle, trains of them (a 100 ms prefill then 30 ms
decode steps; 10 ms steps every 25 ms), a square wave (300/60 W, 0.8 s), a sawtooth ramp
(80→320 W, 1.7 s) and a sine (200 ± 100 W, 1.3 s). Every trace × counter refresh 20, 50 and 100 ms
with instant power held 10, 15 or 20 ms between the GPU's own refreshes; the smooth traces also
with a 1 s-averaged reading (refresh 50 and 100 ms). 1 W noise, random phases. The fake GPUs are
recorded in groups (one daemon each), so 100 Hz holds on a small machine.

    python -m bench --only energy [--quick]
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
LENGTHS_S = (0.1, 0.35, 1.0, 5.0)
TARGETS = {0.1: (1.0, 3.0), 0.35: (0.5, 1.5), 1.0: (0.2, 0.5), 5.0: (0.1, 0.3)}  # mean / max |error| %
SMOOTH = ("square", "ramp", "sine")  # the traces the targets are set for
REFRESHES_S = (0.02, 0.05, 0.1)
HOLDS_S = (0.01, 0.015, 0.02)
GROUP = 11  # fake GPUs per daemon


def _pulses(period_s: float, pulses: list[list[float]]) -> dict:
    return {"shape": "pulses", "idle_w": 60.0, "period_s": period_s, "pulses": pulses}


SHAPES = {
    "square": {"shape": "square", "high_w": 300.0, "low_w": 60.0, "period_s": 0.8},
    "ramp": {"shape": "ramp", "low_w": 80.0, "high_w": 320.0, "period_s": 1.7},
    "sine": {"shape": "sine", "mean_w": 200.0, "amp_w": 100.0, "period_s": 1.3},
    # periods prime to the refresh periods, so every burst phase against the counter occurs
    "burst 10 ms": _pulses(0.113, [[0.0, 0.01, 300.0]]),
    "burst 30 ms": _pulses(0.173, [[0.0, 0.03, 300.0]]),
    "burst 100 ms": _pulses(0.419, [[0.0, 0.1, 300.0]]),
    "train 100+30 ms": _pulses(0.977, [[0.0, 0.1, 300.0]] + [[0.115 + 0.045 * i, 0.03, 280.0] for i in range(10)]),
    "train 10 ms": _pulses(0.731, [[0.025 * i, 0.01, 250.0] for i in range(16)]),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def devices(t0_ns: int, seed: int = 7) -> list[dict]:
    """The fake GPUs: every shape × refresh with instant power (holds cycling 10/15/20 ms), and the
    smooth shapes at 50 and 100 ms with a 1 s-averaged reading; each with its own phases."""
    rng = random.Random(seed)
    out = []
    combos = [(shape, r, "instant") for shape in SHAPES for r in REFRESHES_S]
    combos += [(shape, r, "average_1s") for shape in SMOOTH for r in (0.05, 0.1)]
    for shape, refresh_s, kind in combos:
        hold_s = 0.02 if kind == "average_1s" else HOLDS_S[len(out) % len(HOLDS_S)]
        trace = {**SHAPES[shape], "t0_ns": t0_ns, "refresh_s": refresh_s, "refresh_phase_s": rng.uniform(0, refresh_s),
                 "hold_s": hold_s, "hold_phase_s": rng.uniform(0, hold_s), "kind": kind, "noise_w": 1.0,
                 "seed": rng.randrange(1 << 30)}
        out.append({"name": f"{shape} · {refresh_s * 1000:.0f} ms · {kind} held {hold_s * 1000:.0f} ms",
                    "trace_name": shape, "uuid": f"GPU-bench-{len(out)}", "trace": trace})
    return out


def record(seconds: float, devs: list[dict], out: Path, dither: bool = True) -> None:
    """Daemon (--gpu nvml over the fake) → telemetry.record → ``out``."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    shim = out.parent / "shim"
    shim.mkdir(exist_ok=True)
    sys.path.insert(0, str(TESTS))
    try:
        import fake_pynvml
    finally:
        sys.path.remove(str(TESTS))
    fake_pynvml.write_shim(shim)
    spec = [{k: d[k] for k in ("name", "uuid", "trace")} for d in devs]
    env = {**os.environ, "FAKE_PYNVML": json.dumps({"devices": spec}),
           "PYTHONPATH": os.pathsep.join([str(shim), str(TESTS), str(ROOT)])}
    rec = subprocess.Popen([sys.executable, "-m", "telemetry.record", "--out", str(out), "--endpoint", endpoint,
                            "--duration", str(seconds + 4.0)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # the recorder subscribes before the daemon publishes
    cmd = [sys.executable, "-m", "telemetry", "--gpu", "nvml", "--gpu-hz", "100", "--endpoint", endpoint,
           "--duration", str(seconds), "--watch", "--no-rapl", "--log-level", "warning"]
    if not dither:
        cmd.append("--no-dither")
    daemon = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = daemon.communicate(timeout=seconds + 60)
    if daemon.returncode != 0:
        raise RuntimeError(f"telemetry daemon failed ({daemon.returncode}): {err.decode(errors='replace')[-2000:]}")
    rec.wait(timeout=seconds + 60)


def _disjoint_groups(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Indices of windows (sorted by start) in groups whose windows do not overlap."""
    ends: list[float] = []
    groups: list[list[int]] = []
    for i in np.argsort(a):
        for k, end in enumerate(ends):
            if a[i] > end:
                groups[k].append(int(i))
                ends[k] = b[i]
                break
        else:
            groups.append([int(i)])
            ends.append(b[i])
    return [np.array(g) for g in groups]


def analyse(path: Path, devs: list[dict], n_windows: int, seed: int = 11) -> list[dict]:
    """Per GPU and window length: errors of the analyzer, a plain counter delta and the power trapezoid."""
    from analyzer import energy as E
    from analyzer import stream
    from analyzer.integrate import Trace, counter_energy
    from shared.recording import read_recording

    sys.path.insert(0, str(TESTS))
    try:
        import fake_pynvml as F
    finally:
        sys.path.remove(str(TESTS))
    _, items, problem = read_recording(path)
    if problem:
        raise RuntimeError(f"recording problem: {problem}")
    data = stream.build(items)
    rng = np.random.default_rng(seed)
    rows = []
    for g in data.gpus:
        dev = devs[int(g.meta["gpu"])]
        tr = dev["trace"]
        t_s = E.seconds(g, data.origin_ns)
        lo, hi = t_s[0] + 2.0, t_s[-1] - 0.5  # 1 s of history for the averaged reading
        # refresh location against the fake's truth
        ce = counter_energy(t_s, g.values["energy_mj"], None)
        to_trace = (data.origin_ns - tr["t0_ns"]) / 1e9  # analyzer seconds → trace seconds
        r_tr = ce.r_s + to_trace
        truth = tr["refresh_phase_s"] + np.round((r_tr - tr["refresh_phase_s"]) / tr["refresh_s"]) * tr["refresh_s"]
        ref_err = np.abs(r_tr - truth)
        t_d, e_d = t_s, g.values["energy_mj"] / 1000.0
        changed = np.flatnonzero(np.diff(e_d) != 0) + 1
        mid_tr = 0.5 * (t_d[changed - 1] + t_d[changed]) + to_trace
        mid_truth = (tr["refresh_phase_s"]
                     + np.round((mid_tr - tr["refresh_phase_s"]) / tr["refresh_s"]) * tr["refresh_s"])
        for length in LENGTHS_S:
            a = np.sort(rng.uniform(lo, hi - length, n_windows))
            b = a + length
            true = np.array([F.trace_energy_j(tr, y + to_trace) - F.trace_energy_j(tr, x + to_trace)
                             for x, y in zip(a, b)])
            # each window alone (no concurrency split), as a user would ask for any one request:
            # windows that do not overlap go through gpu_columns together
            got, unc = np.full(a.size, np.nan), np.full(a.size, np.nan)
            for group in _disjoint_groups(a, b):
                c = E.gpu_columns(g, data.origin_ns, data.src_seqs[g.src], E.Window(a[group], b[group]))
                got[group], unc[group] = c["energy_j"], c["energy_uncertainty_j"]
            power = Trace.build(t_s, g.values["power_mw"] / 1000.0)
            trap = power.integral_at(b) - power.integral_at(a)
            last_b = np.searchsorted(t_s, b, side="right") - 1
            last_a = np.searchsorted(t_s, a, side="right") - 1
            plain = (g.values["energy_mj"][last_b] - g.values["energy_mj"][last_a]) / 1000.0
            err = np.abs(got - true)
            # counter refreshes inside each window (the fake's truth)
            ph, period = tr["refresh_phase_s"], tr["refresh_s"]
            n_ref = (np.floor((b + to_trace - ph) / period) - np.floor((a + to_trace - ph) / period)).astype(int)
            rows.append({"gpu": dev["name"], "trace": dev["trace_name"], "hold_ms": tr["hold_s"] * 1000,
                         "n_ref": n_ref, "ok": np.isfinite(got) & np.isfinite(trap), "err_j": err, "unc_j": unc,
                         "shape": tr["shape"], "refresh_ms": tr["refresh_s"] * 1000,
                         "kind": tr["kind"], "length_s": length, "err_pct": 100 * err / true,
                         "covered": err <= unc, "unc_pct": 100 * unc / true,
                         "plain_pct": 100 * np.abs(plain - true) / true, "trap_pct": 100 * np.abs(trap - true) / true,
                         "trap_j": np.abs(trap - true),
                         "refresh_err_ms": ref_err * 1000, "mid_err_ms": np.abs(mid_tr - mid_truth) * 1000,
                         "fit": ce.method, "period_ms": ce.period_s * 1000,
                         "hz": (t_s.size - 1) / (t_s[-1] - t_s[0]), "gaps": int(np.sum(np.diff(t_s) > 0.025))})
    return rows


WINDOW_KEYS = ("n_ref", "ok", "err_j", "unc_j", "err_pct", "covered", "unc_pct", "plain_pct", "trap_pct", "trap_j")


def _ok(row: dict) -> dict:
    """The row restricted to the windows that got an energy."""
    return {k: (v[row["ok"]] if k in WINDOW_KEYS else v) for k, v in row.items()}


def _cat(rows, key):
    """``key`` over the windows that got an energy (a window with no sample inside has none)."""
    return np.concatenate([r[key][r["ok"]] for r in rows])


def _mm(x: np.ndarray, digits: int = 2) -> str:
    return f"{x.mean():.{digits}f} / {x.max():.{digits - 1}f}" if x.size else "—"


def tables(rows: list[dict], seconds: float, n_windows: int, cmd: str, wall_s: float) -> str:
    n_gpus = len({r["gpu"] for r in rows})
    lines = ["## energy (end to end)", "",
             f"`{cmd}`: the real daemon (`--gpu nvml`, 100 Hz, dithered ticks) reading the fake pynvml for "
             f"{seconds:.0f} s per group of up to {GROUP} fake GPUs ({n_gpus} in all: single bursts of 10, 30 and "
             "100 ms at 300 W over a 60 W idle, a train of a 100 ms prefill then ten 30 ms decode steps, a train "
             "of sixteen 10 ms steps, a square wave 300/60 W 0.8 s, a sawtooth ramp 80→320 W 1.7 s, a sine "
             "200 ± 100 W 1.3 s; each with counter refresh 20, 50 and 100 ms at random phases and instant power "
             "held 10, 15 or 20 ms; the smooth three also with a 1 s-averaged reading; 1 W noise), recorded by "
             "`telemetry.record`, analysed by `analyzer.energy.gpu_columns`; "
             f"{n_windows} random windows per GPU and length against the exact integral. |error| in %, mean / max; "
             "`covered` = share of windows whose error lies within `gpu_energy_uncertainty_j`; `unc / err` = mean "
             "uncertainty / mean |error| (how wide the bound is). Accuracy does not depend on machine load; "
             f"the run took {wall_s:.0f} s on a machine shared with other jobs (timings here are not targets). "
             f"{sum(int((~r['ok']).sum()) for r in rows)} of {sum(r['ok'].size for r in rows)} windows got no "
             "energy (no sample inside: a daemon stall on the loaded machine) and are left out.", "",
             "Smooth traces (square, ramp, sine; the targets are set for these):", "",
             "| window (s) | analyzer (counter+power) | target | covered by uncertainty | mean uncertainty | "
             "plain counter delta | instant power trapezoid (100 Hz) | 1 s-averaged power trapezoid |",
             "|---|---|---|---|---|---|---|---|"]
    for length in LENGTHS_S:
        sel = [r for r in rows if r["length_s"] == length and r["trace"] in SMOOTH]
        e, p = _cat(sel, "err_pct"), _cat(sel, "plain_pct")
        t = _cat([r for r in sel if r["kind"] == "instant"], "trap_pct")
        ta = _cat([r for r in sel if r["kind"] == "average_1s"], "trap_pct")
        tgt = TARGETS[length]
        lines.append(f"| {length:g} | {e.mean():.3f} / {e.max():.2f} | ≤ {tgt[0]:g} / {tgt[1]:g} | "
                     f"{100 * _cat(sel, 'covered').mean():.1f} % | {_cat(sel, 'unc_pct').mean():.3f} | "
                     f"{p.mean():.2f} / {p.max():.1f} | {t.mean():.2f} / {t.max():.1f} | "
                     f"{ta.mean():.1f} / {ta.max():.0f} |")
    lines += ["", "Bursts and trains (instant power):", "",
              "| window (s) | analyzer (counter+power) | covered by uncertainty | unc / err | plain counter delta | "
              "instant power trapezoid (100 Hz) |", "|---|---|---|---|---|---|"]
    for length in LENGTHS_S:
        sel = [r for r in rows if r["length_s"] == length and r["trace"] not in SMOOTH]
        e = _cat(sel, "err_pct")
        lines.append(f"| {length:g} | {e.mean():.3f} / {e.max():.2f} | {100 * _cat(sel, 'covered').mean():.1f} % | "
                     f"{_cat(sel, 'unc_j').mean() / _cat(sel, 'err_j').mean():.1f} | {_mm(_cat(sel, 'plain_pct'))} | "
                     f"{_mm(_cat(sel, 'trap_pct'))} |")
    for length in (0.1, 0.35):
        lines += ["", f"Per trace and counter refresh, {length:g} s windows, instant power (|error| % mean / max). "
                  "`≤ 2 refreshes`: the windows holding at most two counter refreshes, analyzer vs the instant "
                  "power trapezoid, mean |error| % (n windows):", "",
                  "| trace | refresh (ms) | hold (ms) | analyzer | covered | unc / err | plain counter delta | "
                  "instant power trapezoid | ≤ 2 refreshes: analyzer vs trapezoid (n) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["length_s"] != length or r["kind"] != "instant":
                continue
            r = _ok(r)
            few = r["n_ref"] <= 2
            few_cell = (f"{r['err_pct'][few].mean():.2f} vs {r['trap_pct'][few].mean():.2f} ({int(few.sum())})"
                        if few.any() else "—")
            lines.append(f"| {r['trace']} | {r['refresh_ms']:.0f} | {r['hold_ms']:.0f} | {_mm(r['err_pct'])} | "
                         f"{100 * r['covered'].mean():.1f} % | {r['unc_j'].mean() / r['err_j'].mean():.1f} | "
                         f"{_mm(r['plain_pct'])} | {_mm(r['trap_pct'])} | {few_cell} |")
    lines += ["", "Per trace at 0.1 s and 1 s, 1 s-averaged power (analyzer mean / max %, covered):", "",
              "| GPU | 0.1 s | covered | 1 s | covered |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["gpu"] for r in rows if r["kind"] == "average_1s"):
        cells = []
        for length in (0.1, 1.0):
            r = next(x for x in rows if x["gpu"] == name and x["length_s"] == length)
            r = _ok(r)
            cells += [f"{r['err_pct'].mean():.3f} / {r['err_pct'].max():.2f}", f"{100 * r['covered'].mean():.0f} %"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Counter refresh instants against the fake's truth (ms): fitted (what the analyzer uses) vs the "
              "midpoint between the last old and first new reading:", "",
              "| GPU | fit | period found (ms) | fitted mean / p95 / max | midpoint mean / p95 / max | "
              "sampling Hz | "
              "sample gaps > 25 ms |", "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["gpu"] for r in rows):
        r = next(x for x in rows if x["gpu"] == name and x["length_s"] == LENGTHS_S[0])
        f, m = r["refresh_err_ms"], r["mid_err_ms"]
        lines.append(f"| {name} | {r['fit']} | {r['period_ms']:.4f} | {f.mean():.3f} / {np.percentile(f, 95):.3f} / "
                     f"{f.max():.3f} | {m.mean():.3f} / {np.percentile(m, 95):.3f} / {m.max():.3f} | {r['hz']:.1f} | "
                     f"{r['gaps']} |")
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> str:
    seconds, n_windows = (20.0, 100) if quick else (60.0, 400)
    started = time.monotonic()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        devs = devices(time.monotonic_ns() + 3_000_000_000)
        for g in range(0, len(devs), GROUP):
            group = devs[g:g + GROUP]
            out = Path(d) / f"stream{g}.msgpack"
            record(seconds, group, out)
            rows += analyse(out, group, n_windows)
    return tables(rows, seconds, n_windows, "python -m bench --only energy" + (" --quick" if quick else ""),
                  time.monotonic() - started)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
