"""Energy uncertainty on a train of 10 ms decode steps (every 25 ms) that the held power reading
aliases: a 20 ms hold reads one instant per hold, so the trace shows blocks of high power where the
truth has short bursts with idle between, or misses a burst. The counter's interval energies keep
the estimate close; the bound (gpu_energy_uncertainty_j) must still cover every window, without the
estimate changing and without being needlessly wide."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer import pipeline, stream
from shared.recording import read_recording
from tests import synth as S

IDLE_W, STEP_W = 60.0, 250.0
TRAIN_PERIOD_S = 0.731  # prime to the refresh periods: every phase of the steps against the counter


def _train(n_trains: int) -> S.Power:
    return S.pulses(IDLE_W, [(TRAIN_PERIOD_S * k + 0.025 * i, 0.01, STEP_W) for k in range(n_trains) for i in range(16)])


def _gaps(seed: int = 3) -> set[int]:
    """Telemetry seqs lost in runs of 2 to 6 ticks (each tick: a GPU and a host message), as a
    daemon late on a loaded machine leaves them."""
    rng = np.random.default_rng(seed)
    return {int(s) + j for s in rng.integers(400, 3800, 40) for j in range(int(rng.integers(4, 12)))}


@pytest.mark.parametrize("refresh_s,hold_s,length_s,gaps",
                         [(0.1, 0.02, 0.35, False), (0.1, 0.02, 0.1, False), (0.02, 0.01, 0.35, False),
                          (0.1, 0.02, 0.35, True)],
                         ids=["100ms-held20ms-0.35s", "100ms-held20ms-0.1s", "20ms-held10ms-0.35s",
                              "100ms-held20ms-0.35s-gaps"])
def test_aliased_train_is_covered(tmp_path, refresh_s, hold_s, length_s, gaps):
    power = _train(30)
    # back-to-back windows (never overlapping) at a step not commensurate with the train or the counter
    starts = 2.0 + (length_s + 0.0417) * np.arange(int(16.0 / (length_s + 0.0417)))
    reqs = [S.Req(float(a), float(a + length_s), run=i) for i, a in enumerate(starts)]
    spec = S.Spec(duration_s=20.0, dither=True, requests=reqs, drop_telemetry_seqs=_gaps() if gaps else set(),
                  gpus=[S.Gpu(power, refresh_s=refresh_s, refresh_phase_s=0.0137, hold_s=hold_s, simulated=False)])
    bd = S.write_batch(tmp_path / "b", spec)
    _, items, _ = read_recording(bd.stream)
    rows = sorted(pipeline.analyze(stream.build(items), pipeline.Options(quality=False)).results,
                  key=lambda r: r["run"])
    true = np.array([power.e_j(r.b_s) - power.e_j(r.a_s) for r in reqs])
    if gaps:
        assert sum(r["gpu_seq_gaps"] > 0 for r in rows) >= 5  # the gaps do touch windows
    got = np.array([r["gpu_energy_j"] for r in rows], dtype=float)
    unc = np.array([r["gpu_energy_uncertainty_j"] for r in rows], dtype=float)
    trap = np.array([r["gpu_energy_power_j"] for r in rows], dtype=float)
    assert all(r["gpu_energy_method"] == "counter+power" for r in rows)
    err = np.abs(got - true)
    # the aliasing is real: the power samples alone are off, the estimate beats them
    assert err.mean() < np.abs(trap - true).mean()
    # the rule: at least 95 % of windows covered (before the bound accounted for aliased
    # bursts: 85 %, 95.5 % and 97.5 % in the first three cases). A 10 ms step the hold missed
    # entirely, its energy cancelled in the counter's residual by one shown too long, may escape.
    covered = err <= unc
    assert covered.mean() >= 0.95, (covered.mean(), [(float(a), e, u) for a, e, u in zip(starts, err, unc) if e > u])
    # ... by a bound that stays of the error's order, not a blanket
    assert unc.mean() < 12 * err.mean()
