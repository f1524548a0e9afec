"""analyzer.integrate: trapezoid and counter energy against analytic integrals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analyzer.integrate import Trace, counter_energy, cumulative_trapezoid, drop_late_reads, refresh_points
from analyzer.windows import split_windows
from tests import synth as S

RATE_HZ = 100.0
PHASE_S = 0.003  # samples at 3 ms + k·10 ms, so no window edge falls on a sample


def _samples(power: S.Power, duration_s: float = 20.0, rate_hz: float = RATE_HZ, refresh_s: float = 0.05):
    t = PHASE_S + np.arange(int(duration_s * rate_hz)) / rate_hz
    p = np.array([power.p_w(x) for x in t])
    counter_mj = np.array([round(power.e_j(math.floor(x / refresh_s) * refresh_s) * 1000.0) for x in t])
    return t, p, counter_mj


def _energy(cumulative, lo, hi, a, b):
    return split_windows(lambda x: cumulative(np.clip(x, lo, hi)), [a], [b]).energy[0]


TRACES = {
    "constant": S.constant(120.0),
    "ramp": S.ramp(80.0, 12.0),
    "square": S.square(300.0, 60.0, 2.0),
    "sine": S.sine(200.0, 80.0, 3.0),
}
# Windows that start and end between samples; the square-wave ones start and end on the same level.
WINDOWS = [(1.2345, 4.5678), (5.0071, 13.3456), (2.1111, 17.8888)]


class TestTrapezoid:
    def test_cumulative_of_constant_is_linear(self):
        """C[i] = P·(t_i − t_0) for constant power."""
        t = np.array([0.0, 0.5, 1.5, 4.0])
        assert np.allclose(cumulative_trapezoid(t, np.full(4, 10.0)), [0.0, 5.0, 15.0, 40.0])

    @pytest.mark.parametrize("name", ["constant", "ramp", "sine"])
    @pytest.mark.parametrize("window", WINDOWS, ids=["w1", "w2", "w3"])
    def test_smooth_trace_within_one_percent_at_100hz(self, name, window):
        """Trapezoid at 100 Hz on a smooth trace is within 1 % of the analytic integral."""
        power = TRACES[name]
        t, p, _ = _samples(power)
        tr = Trace.build(t, p)
        a, b = window
        got = _energy(tr.integral_at, *tr.span(), a, b)
        true = power.e_j(b) - power.e_j(a)
        assert abs(got / true - 1) < 0.01

    def test_linear_trace_is_exact_between_samples(self):
        """Edges are interpolated: a ramp integrates exactly even when the window cuts sample intervals."""
        tr = Trace.build([0.0, 1.0, 2.0], [0.0, 10.0, 20.0])
        assert tr.integral_at(np.array([1.5]))[0] == pytest.approx(11.25)
        assert _energy(tr.integral_at, 0, 2, 0.25, 1.75) == pytest.approx(5 * (1.75 ** 2 - 0.25 ** 2))

    def test_outside_span_is_nan_not_zero(self):
        """No samples there: NaN, never an invented 0 J."""
        tr = Trace.build([1.0, 2.0], [5.0, 5.0])
        assert np.isnan(tr.integral_at(np.array([0.5, 2.5]))).all()

    def test_zero_and_one_sample(self):
        """Empty trace → NaN everywhere; one sample → 0 at that instant only."""
        empty = Trace.build([], [])
        one = Trace.build([1.0], [7.0])
        assert np.isnan(empty.integral_at(np.array([1.0]))).all()
        assert one.integral_at(np.array([1.0]))[0] == 0.0
        assert np.isnan(one.integral_at(np.array([1.5]))[0])

    def test_nan_readings_and_duplicate_times_dropped(self):
        """A failed read (NaN) is skipped and equal timestamps keep the last reading."""
        tr = Trace.build([0.0, 1.0, 1.0, 2.0, 3.0], [10.0, 99.0, 10.0, np.nan, 10.0])
        assert tr.n == 3
        assert tr.integral_at(np.array([3.0]))[0] == pytest.approx(30.0)


class TestCounter:
    @pytest.mark.parametrize("name", list(TRACES))
    @pytest.mark.parametrize("window", WINDOWS, ids=["w1", "w2", "w3"])
    def test_counter_with_power_within_a_tenth_of_a_percent(self, name, window):
        """Counter for whole refresh intervals + power for the edges: error < 0.1 %."""
        power = TRACES[name]
        t, p, c = _samples(power)
        ce = counter_energy(t, c, Trace.build(t, p))
        assert ce.usable
        a, b = window
        got = _energy(ce.cumulative_at, *ce.span, a, b)
        true = power.e_j(b) - power.e_j(a)
        assert abs(got / true - 1) < 0.001

    def test_counter_alone_uses_interval_mean_power_at_edges(self):
        """Without power samples the counter still gives the energy (edges apportioned by time)."""
        power = S.constant(150.0)
        t, _, c = _samples(power, duration_s=5.0)
        ce = counter_energy(t, c, None)
        got = _energy(ce.cumulative_at, *ce.span, 1.2345, 3.4567)
        assert got == pytest.approx(150.0 * (3.4567 - 1.2345), rel=1e-3)

    def test_counter_beats_averaged_power_after_a_burst(self):
        """A 1 s-averaged power reading smears a burst; the counter does not."""
        power = S.square(400.0, 50.0, 4.0)
        t, _, c = _samples(power, duration_s=12.0)
        smeared = np.array([(power.e_j(x) - power.e_j(max(x - 1.0, 0.0))) / min(x, 1.0) for x in t])
        tr = Trace.build(t, smeared)
        ce = counter_energy(t, c, tr)
        a, b = 4.0 + 0.0013, 5.0013  # 1 s window right after the burst ends
        true = power.e_j(b) - power.e_j(a)
        err_counter = abs(_energy(ce.cumulative_at, *ce.span, a, b) / true - 1)
        err_power = abs(_energy(tr.integral_at, *tr.span(), a, b) / true - 1)
        assert err_counter < 0.02 < err_power

    def test_refresh_points_at_midpoints_of_holding_counter(self):
        """A counter that holds its value refreshed between the last old and first new reading."""
        r, e = refresh_points(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), np.array([0.0, 0.0, 5.0, 5.0, 9.0]))
        assert r.tolist() == [1.5, 3.5]
        assert e.tolist() == [5.0, 9.0]

    def test_fresh_counter_uses_sample_times(self):
        """A counter that advances on every sample is fresh when read."""
        r, _ = refresh_points(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0]))
        assert r.tolist() == [0.0, 1.0, 2.0]

    def test_counter_reset_is_not_usable(self):
        """A counter going backwards for good (a driver reload: from the joules since the last one back
        to about zero) is not trusted; callers fall back to power."""
        ce = counter_energy(np.arange(6.0), np.array([5e9, 5e9 + 1000, 5e9 + 2000, 0, 1000, 2000.0]), None)
        assert not ce.usable

    def test_a_late_read_is_left_out_not_the_whole_counter(self):
        """A reading taken late after its stamp (a busy host) holds a later refresh than the next
        samples: it is left out, and the counter's energies stay exact, where the run's counter had
        gone unusable and its energy fallen back to the power trapezoid, without uncertainty."""
        t = np.arange(0.0, 2.0, 0.01) + 0.0013
        refresh = np.floor(t / 0.02) * 0.02  # a 20 ms refresh of a steady 100 W
        read = refresh.copy()
        read[[50, 120, 121]] += 0.04  # three reads 40 ms late (two of them in a row)
        ce = counter_energy(t, read * 100.0 * 1000.0, None)
        assert ce.usable
        assert ce.cumulative_at(np.array([1.5]))[0] - ce.cumulative_at(np.array([0.5]))[0] == pytest.approx(100.0, rel=1e-9)
        assert drop_late_reads(t, read)[0].size == t.size - 3


class TestFused:
    """Instant power corrected by the counter's interval energies (analyzer.fused)."""

    def _ce(self, power, refresh_s=0.05):
        """100 Hz samples dithered as the daemon's (so the refresh fit is exact to a fraction of a ms)."""
        k = np.arange(1000)
        t = PHASE_S + (k + (k * 0.6180339887498949) % 1.0) / RATE_HZ
        p = np.array([power.p_w(x) for x in t])
        c = np.array([round(power.e_j(math.floor(x / refresh_s) * refresh_s) * 1000.0) for x in t])
        return t, p, counter_energy(t, c, Trace.build(t, p)).with_power_shape(0.0, 0.0)

    def test_whole_refresh_intervals_are_the_counters(self):
        """At every refresh point F moves exactly as the counter did (to its 1 mJ resolution)."""
        _, _, ce = self._ce(S.square(300.0, 60.0, 0.37))
        assert ce.fused is not None
        r = ce.r_s[5:-5]
        assert np.allclose(np.diff(ce.cumulative_at(r)), np.diff(ce.e_j[5:-5]), atol=1e-9)

    def test_flat_power_keeps_the_samples(self):
        """A window inside one refresh interval on steady power: the samples' trapezoid, untouched."""
        t, p, ce = self._ce(S.constant(150.0))
        tr = Trace.build(t, p)
        a, b = 3.0113, 3.0391
        assert ce.cumulative_at(b) - ce.cumulative_at(a) == pytest.approx(tr.integral_at(b) - tr.integral_at(a), abs=2e-3)

    def test_step_between_two_readings_is_placed_by_the_counter(self):
        """A 300 → 60 W step between two 100 Hz readings: the trapezoid ramps across the 10 ms, the
        corrected trace puts the step where the interval's energy says: an edge just past it comes closer."""
        power = S.square(300.0, 60.0, 2.05)  # step down at 1.025 s: mid refresh interval
        t, p, ce = self._ce(power)
        tr = Trace.build(t, p)
        a, b = 0.9651, 1.0262
        true = power.e_j(b) - power.e_j(a)
        fused = ce.cumulative_at(b) - ce.cumulative_at(a)
        trap = tr.integral_at(b) - tr.integral_at(a)
        assert abs(fused - true) < 0.6 * abs(trap - true)  # what is left: the refresh instants' ~0.5 ms


