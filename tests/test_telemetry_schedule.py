"""Deadline scheduler bookkeeping, driven by a fake clock (no sleeping)."""
from __future__ import annotations

import pytest

from telemetry.schedule import DeadlineSchedule, percentile

MS = 1_000_000


class TestDeadlineSchedule:
    def test_deadlines_do_not_drift_after_a_late_tick(self):
        """A late tick does not shift later deadlines: tick k is always at start + k*period."""
        s = DeadlineSchedule(100.0, start_ns=1_000 * MS)
        assert s.begin(1_000 * MS) == 0
        assert s.begin(1_013 * MS) == 1  # 3 ms late
        assert s.deadline_ns() == 1_020 * MS

    def test_not_due_yet_returns_none(self):
        """Waking before the deadline runs nothing and counts nothing."""
        s = DeadlineSchedule(100.0, start_ns=0)
        assert s.begin(0) == 0
        assert s.begin(5 * MS) is None
        assert s.samples == 1 and s.dropped == 0

    def test_missed_ticks_are_dropped_not_bunched(self):
        """Waking 3.5 periods late runs the latest due tick once and drops the skipped ones."""
        s = DeadlineSchedule(100.0, start_ns=0)
        assert s.begin(0) == 0
        assert s.begin(45 * MS) == 4  # ticks 1, 2, 3 missed
        assert s.dropped == 3
        assert s.begin(46 * MS) is None  # no catch-up burst
        assert s.deadline_ns() == 50 * MS

    def test_report_gives_rate_jitter_and_starts_new_window(self):
        """Achieved Hz and jitter percentiles cover the window since the previous report."""
        s = DeadlineSchedule(100.0, start_ns=0)
        for k, late_ms in enumerate([0, 1, 2, 1, 0, 8, 1, 1, 0, 2]):
            assert s.begin(k * 10 * MS + late_ms * MS) == k
        rep = s.report(100 * MS)
        assert rep["samples"] == 10 and rep["dropped_ticks"] == 0
        assert rep["achieved_hz"] == pytest.approx(100.0)
        assert rep["jitter_ms_p50"] == pytest.approx(1.0)
        assert rep["jitter_ms_p99"] == pytest.approx(8.0)
        rep2 = s.report(200 * MS)
        assert rep2["achieved_hz"] == 0.0
        assert "jitter_ms_p50" not in rep2  # no ticks in the window: absent, not zero

    def test_report_counts_overdue_ticks_of_a_stuck_sampler(self):
        """While a sampler is stuck, the heartbeat already shows its missed ticks as dropped."""
        s = DeadlineSchedule(100.0, start_ns=0)
        s.begin(0)
        rep = s.report(55 * MS)  # ticks 1..5 due, none run; tick 5 may still run late
        assert rep["dropped_ticks"] == 4
        assert s.begin(55 * MS) == 5
        assert s.dropped == 4

    @pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
    def test_rejects_impossible_rates(self, rate):
        """A rate that is not a positive finite number fails at construction."""
        with pytest.raises(ValueError, match="positive"):
            DeadlineSchedule(rate, start_ns=0)


class TestPercentile:
    def test_nearest_rank(self):
        """Nearest-rank percentile picks an element of the list."""
        values = list(range(1, 101))
        assert percentile(values, 50) == 50
        assert percentile(values, 99) == 99
        assert percentile([7], 99) == 7

    def test_empty_list_is_an_error(self):
        with pytest.raises(ValueError):
            percentile([], 50)


class TestDither:
    def test_dithered_deadlines_spread_over_the_period_without_drift(self):
        """Tick k is due between k and k+1 periods; the offsets cover the period evenly."""
        s = DeadlineSchedule(100.0, 0, dither=True)
        period = s.period_ns
        offsets = [(s.deadline_ns(k) - k * period) / period for k in range(1000)]
        assert all(0 <= o < 1 for o in offsets)
        assert max(offsets) > 0.95 and min(offsets) < 0.05
        hist = [sum(1 for o in offsets if i / 10 <= o < (i + 1) / 10) for i in range(10)]
        assert min(hist) >= 90  # even spread: 100 per tenth
        # the phase relative to a 50 ms refresh is not locked: it takes many values
        phases = {round(s.deadline_ns(k) % 50_000_000 / 1e6) for k in range(500)}
        assert len(phases) > 40
        assert s.deadline_ns(10_000) < 10_001 * period  # no drift

    def test_begin_runs_the_latest_due_tick_and_counts_drops(self):
        s = DeadlineSchedule(100.0, 0, dither=True)
        assert s.begin(s.deadline_ns(0) - 1) is None
        assert s.begin(s.deadline_ns(0)) == 0
        k = s.begin(s.deadline_ns(5) + 1)
        assert k == 5 and s.dropped == 4
        assert s.begin(s.deadline_ns(6) - 1) is None
