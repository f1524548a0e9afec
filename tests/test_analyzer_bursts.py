"""Energy at the sensor's limit: a single 30 ms burst (a decode step) placed at every phase against
the counter's refresh, with request windows whose edges fall inside or outside it; the analyzer's
estimate, its uncertainty and its short-window flag against the exact integral, and against the
power samples alone (the trapezoid the analyzer reports as gpu_energy_power_j)."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer import pipeline, stream
from shared.recording import read_recording
from tests import synth as S

IDLE_W, BURST_W, BURST_S = 60.0, 300.0, 0.03
PHASES = np.arange(10) / 10.0  # burst start, as a fraction of the refresh period after a refresh
# window (a, b) around a burst starting at s: edges outside it, one edge inside, both inside
WINDOWS = {
    "around": lambda s: (s - 0.021, s + BURST_S + 0.024),
    "starts_inside": lambda s: (s + 0.012, s + 0.093),
    "ends_inside": lambda s: (s - 0.067, s + 0.017),
    "inside": lambda s: (s + 0.004, s + 0.026),
}
SPACING_S = 0.6  # one burst per request, far apart: the windows never overlap


def _run(tmp_path, refresh_s: float, hold_s: float):
    """One recording: a burst per (phase, window kind), a request window on each."""
    phase0 = 0.0137
    cases = [(ph, kind) for ph in PHASES for kind in WINDOWS]
    starts = [phase0 + refresh_s * (round((1.0 + SPACING_S * i) / refresh_s) + ph) for i, (ph, _) in enumerate(cases)]
    power = S.pulses(IDLE_W, [(s, BURST_S, BURST_W) for s in starts])
    reqs = []
    for i, ((ph, kind), s) in enumerate(zip(cases, starts)):
        a, b = WINDOWS[kind](s)
        reqs.append(S.Req(a, b, model=f"{kind}", run=i))
    # one long window holding a burst: not short
    reqs.append(S.Req(starts[-1] + 0.3, starts[-1] + 0.3 + 4 * refresh_s, model="long", run=len(cases)))
    spec = S.Spec(duration_s=starts[-1] + 1.5, dither=True, requests=reqs,
                  gpus=[S.Gpu(power, refresh_s=refresh_s, refresh_phase_s=phase0, hold_s=hold_s)])
    bd = S.write_batch(tmp_path / f"b{refresh_s}-{hold_s}", spec)
    _, items, _ = read_recording(bd.stream)
    rows = sorted(pipeline.analyze(stream.build(items), pipeline.Options(quality=False)).results,
                  key=lambda r: r["run"])
    true = np.array([power.e_j(r.b_s) - power.e_j(r.a_s) for r in reqs])
    return cases, rows, true, reqs


@pytest.mark.parametrize("refresh_s,hold_s", [(0.02, 0.01), (0.05, 0.0), (0.1, 0.02)],
                         ids=["20ms-held10ms", "50ms-fresh", "100ms-held20ms"])
def test_single_burst_at_every_phase(tmp_path, refresh_s, hold_s):
    cases, rows, true, reqs = _run(tmp_path, refresh_s, hold_s)
    got = np.array([r["gpu_energy_j"] for r in rows], dtype=float)
    unc = np.array([r["gpu_energy_uncertainty_j"] for r in rows], dtype=float)
    trap = np.array([r["gpu_energy_power_j"] for r in rows], dtype=float)
    assert all(r["gpu_energy_method"] == "counter+power" for r in rows)
    err, err_trap = np.abs(got - true), np.abs(trap - true)
    # the bound holds on every window, edges inside the burst or not, at every phase
    assert np.all(err <= unc + 1e-9), [(c, e, u) for c, e, u in zip(cases, err, unc) if e > u]
    # never worse than the power samples alone, on each kind of window (mean over the phases)
    kinds = np.array([k for _, k in cases])
    for kind in WINDOWS:
        sel = kinds == kind
        assert err[:-1][sel].mean() <= err_trap[:-1][sel].mean() + 1e-9, kind
    # a window holding the whole burst, edges on the idle level: the counter's exact energy shows
    around = kinds == "around"
    assert np.max(err[:-1][around] / true[:-1][around]) < 0.005
    # the flag keeps its rule: shorter than 3 refresh periods (the bursts' windows at 50 and 100 ms)
    short = [r["gpu_short_window"] for r in rows]
    assert short == [(q.b_s - q.a_s) < 3 * refresh_s for q in reqs]
    assert short[-1] is False and (refresh_s < 0.03 or all(short[:-1]))
    assert rows[-1]["gpu_energy_j"] == pytest.approx(true[-1], rel=0.01)
