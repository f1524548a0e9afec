"""analyzer.windows: concurrency split, coverage, seq gaps, gauges over windows."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer.integrate import Trace
from analyzer.windows import (active_segments, coverage, gaps_touching, seq_gap_intervals, split_time,
                              split_windows, window_mean, window_peak)


def identity(x):
    return np.asarray(x, dtype=float)


class TestSplitWindows:
    def test_disjoint_windows_get_their_own_integral(self):
        """Alone, a window's share is F(b) − F(a)."""
        s = split_windows(lambda x: 10 * identity(x), [0.0, 5.0], [2.0, 6.5])
        assert s.energy.tolist() == pytest.approx([20.0, 15.0])
        assert s.max_active.tolist() == [1, 1]

    def test_overlap_is_split_equally_and_sums_to_total(self):
        """Where two requests run together each gets half; the shares add up to the union's energy."""
        s = split_windows(lambda x: 10 * identity(x), [0.0, 1.0, 1.5], [2.0, 3.0, 2.5])
        # (0,1): A alone 10 J; (1,1.5): A,B 2.5 each; (1.5,2): A,B,C 5/3 each; (2,2.5): B,C 2.5 each; (2.5,3): B 5.
        assert s.energy.tolist() == pytest.approx([10 + 2.5 + 5 / 3, 2.5 + 5 / 3 + 2.5 + 5, 5 / 3 + 2.5])
        assert s.energy.sum() == pytest.approx(30.0)
        assert s.total == pytest.approx(30.0)
        assert s.max_active.tolist() == [3, 3, 3]
        assert s.effective_s.sum() == pytest.approx(3.0)

    def test_identical_windows_split_in_half(self):
        """Two requests over the same interval share it equally."""
        s = split_windows(lambda x: 4 * identity(x), [1.0, 1.0], [3.0, 3.0])
        assert s.energy.tolist() == pytest.approx([4.0, 4.0])

    def test_end_before_start_is_an_error(self):
        """A window that ends before it starts names the problem."""
        with pytest.raises(ValueError, match="ends before it starts"):
            split_windows(identity, [2.0], [1.0])

    def test_active_segments_counts(self):
        u, n = active_segments(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
        assert u.tolist() == [0.0, 1.0, 2.0, 3.0]
        assert n.tolist() == [1, 2, 1]


def _windows(rng, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """n windows: serial, overlapping (up to ~8 in flight), one long window over all, ties, zero-length."""
    if kind == "serial":
        a = np.cumsum(rng.uniform(0.5, 2.0, n))
        return a, a + rng.uniform(0.0, 0.4, n)
    a = np.sort(rng.uniform(0.0, n / 8, n))
    b = a + rng.exponential(1.0, n)
    if kind == "long":
        b[0] = a[-1] + 5.0  # in flight through every block
    if kind == "ties":
        a, b = np.round(a), np.round(b)  # starts and ends shared by many, on block edges too
        b[::7] = a[::7]  # zero-length windows among them
    if kind == "shuffled":
        order = rng.permutation(n)
        a, b = a[order], b[order]
    return a, b


class TestSplitTime:
    """split_time: split_windows(identity)'s shares and most active, a block of windows at a time."""

    @pytest.mark.parametrize("kind", ["serial", "overlapping", "long", "ties", "shuffled"])
    @pytest.mark.parametrize("block", [1, 2, 3, 64, 1 << 15])
    def test_the_same_as_the_whole_split(self, kind, block):
        rng = np.random.default_rng(len(kind) * 1000 + block)
        a, b = _windows(rng, 500, kind)
        whole = split_windows(identity, a, b)
        calls = []
        share, most = split_time(a, b, block=block, after_block=lambda: calls.append(1))
        assert most.tolist() == whole.max_active.tolist()
        np.testing.assert_allclose(share, whole.energy, rtol=1e-12, atol=1e-12)
        assert len(calls) == -(-a.size // block)
        assert (whole.max_active.max() == 1) == (kind == "serial")  # (the case meant: overlaps or none)

    def test_an_overlap_is_shared_across_a_block_edge(self):
        """The worked example of test_overlap_is_split_equally_and_sums_to_total, a window a block."""
        share, most = split_time(np.array([0.0, 1.0, 1.5]), np.array([2.0, 3.0, 2.5]), block=1)
        assert share.tolist() == pytest.approx([1 + 0.25 + 1 / 6, 0.25 + 1 / 6 + 0.25 + 0.5, 1 / 6 + 0.25])
        assert most.tolist() == [3, 3, 3]

    def test_into_the_arrays_asked_for_and_none_for_none(self):
        made = []

        def empty(n, dtype):
            made.append(np.dtype(dtype))
            return np.full(n, -7, dtype=dtype)  # (not zero: every value must be written)

        share, most = split_time(np.array([0.0, 0.5]), np.array([1.0, 1.0]), empty=empty)
        assert made == [np.dtype(np.float64), np.dtype(np.int64)]
        assert share.tolist() == [0.75, 0.25] and most.tolist() == [2, 2]
        share, most = split_time(np.zeros(0), np.zeros(0))
        assert share.size == most.size == 0

    def test_end_before_start_is_an_error(self):
        with pytest.raises(ValueError, match="ends before it starts"):
            split_time(np.array([0.0, 2.0]), np.array([1.0, 1.0]), block=1)


class TestCoverageAndGaps:
    def test_lost_messages_make_a_gap(self):
        """Seqs missing from the publisher between two samples (and a long interval) form a gap."""
        t = np.array([0.0, 0.1, 0.2, 0.5, 0.6])
        seq = np.array([0, 2, 4, 10, 12])
        src = np.array([0, 1, 2, 3, 4, 5, 10, 11, 12])  # 6..9 never arrived
        g0, g1, lost = seq_gap_intervals(t, seq, src)
        assert g0.tolist() == [0.2] and g1.tolist() == [0.5] and lost.tolist() == [4]

    def test_lost_heartbeat_alone_is_not_a_gap(self):
        """A missing seq of another topic, with the series on time, does not mark the series."""
        t = np.array([0.0, 0.1, 0.2, 0.3])
        seq = np.array([0, 2, 5, 7])
        src = np.array([0, 1, 2, 3, 5, 6, 7])  # 4 (a heartbeat) was lost
        assert seq_gap_intervals(t, seq, src)[0].size == 0

    def test_coverage_fractions(self):
        """Inside the span and outside gaps counts; a window half outside the span is half covered."""
        cov = coverage((0.0, 10.0), np.array([4.0]), np.array([5.0]), [1.0, 3.0, -2.0, 20.0], [3.0, 6.0, 2.0, 21.0])
        assert cov.tolist() == pytest.approx([1.0, 2 / 3, 0.5, 0.0])

    def test_gaps_touching_counts_straddling_gaps(self):
        """Gaps inside or around a window are counted."""
        n = gaps_touching(np.array([1.0, 5.0]), np.array([2.0, 6.0]), [0.0, 1.5, 3.0, 1.5], [1.2, 1.6, 4.0, 5.5])
        assert n.tolist() == [1, 1, 0, 2]


class TestGauges:
    def test_mean_is_time_weighted_and_peak_includes_edges(self):
        """Mean of a ramp over [1, 3] is its midpoint value; the peak is the interpolated end."""
        tr = Trace.build([0.0, 2.0, 4.0], [0.0, 20.0, 40.0])
        assert window_mean(tr, [1.0], [3.0])[0] == pytest.approx(20.0)
        assert window_peak(tr, [1.0], [3.0])[0] == pytest.approx(30.0)

    def test_window_without_samples_is_nan(self):
        """No covering samples: NaN, not zero."""
        tr = Trace.build([0.0, 1.0], [5.0, 5.0])
        assert np.isnan(window_mean(tr, [2.0], [3.0])[0])
        assert np.isnan(window_peak(tr, [2.0], [3.0])[0])
