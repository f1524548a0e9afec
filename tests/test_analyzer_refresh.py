"""Counter refresh location (periodic fit, midpoint fallback), the error bound at window edges and
its split between concurrent windows, against synthetic traces whose truth is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analyzer.integrate import (Trace, counter_energy, edge_uncertainty, edge_uncertainty_fn, fit_refreshes,
                                placed_in_order)
from analyzer.windows import split_subs, split_windows
from tests import synth as S

GOLDEN = 0.6180339887498949


def _times(duration_s: float, rate_hz: float = 100.0, dither: bool = True, phase_s: float = 0.003) -> np.ndarray:
    k = np.arange(int(duration_s * rate_hz))
    return phase_s + (k + ((k * GOLDEN) % 1.0 if dither else 0.0)) / rate_hz


def _counter(t: np.ndarray, power: S.Power, period_s: float, phase_s: float) -> np.ndarray:
    last = np.floor((t - phase_s) / period_s) * period_s + phase_s
    return np.array([round(power.e_j(max(x, 0.0)) * 1000.0) for x in last]) / 1000.0


def _truth(r: np.ndarray, period_s: float, phase_s: float) -> np.ndarray:
    return np.round((r - phase_s) / period_s) * period_s + phase_s


class TestFit:
    def test_dithered_sampling_locates_refreshes_to_a_fraction_of_a_ms(self):
        power = S.sine(200.0, 80.0, 1.3)
        t = _times(60.0)
        fit = fit_refreshes(t, _counter(t, power, 0.05, 0.0137))
        err = fit.r_s - _truth(fit.r_s, 0.05, 0.0137)
        assert fit.method == "periodic_fit"
        assert fit.period_s == pytest.approx(0.05, abs=2e-6)
        assert np.abs(err).max() < 0.0005
        assert (np.abs(err) <= fit.err_s + 1e-12).mean() >= 0.99
        # the midpoints of the same intervals are off by up to half a sample spacing
        mid_fit = fit_refreshes(t, _counter(t, power, 0.05, 0.0137))
        assert np.abs(err).mean() < 0.25 * np.abs(mid_fit.err_s).max()

    def test_locked_sampling_bound_stays_wide_and_holds(self):
        """100 Hz on a 50 ms counter without dither: the phase is unknowable within a sample spacing,
        and the error bound says so instead of claiming the fit's precision."""
        power = S.constant(150.0)
        t = _times(30.0, dither=False)
        fit = fit_refreshes(t, _counter(t, power, 0.05, 0.0137))
        err = fit.r_s - _truth(fit.r_s, 0.05, 0.0137)
        assert np.all(np.abs(err) <= fit.err_s + 1e-9)
        assert np.median(fit.err_s) > 0.003

    def test_irregular_refreshes_fall_back_to_midpoints(self):
        rng = np.random.default_rng(5)
        r_true = np.cumsum(rng.uniform(0.02, 0.09, 400))
        t = _times(float(r_true[-1]))
        idx = np.searchsorted(r_true, t, side="right")
        counter = idx * 5.0
        fit = fit_refreshes(t, counter)
        assert fit.method == "midpoint"
        assert np.all(fit.err_s <= 0.0101)
        # each midpoint lies within its bound of a true refresh
        i = np.searchsorted(r_true, fit.r_s)
        dist = np.minimum(np.abs(fit.r_s - r_true[np.clip(i - 1, 0, None)]),
                          np.abs(fit.r_s - r_true[np.clip(i, None, r_true.size - 1)]))
        assert np.all(dist <= fit.err_s + 1e-9)

    def test_twenty_ms_counter_at_100_hz_with_late_reads(self):
        """A 20 ms counter sampled at 100 Hz (dithered), reads late by 0.5 ms on average: counting steps
        between neighbours slips there; the refreshes are still numbered on one line, every value sits
        at its own refresh (energy there within the bound × power), and none is tied to a wrong one."""
        power = S.sine(200.0, 80.0, 1.3)
        t = _times(40.0)
        late = np.maximum.accumulate(t + np.random.default_rng(3).exponential(0.0005, t.size))
        fit = fit_refreshes(t, _counter(late, power, 0.02, 0.0071))
        assert fit.method == "periodic_fit"
        assert fit.period_s == pytest.approx(0.02, rel=1e-4)
        off_j = np.abs(np.array([power.e_j(x) for x in fit.r_s]) - fit.y)
        assert np.all(off_j <= 280.0 * (fit.err_s + 0.002))  # the line sits early by the reads' delay
        assert fit.r_s.size > 0.95 * 40.0 / 0.02

    def test_fresh_counter_keeps_sample_times(self):
        t = _times(2.0)
        fit = fit_refreshes(t, np.arange(t.size) * 3.0)
        assert fit.method == "fresh" and np.array_equal(fit.r_s, t) and not fit.err_s.any()
        # the caller's median spacing is the period of a fresh reading, unless samples were dropped
        y = np.arange(t.size) * 3.0
        assert fit_refreshes(t, y, float(np.median(np.diff(t)))).period_s == fit.period_s
        y[5] = np.nan
        assert fit_refreshes(t, y, 123.0).period_s == fit_refreshes(t, y).period_s != 123.0

    @pytest.mark.parametrize("r,kept", [
        ([0, 1, 2, 3], [0, 1, 2, 3]),                 # in order: all
        ([0, 1, 1, 2], [0, 3]),                       # two on one refresh: neither
        ([0, 1, 3, 2, 4], [0, 1, 4]),                 # a crossing: both of it
        ([0, 5, 1, 2, 3, 6], [0, 3, 4, 5]),           # one far ahead: it and the one it crossed, not the rest
        ([5, 6, 1, 2, 7], [4]),                       # a crossing left by the first pass goes in the next
    ])
    def test_refreshes_are_kept_in_the_order_their_changes_were_seen(self, r, kept):
        """A change placed at or before the one seen before it is numbered wrong (or its neighbour is):
        both go, never sorted into place (a counter's readings would then run backwards)."""
        assert np.flatnonzero(placed_in_order(np.array(r, dtype=float))).tolist() == kept

    @pytest.mark.parametrize("passes", [1, 64])
    def test_what_is_kept_is_always_in_order(self, passes, monkeypatch):
        """Any tangle (a pass at most, then the strict rule: after every one before, before every one
        after) leaves refreshes in strictly increasing order, most of a nearly ordered run kept."""
        import analyzer.integrate as I

        monkeypatch.setattr(I, "ORDER_PASSES", passes)
        rng = np.random.default_rng(3)
        for _ in range(200):
            r = np.arange(50.0)
            r[rng.integers(0, 50, 4)] += rng.normal(0, 5, 4)  # four changes placed off
            keep = placed_in_order(r)
            assert np.all(np.diff(r[keep]) > 0) and keep.sum() >= 30


