"""The simulated GPU: power follows the load, its energy counter is the exact integral of power."""
from __future__ import annotations

import itertools

import pytest

from telemetry.gpu.sim import HostCpuLoad, SimGPU
from telemetry.sampler import GpuReader

MS = 1_000_000


class TestSimGPU:
    def test_power_follows_load_above_idle_floor(self):
        """power = idle + (max - idle) * load, in mW."""
        loads = iter([0.0, 0.5, 1.0])
        g = SimGPU(load=lambda: next(loads), idle_mw=20_000, max_mw=220_000)
        readings = []
        for t in (0, 10 * MS, 20 * MS):
            g.at(t)
            readings.append(g.power_mw())
        assert readings == [20_000, 120_000, 220_000]

    def test_energy_equals_left_riemann_sum_of_published_power_exactly(self):
        """Energy counter = sum(power_i * (t_{i+1} - t_i)) over the samples, with no rounding error."""
        load_seq = itertools.cycle([0.1, 0.73, 0.0, 1.0, 0.42, 0.05])
        g = SimGPU(load=lambda: next(load_seq), idle_mw=31_000, max_mw=301_000)
        reader = GpuReader(g)
        ticks = [0]
        for step in itertools.islice(itertools.cycle([10 * MS, 9 * MS + 123, 31 * MS, 1]), 200):
            ticks.append(ticks[-1] + step)  # uneven spacing, like jitter and dropped ticks
        samples = [reader.read(t, slow=False)[0] for t in ticks]
        expected_mw_ns = sum(samples[i]["power_mw"] * (ticks[i + 1] - ticks[i]) for i in range(len(ticks) - 1))
        assert samples[-1]["energy_mj"] == expected_mw_ns / 1e9
        assert samples[0]["energy_mj"] == 0.0

    def test_every_reading_says_simulated(self):
        """Each tel.gpu body of the sim source carries simulated=True and power_kind 'sim'."""
        reader = GpuReader(SimGPU(load=lambda: 0.3))
        body, errors = reader.read(0, slow=True)
        assert errors == []
        assert body["simulated"] is True and body["power_kind"] == "sim"
        assert body["util_gpu_pct"] == 30 and body["pstate"] == "P0"

    def test_time_going_backwards_is_an_error(self):
        g = SimGPU(load=lambda: 0.0)
        g.at(100)
        with pytest.raises(ValueError, match="backwards"):
            g.at(50)

    def test_rejects_idle_above_max(self):
        with pytest.raises(ValueError, match="idle_mw"):
            SimGPU(load=lambda: 0.0, idle_mw=300_000, max_mw=100_000)

    def test_load_is_clamped_to_0_1(self):
        """A load function out of range cannot give negative or super-max power."""
        loads = iter([-2.0, 7.0])
        g = SimGPU(load=lambda: next(loads), idle_mw=10_000, max_mw=50_000)
        g.at(0)
        low = g.power_mw()
        g.at(1)
        assert (low, g.power_mw()) == (10_000, 50_000)


class TestHostCpuLoad:
    def test_returns_a_fraction_and_refreshes_only_after_the_period(self):
        """The host load is 0..1 and is recomputed only when refresh_s has passed."""
        now = [0.0]
        load = HostCpuLoad(refresh_s=0.1, clock=lambda: now[0])
        assert load() == 0.0  # before the first refresh: nothing measured yet
        sum(i * i for i in range(200_000))  # some CPU work so the delta is not empty
        now[0] = 0.2
        value = load()
        assert 0.0 <= value <= 1.0
        assert load._last_t == 0.2
