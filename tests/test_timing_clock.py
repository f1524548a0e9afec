"""Windows timing without Windows: the daemon's sampler loop and the collector's request timing run with
an injected 15.6 ms clock (what time.monotonic is on Windows before Python 3.13) and with the shared
high-resolution clock (shared.timebase: perf_counter_ns, QueryPerformanceCounter there). The coarse runs
show what the switch fixes; the daemon reports and warns when a source stays below 95 % of its rate."""
from __future__ import annotations

import queue
import threading
import time

import aiohttp
import pytest
from structlog.testing import capture_logs

from collector.backends import Params
from collector.runner import run_request
from shared import timebase
from telemetry.daemon import LOW_RATE_BEATS, Daemon, DaemonConfig, SourceThread
from telemetry.host import HostReader
from tests.stubs import ollama_stub, serve

TICK = timebase.WINDOWS_TICK_NS  # 15.625 ms


class VirtualTime:
    """Simulated time for the sampler loop: ``sleep`` advances it (exactly, as Python >= 3.11 sleeps on
    Windows, or in whole ticks like Python 3.10 there), ``fine``/``coarse`` read it at 1 ns or 15.6 ms."""

    def __init__(self, sleep_tick_ns: int = 0):
        self.t = 1_000_000_000
        self.sleep_tick_ns = sleep_tick_ns

    def sleep(self, s: float) -> None:
        self.t += max(1, round(s * 1e9))
        if self.sleep_tick_ns:  # wakes on the next timer tick only
            self.t = -(-self.t // self.sleep_tick_ns) * self.sleep_tick_ns

    def fine(self) -> int:
        return self.t

    def coarse(self) -> int:
        return self.t // TICK * TICK


def run_sampler(clock, vt: VirtualTime, seconds: float = 2.0, rate_hz: float = 100.0):
    """SourceThread.run (the daemon's own loop, in this thread) for ``seconds`` of simulated time."""
    out: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    end = vt.t + int(seconds * 1e9)

    def tick(t_ns, k):
        vt.t += 200_000  # a reading takes 0.2 ms
        if vt.t >= end:
            stop.set()
        return "tel.host", {"k": k}

    th = SourceThread("host", rate_hz, tick, out, stop, clock_ns=clock, sleep=vt.sleep)
    start = th.schedule.start_ns
    th.run()
    stamps = []
    while not out.empty():
        stamps.append(out.get()[2])
    return th, stamps, (vt.t - start) / 1e9


class TestDaemonSchedule:
    def test_the_shared_clock_reaches_100_hz_with_10_ms_stamps(self):
        vt = VirtualTime()
        th, stamps, span = run_sampler(vt.fine, vt)
        assert len(stamps) / span == pytest.approx(100, rel=0.02) and th.schedule.dropped == 0
        gaps = {b - a for a, b in zip(stamps, stamps[1:])}
        assert all(abs(g - 10_000_000) < 500_000 for g in gaps), sorted(gaps)[:5]
        beat = th.schedule.report(vt.t)
        assert beat["rate_ratio"] == 1.0 and beat["rate_low"] is False

    def test_a_15_6_ms_clock_drops_a_third_of_the_ticks_and_rounds_every_stamp(self):
        """What Windows' time.monotonic did: the loop sees time in 15.6 ms steps, so two 10 ms deadlines
        often fall in one step and one is dropped (~64 Hz), and every stamp is a multiple of 15.6 ms."""
        vt = VirtualTime()
        th, stamps, span = run_sampler(vt.coarse, vt)
        assert len(stamps) / span < 70 and th.schedule.dropped > 0.3 * len(stamps)
        assert all(s % TICK == 0 for s in stamps)
        assert {b - a for a, b in zip(stamps, stamps[1:])} <= {TICK, 2 * TICK}  # never the 10 ms asked for
        beat = th.schedule.report(vt.t)
        assert beat["rate_low"] is True and beat["rate_ratio"] < 0.7

    def test_a_15_6_ms_sleep_misses_100_hz_even_with_the_fine_clock(self):
        """Python 3.10 on Windows: time.sleep wakes on 15.6 ms timer ticks (requires-python >= 3.11)."""
        vt = VirtualTime(sleep_tick_ns=TICK)
        th, stamps, span = run_sampler(vt.fine, vt)
        assert len(stamps) / span < 70
        assert th.schedule.report(vt.t)["rate_low"] is True
        assert timebase.timing_ok((3, 10), "win32") is not None and timebase.timing_ok((3, 11), "win32") is None

    def test_the_daemon_warns_once_when_a_source_stays_below_95_percent(self):
        """tel.hb carries rate_ratio / rate_low per source and the clock; after LOW_RATE_BEATS low heartbeats
        in a row the daemon logs sampling_rate_low once, and sampling_rate_recovered when it catches up."""
        vt = VirtualTime()
        daemon = Daemon(DaemonConfig(endpoint="tcp://127.0.0.1:1", watch=(), rapl_root=None), [], "none",
                        host=HostReader(watch=(), rapl_root=None))
        with capture_logs() as logs:
            for i in range(LOW_RATE_BEATS + 2):
                th, _, _ = run_sampler(vt.coarse, vt, seconds=1.0)
                daemon.threads = [th]
                hb = daemon.heartbeat(vt.t, 0)
                assert hb["sources"]["host"]["rate_low"] is True and hb["clock"].startswith("perf_counter")
            th, _, _ = run_sampler(vt.fine, vt, seconds=1.0)
            daemon.threads = [th]
            assert daemon.heartbeat(vt.t, 0)["sources"]["host"]["rate_low"] is False
        low = [e for e in logs if e["event"] == "sampling_rate_low"]
        assert len(low) == 1 and low[0]["source"] == "host" and low[0]["log_level"] == "warning"
        assert low[0]["target_hz"] == 100.0 and low[0]["achieved_hz"] < 70
        assert [e["event"] for e in logs if e["event"] == "sampling_rate_recovered"] == ["sampling_rate_recovered"]


class TestSharedClock:
    def test_it_is_perf_counter_and_on_linux_the_monotonic_clock(self):
        """Recordings made with time.monotonic_ns and the clock probe stay on one clock: on Linux
        perf_counter is CLOCK_MONOTONIC, the very clock monotonic reads."""
        import sys

        a = timebase.now_ns()
        assert time.perf_counter_ns() - a >= 0 and "perf_counter" in timebase.describe()
        if sys.platform == "linux":
            assert time.get_clock_info("perf_counter").implementation == time.get_clock_info("monotonic").implementation
            assert abs(time.monotonic_ns() - timebase.now_ns()) < 50_000_000

    def test_injection_reaches_every_stamp_and_ends_with_the_block(self):
        from shared.messages import Stamper

        with timebase.injected(timebase.coarse()):
            assert all(Stamper("x@y").stamp({})["t"] % TICK == 0 for _ in range(5))
        assert timebase.describe().startswith("perf_counter")


async def _timed_request(url: str):
    async with aiohttp.ClientSession() as s:
        return await run_request(s, "ollama", url, "ok", "Why?", Params(max_tokens=8), timeout_s=10)


class TestCollectorTiming:
    async def test_chunk_times_and_ttft_keep_millisecond_detail_on_the_shared_clock(self):
        """A real stub server streams a chunk every 4 ms: on the shared clock the gaps read ~4 ms and the
        first token is not a multiple of 15.6 ms; on an injected 15.6 ms clock most gaps read 0 and the
        rest 15.6 ms, and TTFT is rounded to the step: ITL/TPOT would be nonsense."""
        app = ollama_stub.make_app(load_s=0.0, token_delay_s=0.004)
        async with serve(app) as url:
            fine = await _timed_request(url)
            with timebase.injected(timebase.coarse()):
                coarse = await _timed_request(url)
        assert fine.ok and coarse.ok
        gaps = [b - a for a, b in zip(fine.client.chunk_t_ns, fine.client.chunk_t_ns[1:])]
        assert gaps and all(g > 0 for g in gaps) and sum(gaps) / len(gaps) < 12_000_000  # ~4 ms + loop overhead
        c = coarse.client
        coarse_gaps = {b - a for a, b in zip(c.chunk_t_ns, c.chunk_t_ns[1:])}
        assert all(t % TICK == 0 for t in c.chunk_t_ns) and coarse_gaps <= {0, TICK, 2 * TICK} and 0 in coarse_gaps
        assert round(c.first_token_s * 1e9) % TICK in (0, TICK - 1, 1)  # a whole number of 15.6 ms steps