class TestUncertainty:
    def _ce(self, power, dither=True, duration=20.0):
        t = _times(duration, dither=dither)
        p = np.array([power.p_w(x) for x in t])
        return counter_energy(t, _counter(t, power, 0.05, 0.0137) * 1000.0, Trace.build(t, p)), t

    def test_steady_power_bound_is_small(self):
        ce, t = self._ce(S.constant(200.0))
        u = edge_uncertainty(ce, np.array([5.0123, 7.777]), 0.01, t)
        assert np.all(u <= 0.0011)  # only the counter's 1 mJ resolution

    def test_fused_bound_outside_the_refreshes_is_the_counters_own(self):
        """With the fused shape, an edge before the first or after the last refresh keeps the whole
        per-interval bound (the fused variance holds between refreshes only), called in any order."""
        power = S.square(300.0, 60.0, 0.8)
        ce, t = self._ce(power)
        fused = ce.with_power_shape(1.0, 0.01)
        assert fused.fused is not None and ce.r_s[0] > t[0] and ce.r_s[-1] < t[-1]
        ends = np.array([t[0], 0.5 * (t[0] + ce.r_s[0]), 0.5 * (ce.r_s[-1] + t[-1]), t[-1]])
        inner = np.array([5.0123, 7.777])
        own = edge_uncertainty(ce, ends, 0.01, t, 1.0, 0.01)
        at = edge_uncertainty_fn(fused, 0.01, t, 1.0, 0.01)
        assert np.array_equal(at(inner), edge_uncertainty(fused, inner, 0.01, t, 1.0, 0.01))  # inside first
        assert np.array_equal(at(ends), own) and np.array_equal(at(np.append(ends, inner))[:4], own)
        assert not np.array_equal(at(inner), edge_uncertainty(ce, inner, 0.01, t, 1.0, 0.01))

    def test_step_edge_bound_covers_the_error(self):
        """Square wave 300/60 W: windows with an edge next to a step have a bound ≥ their error."""
        power = S.square(300.0, 60.0, 0.8)
        ce, t = self._ce(power)
        rng = np.random.default_rng(2)
        a = rng.uniform(1.0, 18.0, 400)
        b = a + 0.1
        cum = lambda x: ce.cumulative_at(np.clip(x, *ce.span))  # noqa: E731
        got = np.array([split_windows(cum, [x], [y]).energy[0] for x, y in zip(a, b)])
        true = np.array([power.e_j(y) - power.e_j(x) for x, y in zip(a, b)])
        unc = edge_uncertainty(ce, a, 0.01, t) + edge_uncertainty(ce, b, 0.01, t)
        assert (np.abs(got - true) <= unc).mean() >= 0.95
        steady = np.abs(unc) < 0.01
        assert steady.mean() > 0.25  # windows with no step near an edge say so

    def test_split_subs_propagates_edge_bounds(self):
        """One window: u(a) + u(b). Two overlapping windows: each edge of the other counts |1/1 − 1/2|."""
        cum = lambda x: 100.0 * np.asarray(x)  # noqa: E731
        pu = lambda x: np.full(np.shape(x), 1.0)  # noqa: E731
        [(e, u)] = split_subs(cum, [0.0], [2.0], [([0.0], [2.0])], pu)
        assert e[0] == pytest.approx(200.0) and u[0] == pytest.approx(2.0)
        [(e, u)] = split_subs(cum, [0.0, 1.0], [2.0, 3.0], [([0.0, 1.0], [2.0, 3.0])], pu)
        assert e.tolist() == pytest.approx([150.0, 150.0])
        # window 0: edge 0 (×1), breakpoint 1 (|1 − 1/2|), edge 2 (×1/2)
        assert u.tolist() == pytest.approx([1 + 0.5 + 0.5, 0.5 + 0.5 + 1])
        # phases [0, 0.5] and [0.5, 2] of window 0 add to its share
        (e1, _), (e2, _) = split_subs(cum, [0.0, 1.0], [2.0, 3.0],
                                      [([0.0, 1.0], [0.5, 3.0]), ([0.5, 1.0], [2.0, 3.0])], pu)
        assert e1[0] + e2[0] == pytest.approx(150.0)
        assert math.isnan(split_subs(cum, [0.0], [1.0], [([np.nan], [1.0])], pu)[0][0][0])


    def test_split_subs_as_each_alone(self):
        """Phases of the same windows split together: the phases as alone (their breakpoints are the
        same), the whole window's uncertainty bit for bit though the phases' breakpoints are added
        (the windows active do not change there), and cumulative asked once."""
        rng = np.random.default_rng(7)
        a = np.sort(rng.uniform(0.0, 50.0, 40))
        b = a + rng.uniform(0.5, 5.0, a.size)
        mid = np.where(rng.random(a.size) < 0.2, np.nan, a + rng.uniform(0.0, 1.0, a.size) * (b - a))
        calls = []
        cum = lambda x: calls.append(x) or 7.3 * x + np.sin(x)  # noqa: E731
        pu = lambda x: 0.1 + 0.01 * np.cos(x)  # noqa: E731
        subs = [(a, b), (a, mid), (mid, b)]
        got = split_subs(cum, a, b, subs, pu)
        assert len(calls) == 1
        alone = [split_subs(cum, a, b, [sub], pu)[0] for sub in subs]
        assert np.array_equal(got[0][1], alone[0][1])
        for (e, u), (e1, u1) in zip(got[1:], alone[1:]):
            assert np.array_equal(e, e1, equal_nan=True) and np.array_equal(u, u1, equal_nan=True)
        assert np.isnan(got[1][0]).sum() == np.isnan(mid).sum() > 0