def test_search_sorted_matches_numpy_on_merged_needles():
    # many increasing needles take the merge path: ties (needles equal to elements, repeated needles)
    # must land on the same side as np.searchsorted's; unsorted or NaN needles are searched
    from analyzer.search import MERGE_MIN, search_sorted

    rng = np.random.default_rng(3)
    a = np.cumsum(rng.integers(1, 4, 3 * MERGE_MIN)).astype(np.float64)
    v = np.sort(np.concatenate([a[::2], a[::3] + 0.5, a[:50], [a[0] - 1.0, a[-1] + 1.0]]))
    assert v.size >= MERGE_MIN
    for side in ("left", "right"):
        assert np.array_equal(search_sorted(a, v, side), np.searchsorted(a, v, side=side))
        shuffled = rng.permutation(v)
        assert np.array_equal(search_sorted(a, shuffled, side), np.searchsorted(a, shuffled, side=side))
        rows = v[: v.size // 4 * 4].reshape(-1, 4)  # increasing in reading order (merged), then not
        assert np.array_equal(search_sorted(a, rows, side), np.searchsorted(a, rows, side=side))
        assert np.array_equal(search_sorted(a, rows.T, side), np.searchsorted(a, rows.T, side=side))
        with_nan = np.concatenate([v, [np.nan]])
        assert np.array_equal(search_sorted(a, with_nan, side), np.searchsorted(a, with_nan, side=side))


def test_window_reduce_matches_each_window_reduced():
    # many short windows take the sparse table, few long ones reduceat: both give each window's own
    # reduction (NaN kept by maximum, skipped by fmax), windows reaching the array's end included
    from analyzer.search import window_reduce

    rng = np.random.default_rng(7)
    y = rng.normal(size=400)
    y[[17, 230]] = np.nan
    lo_s = rng.integers(0, 399, 2000)
    short = (lo_s, np.minimum(lo_s + rng.integers(1, 6, lo_s.size), 400))
    lo_l = np.array([0, 5, 120, 300])
    long = (lo_l, np.array([400, 250, 121, 400]))
    for ufunc in (np.maximum, np.fmax, np.minimum):
        for windows in ([short, long], [long]):  # with the short ones: the table; alone: reduceat
            for (lo, hi), got in zip(windows, window_reduce(y, windows, ufunc)):
                assert np.array_equal(got, [ufunc.reduce(y[a:b]) for a, b in zip(lo, hi)], equal_nan=True)
    assert np.isnan(window_reduce(y, [long], np.maximum)[0][0])
    assert not np.isnan(window_reduce(y, [long], np.fmax)[0][0])


def test_clip_index_is_np_clip():
    # in place on an index array (bounds a number or an array), a new value for a scalar index
    from analyzer.search import clip_index

    i = np.array([-3, 0, 4, 9, 12])
    lo = np.array([1, 1, 5, 0, 2])
    assert np.array_equal(clip_index(i.copy(), 0, 9), np.clip(i, 0, 9))
    assert np.array_equal(clip_index(i.copy(), lo, 10), np.clip(i, lo, 10))
    assert clip_index(np.searchsorted(i, 100) - 1, 0, 3) == 3


def test_fused_grid_counts_match_searchsorted():
    # the fused grid's merge gives what np.searchsorted would: samples shared with refresh points,
    # samples before the first and at the last refresh point, repeated refresh points
    from analyzer.fused import _grid

    t = np.arange(0.0, 10.0, 0.5)
    for r in (np.array([1.0, 2.25, 2.5, 2.5, 6.0, 9.0]), np.array([0.25, 3.0, 7.75]), t[2:-3].copy()):
        u, below_t, below_r, at_r = _grid(r, t)
        assert np.array_equal(u, np.union1d(r, t[(t > r[0]) & (t < r[-1])]))
        assert np.array_equal(below_t, np.searchsorted(t, u, side="right"))
        assert np.array_equal(below_r, np.searchsorted(r, u, side="right"))
        assert np.array_equal(at_r, np.searchsorted(u, r))


def test_paired_jump_partner_stepped_matches_searched():
    # the neighbours stepped through outwards give each change the partner the searched windows give,
    # for reaches of a few samples and for one past the steps (searched then), irregular spacing
    from analyzer.fused import PARTNER_STEPS, _partner, _partner_searched

    rng = np.random.default_rng(5)
    mid = np.cumsum(rng.uniform(0.002, 0.02, 5000))
    d = np.abs(rng.normal(0.0, 10.0, mid.size)).round(1)
    for reach in (0.001, 0.01, 0.03, 0.02 * (PARTNER_STEPS + 2)):
        assert np.array_equal(_partner(d, mid, reach), _partner_searched(d, mid, reach))
    assert not _partner(d, mid, 0.001).any()  # samples further apart than the reach: no partner
    assert (_partner(d, mid, 0.03) > 0).mean() > 0.9


def test_paired_jump_sparse_matches_dense(monkeypatch):
    # held readings (most changes 0): the changes' own runs of instants give each instant what the
    # windows of every instant give, bit for bit: gaps wider than the reach (empty windows), instants
    # before the first and past the last change, reaches of one to many samples, both ends' changes
    from analyzer import fused

    rng = np.random.default_rng(11)
    checked = 0
    for trial in range(400):
        n = int(rng.integers(2, 300))
        dt = rng.choice([0.01, 0.01, 0.01, 0.25], n - 1) * rng.uniform(0.8, 1.2, n - 1)
        t = np.concatenate([[0.0], np.cumsum(dt)])
        y = np.repeat(rng.uniform(0.0, 300.0, n), rng.integers(1, 30, n))[:n]
        power = Trace.build(t, y)
        x = np.sort(np.concatenate([rng.uniform(t[0] - 0.05, t[-1] + 0.05, 2 * n), t[1:-1]]))
        reach = float(rng.choice([0.005, 0.02, 0.05, 0.3]))
        monkeypatch.setattr(fused, "SPARSE_SHARE", 10**9)  # the windows of every instant
        dense = fused._paired_jump(power, x, reach)
        monkeypatch.setattr(fused, "SPARSE_SHARE", 0)  # the runs of each change
        sparse = fused._paired_jump(power, x, reach)
        assert np.array_equal(sparse.view(np.int64), dense.view(np.int64)), trial
        checked += bool((dense > 0).any())
    assert checked > 100  # paired changes were there to place


def test_power_noise_of_stepped_and_noisy_readings():
    # the robust spread of the second differences: 0 where most points lie on a line (a stepped
    # reading), taken without sorting; exactly the median's value either side of half
    from analyzer.energy import power_noise_w

    def by_median(y: np.ndarray) -> float:
        d2 = y[2:] - 2 * y[1:-1] + y[:-2]
        return float(1.4826 * np.median(np.abs(d2)) / np.sqrt(6.0))

    rng = np.random.default_rng(4)
    for n in (4, 5, 6, 7, 50, 51):
        for zeros in range(n - 1):  # second differences that are 0: none to all but one
            d2 = np.where(np.arange(n - 2) < zeros, 0.0, rng.normal(0.0, 3.0, n - 2))
            y = np.concatenate([[0.0, 1.0], np.zeros(n - 2)])
            for i in range(2, n):  # the points whose second differences are d2
                y[i] = d2[i - 2] + 2 * y[i - 1] - y[i - 2]
            tr = Trace(np.arange(float(n)), y)
            assert power_noise_w(tr) == by_median(y)
    stepped = Trace.build(np.arange(0.0, 10.0, 0.01), np.repeat([50.0, 300.0, 80.0, 300.0], 250))
    assert power_noise_w(stepped) == 0.0
    noisy = Trace.build(np.arange(0.0, 10.0, 0.01), rng.normal(200.0, 5.0, 1000))
    assert power_noise_w(noisy) == pytest.approx(5.0, rel=0.2)
