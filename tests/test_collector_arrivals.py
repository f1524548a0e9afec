"""Open-loop arrival schedules and the scheduler that keeps them (collector.arrivals)."""
import asyncio
import statistics

import pytest

from collector import arrivals as A


def test_poisson_has_the_requested_mean_rate_and_cv_near_one():
    starts = A.offsets("poisson", 5001, 4.0, seed=7)
    g = A.gaps(starts)
    assert starts[0] == 0.0 and len(starts) == 5001
    assert statistics.fmean(g) == pytest.approx(0.25, rel=0.05)
    assert A.cv(g) == pytest.approx(1.0, abs=0.05)


def test_poisson_is_reproducible_by_seed_and_differs_across_seeds():
    assert A.offsets("poisson", 50, 2.0, seed=1) == A.offsets("poisson", 50, 2.0, seed=1)
    assert A.offsets("poisson", 50, 2.0, seed=1) != A.offsets("poisson", 50, 2.0, seed=2)


def test_constant_arrivals_are_evenly_spaced():
    starts = A.offsets("constant", 9, 0.5)
    assert starts == pytest.approx([2.0 * i for i in range(9)])
    assert A.cv(A.gaps(starts)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind,rate", [("uniform", 1.0), ("poisson", 0.0), ("constant", -1.0)])
def test_bad_schedule_inputs_are_refused(kind, rate):
    with pytest.raises(ValueError):
        A.offsets(kind, 3, rate)


async def test_open_loop_starts_on_schedule_without_waiting_for_earlier_requests():
    """Requests take 0.3 s but arrive every 0.05 s: with no bound they overlap and none is late."""
    in_flight, peak = 0, 0

    async def start(i, rec):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1

    records = await A.run_open_loop(A.offsets("constant", 6, 20.0), None, start)
    assert [r.index for r in records] == list(range(6))
    assert peak == 6  # open loop: every request was in flight at once
    s = A.late_summary(records)
    assert s["blocked"] == 0 and s["late"] == 0, s
    assert all(r.started_s == pytest.approx(r.scheduled_s, abs=0.02) for r in records)


async def test_max_concurrency_bounds_the_loop_and_counts_late_starts():
    """Bound 2, service 0.2 s, arrivals every 0.02 s: requests 3.. must wait, and each one says so."""
    in_flight, peak = 0, 0

    async def start(i, rec):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1

    records = await A.run_open_loop(A.offsets("constant", 5, 50.0), 2, start)
    assert peak == 2
    assert [r.blocked for r in records] == [False, False, True, True, True]
    s = A.late_summary(records)
    assert s["late"] == 3 and s["blocked"] == 3
    assert records[2].lag_ms >= 150  # it started when the first slot freed (≈0.2 s), not at 0.04 s


async def test_stop_ends_the_schedule_and_drains_what_started():
    stop = asyncio.Event()
    finished = []

    async def start(i, rec):
        if i == 1:
            stop.set()
        await asyncio.sleep(0.05)
        finished.append(i)

    records = await A.run_open_loop(A.offsets("constant", 10, 100.0), None, start, stop)
    assert [r.index for r in records] == [0, 1] and sorted(finished) == [0, 1]