class TestSteps:
    def test_counter_places_square_wave_steps(self):
        """A square wave under averaged power (no shape at 50 ms): the counter's step placement keeps
        0.1 s windows within 1 %, where apportioning by the averaged reading is off by several %."""
        power = S.square(300.0, 60.0, 0.8)
        t = _times(20.0)
        avg = np.array([(power.e_j(x) - power.e_j(x - 1.0)) for x in t])
        ce = counter_energy(t, _counter(t, power, 0.05, 0.0137) * 1000.0, Trace.build(t, avg))
        assert np.isfinite(ce.steps[0]).sum() >= 45  # 50 steps in 20 s, minus the run's ends
        rng = np.random.default_rng(4)
        a = rng.uniform(2.0, 18.0, 400)
        b = a + 0.1
        true = np.array([power.e_j(y) - power.e_j(x) for x, y in zip(a, b)])
        got = ce.cumulative_at(b) - ce.cumulative_at(a)
        assert np.max(np.abs(got / true - 1)) < 0.01

    def test_steady_power_uncertainty_is_not_inflated(self):
        """Constant 200 W with 1 W noise: the bound on 0.1 s windows stays under 0.3 % and holds."""
        rng = np.random.default_rng(6)
        power = S.constant(200.0)
        t = _times(20.0)
        p = 200.0 + rng.normal(0, 1.0, t.size)
        ce = counter_energy(t, _counter(t, power, 0.05, 0.0137) * 1000.0, Trace.build(t, p))
        a = rng.uniform(2.0, 18.0, 300)
        b = a + 0.1
        unc = edge_uncertainty(ce, a, 0.001, t, 1.0, 0.01) + edge_uncertainty(ce, b, 0.001, t, 1.0, 0.01)
        err = np.abs(ce.cumulative_at(b) - ce.cumulative_at(a) - 20.0)
        assert np.all(unc < 0.003 * 20.0)
        assert (err <= unc).mean() >= 0.95


class TestFakeTraces:
    def test_trace_energy_is_the_integral_of_its_power(self):
        """The fake pynvml's truth: for each shape, E(b) − E(a) equals a fine numerical integral of P."""
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        try:
            import fake_pynvml as F
        finally:
            sys.path.pop(0)
        shapes = [{"shape": "square", "high_w": 300.0, "low_w": 60.0, "period_s": 0.8},
                  {"shape": "ramp", "low_w": 80.0, "high_w": 320.0, "period_s": 1.7},
                  {"shape": "sine", "mean_w": 200.0, "amp_w": 100.0, "period_s": 1.3}]
        for tr in shapes:
            x = np.linspace(1.234, 4.567, 200_001)
            p = np.array([F.trace_power_w(tr, v) for v in x])
            numeric = float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(x)))
            assert F.trace_energy_j(tr, 4.567) - F.trace_energy_j(tr, 1.234) == pytest.approx(numeric, rel=2e-5)
        assert F.trace_last_refresh_s(1.2345, 0.05, 0.01) == pytest.approx(1.21)


class TestPipelineBound:
    def test_pipeline_uncertainty_bounds_the_error_on_a_square_wave(self, tmp_path):
        """Short requests on a square wave (dithered samples, 50 ms counter): each row's error lies
        inside its gpu_energy_uncertainty_j, and rows away from steps report little."""
        from analyzer import pipeline, stream
        from shared.recording import read_recording

        power = S.square(300.0, 60.0, 0.8)
        # steps at multiples of 0.4 s: windows in the middle of a level (0.12, 0.52) and across a step
        starts = (0.8 * np.arange(1, 11)[:, None] + np.array([0.12, 0.33, 0.52, 0.73])).ravel()
        reqs = [S.Req(float(a), float(a) + 0.16, model=f"m{i}", run=i) for i, a in enumerate(starts)]
        spec = S.Spec(duration_s=10.0, gpus=[S.Gpu(power)], requests=reqs, dither=True)
        bd = S.write_batch(tmp_path / "b", spec)
        _, items, _ = read_recording(bd.stream)
        rows = pipeline.analyze(stream.build(items), pipeline.Options(quality=False)).results
        for r, req in zip(sorted(rows, key=lambda x: x["run"]), reqs):
            true = power.e_j(req.b_s) - power.e_j(req.a_s)
            assert abs(r["gpu_energy_j"] - true) <= r["gpu_energy_uncertainty_j"] + 1e-9
            assert r["gpu_short_window"] is False  # 0.16 s > 3 periods
        flat = [r for r, req in zip(sorted(rows, key=lambda x: x["run"]), reqs) if abs(req.a_s % 0.4 - 0.12) < 1e-6]
        assert len(flat) == 20 and max(r["gpu_energy_uncertainty_pct"] for r in flat) < 0.2


class TestGaps:
    def test_sampling_gap_keeps_refreshes_on_the_line(self):
        """A 170 ms sampling gap (a busy host) holds several refreshes: the change seen after it is
        placed at the last refresh before it, on the fitted line, not at the gap's midpoint."""
        power = S.sine(200.0, 80.0, 1.3)
        t = _times(30.0)
        t = t[(t < 12.0) | (t > 12.17)]
        fit = fit_refreshes(t, _counter(t, power, 0.05, 0.0137))
        assert fit.method == "periodic_fit"
        # each value belongs to its placed instant: the counter's energy there (280 W at most)
        off_j = np.abs(np.array([power.e_j(x) for x in fit.r_s]) - fit.y)
        assert np.all(off_j <= 280.0 * fit.err_s + 0.001)
        # energy across the gap stays exact (whole refresh intervals) and inside its bound
        ce = counter_energy(t, _counter(t, power, 0.05, 0.0137) * 1000.0, Trace.build(t, [power.p_w(x) for x in t]))
        a, b = 11.9, 12.3
        got = ce.cumulative_at(b) - ce.cumulative_at(a)
        true = power.e_j(b) - power.e_j(a)
        unc = edge_uncertainty(ce, np.array([a, b]), 0.001, t).sum()
        assert abs(got - true) <= unc and abs(got / true - 1) < 0.005
