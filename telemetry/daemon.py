"""The daemon's threads: one sampler thread per source, one publisher thread that owns the socket.

ZeroMQ sockets are not thread-safe, so sampler threads never touch the socket: each runs its own
deadline schedule, takes readings, and puts ``(topic, body, t_ns, wall_ns)`` on a queue. The
thread that called :meth:`Daemon.run` binds the PUB socket, publishes what arrives and emits the
heartbeat about once a second. A hung GPU read blocks only its own thread; its missed ticks show
up as ``dropped_ticks`` in the heartbeat while tel.host and tel.hb keep flowing.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import zmq

from shared import timebase
from shared.bus import BusError, CurveKeys, Publisher, bind_pub
from shared.clock import ClockServer, boot_id
from shared.logs import get_logger
from shared.messages import TEL_GPU, TEL_HB, TEL_HOST, TelHb, source_id
from telemetry.gpu.base import GPU
from telemetry.host import DEFAULT_WATCH, HostReader
from telemetry.rapl import DEFAULT_ROOT
from telemetry.sampler import GpuReader, slow_every
from telemetry.schedule import DeadlineSchedule

log = get_logger("telemetry")

Item = tuple[str, dict[str, Any], int, int]  # topic, body, t_ns, wall_ns
LOW_RATE_BEATS = 3  # heartbeats in a row below 95 % of the target rate before the daemon warns
TickFn = Callable[[int, int], "tuple[str, dict[str, Any]] | None"]


@dataclass
class DaemonConfig:
    endpoint: str
    gpu_hz: float = 100.0
    gpu_slow_hz: float = 10.0
    host_hz: float = 10.0
    heartbeat_s: float = 1.0
    gpu_dither: bool = True   # GPU ticks dithered so they never lock to the energy counter's refresh
    server_port: int | None = None  # watch the process listening here (the LLM server): its CPU time
    watch: tuple[str, ...] = DEFAULT_WATCH
    rapl_root: Path | None = DEFAULT_ROOT
    duration_s: float | None = None
    curve: CurveKeys | None = None
    send_hwm: int | None = None
    send_buffer_b: int | None = None
    src: str = field(default_factory=lambda: source_id("telemetry"))
    clock_endpoint: str | None = None   # REP endpoint answering the collector's clock probes (None: none)
    clock_optional: bool = False        # a derived default endpoint that cannot be bound is skipped, with a warning
    boot_id: str | None = field(default_factory=boot_id)
    # tests only: a daemon posing as another host maps its clock (shared.timebase) (offset and drift) everywhere it stamps
    clock_skew: Callable[[int], int] | None = None

    def __post_init__(self):
        for name in ("gpu_hz", "gpu_slow_hz", "host_hz", "heartbeat_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration must be positive seconds, got {self.duration_s!r}")


class SourceThread(threading.Thread):
    """Runs ``tick(t_ns, k)`` on a deadline schedule and queues what it returns."""

    def __init__(self, name: str, rate_hz: float, tick: TickFn, out: "queue.SimpleQueue[Item]",
                 stop: threading.Event, clock_ns: Callable[[], int] | None = None, dither: bool = False,
                 sleep: Callable[[float], None] = time.sleep):
        # daemon=True: a thread stuck inside a driver call must not keep the process alive.
        super().__init__(name=f"sampler-{name}", daemon=True)
        self.source = name
        self._tick = tick
        self._out = out
        self._stop_event = stop
        # the shared clock (read at each call, so timebase.injected reaches it); tests may pass their own
        self._clock_ns = clock_ns or (lambda: timebase.now_ns())
        self._sleep = sleep
        self.schedule = DeadlineSchedule(rate_hz, self._clock_ns(), dither=dither)
        self.failures = 0

    def run(self) -> None:
        sched, stop, clock = self.schedule, self._stop_event, self._clock_ns
        while not stop.is_set():
            wait_ns = sched.deadline_ns() - clock()
            if wait_ns > 0:
                # time.sleep wakes more punctually than Event.wait (high-resolution on Windows from
                # Python 3.11); the 50 ms cap keeps stop responsive.
                self._sleep(min(wait_ns / 1e9, 0.05))
                continue
            # one reading stamps the sample and starts the tick: the stamp is on the schedule's clock
            t_ns, wall_ns = clock(), time.time_ns()
            k = sched.begin(t_ns)
            if k is None:
                continue
            try:
                item = self._tick(t_ns, k)
            except Exception as exc:  # a bug or an unexpected driver error must not kill sampling
                self.failures += 1
                if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                    log.error("sampler_failed", source=self.source, error=repr(exc), failures=self.failures)
                continue
            if item is not None:
                self._out.put((item[0], item[1], t_ns, wall_ns))


class GpuTicker:
    """The tick function of one GPU source: fast fields every tick, slow ones every n-th.

    Failures are logged when a field starts failing (or fails differently) and when it recovers,
    not on every tick: a lost GPU sampled at 100 Hz must not flood the log."""

    def __init__(self, gpu: GPU, every: int):
        self.reader = GpuReader(gpu)
        self.every = every
        self._last_block = -1
        self.failing: dict[str, str] = {}  # field -> error code, for fields failing now

    def __call__(self, t_ns: int, k: int):
        block = k // self.every
        slow = block != self._last_block  # a dropped multiple of n still gets its slow read
        self._last_block = block
        body, failures = self.reader.read(t_ns, slow)
        failed_now = dict(failures)
        new = [(f, e) for f, e in failures if self.failing.get(f) != e.code]
        recovered = [f for f in self.reader.labels(slow) if f in self.failing and f not in failed_now]
        for f in recovered:
            del self.failing[f]
        for f, e in new:
            self.failing[f] = e.code
        if new:
            log.warning("gpu_read_failed", gpu=self.reader.gpu.index, errors=[f"{f}: {e.code}" for f, e in new],
                        detail=[str(e) for _, e in new])
        if recovered:
            log.info("gpu_read_recovered", gpu=self.reader.gpu.index, fields=recovered)
        return TEL_GPU, body


class Daemon:
    """Samples ``gpus`` and the host and publishes on ``config.endpoint`` until stopped."""

    def __init__(self, config: DaemonConfig, gpus: list[GPU], gpu_source: str,
                 host: HostReader | None = None, ctx: zmq.Context | None = None):
        self.config = config
        self.gpus = gpus
        self.gpu_source = gpu_source
        self.simulated = any(g.simulated for g in gpus)
        self.host = host if host is not None else HostReader(config.watch, config.rapl_root, config.server_port)
        self._ctx = ctx
        self.published = 0
        self.started = threading.Event()  # set once the socket is bound and sampling has begun
        self.threads: list[SourceThread] = []
        self.tickers: dict[str, GpuTicker] = {}
        self.stuck_sources: list[str] = []  # sampler threads still inside a driver call at exit
        self._low_rate: dict[str, int] = {}    # source -> consecutive heartbeats below its target rate

    def describe(self) -> dict[str, Any]:
        """What the daemon samples and where it publishes (the start log line)."""
        c = self.config
        rapl = self.host.rapl
        return {
            "endpoint": c.endpoint, "src": c.src, "gpu_source": self.gpu_source, "simulated": self.simulated,
            "gpus": [f"{g.index}:{g.name} ({g.uuid}, power_kind={g.power_kind})" for g in self.gpus],
            "gpu_hz": c.gpu_hz if self.gpus else None, "gpu_dither": c.gpu_dither,
            "gpu_slow_hz": c.gpu_slow_hz if self.gpus else None,
            "host_hz": c.host_hz, "watch": list(c.watch), "server_port": c.server_port,
            "rapl_zones": [z.key for z in rapl.zones] if rapl else [],
            "curve": c.curve is not None, "clock": timebase.describe(),
        }

    def _start_threads(self, out: "queue.SimpleQueue[Item]", stop: threading.Event) -> None:
        every = slow_every(self.config.gpu_hz, self.config.gpu_slow_hz)
        for gpu in self.gpus:
            ticker = GpuTicker(gpu, every)
            self.tickers[f"gpu{gpu.index}"] = ticker
            self.threads.append(SourceThread(f"gpu{gpu.index}", self.config.gpu_hz, ticker, out, stop,
                                             dither=self.config.gpu_dither))
        self.threads.append(SourceThread("host", self.config.host_hz,
                                         lambda t_ns, k: (TEL_HOST, self.host.read()), out, stop))
        for th in self.threads:
            th.start()

    def heartbeat(self, now_ns: int, started_ns: int) -> dict[str, Any]:
        sources = {}
        for th in self.threads:
            entry = th.schedule.report(now_ns)
            ticker = self.tickers.get(th.source)
            entry["errors"] = th.failures + (ticker.reader.errors_total if ticker else 0)
            sources[th.source] = entry
            self._check_rate(th.source, entry)
        return TelHb(sources=sources, gpu_source=self.gpu_source, simulated=self.simulated, gpus=len(self.gpus),
                     uptime_s=(now_ns - started_ns) / 1e9, boot_id=self.config.boot_id,
                     clock_port=self.clock_port, clock=timebase.describe()).to_msg()

    def _check_rate(self, source: str, entry: dict[str, Any]) -> None:
        """Warn once when a source stays below 95 % of its target rate for LOW_RATE_BEATS heartbeats
        (one slow second is load; three in a row is a clock, a sleep or a driver that cannot keep up)."""
        n = self._low_rate.get(source, 0)
        if entry.get("rate_low"):
            self._low_rate[source] = n + 1
            if n + 1 == LOW_RATE_BEATS:
                log.warning("sampling_rate_low", source=source, target_hz=entry["target_hz"],
                            achieved_hz=round(entry["achieved_hz"], 1), rate_ratio=entry.get("rate_ratio"),
                            dropped_ticks=entry["dropped_ticks"], clock=timebase.describe(),
                            effect="fewer samples per request window than asked; energy edges are coarser",
                            fix="lower --gpu-hz, free a CPU core, or check the clock (Python >= 3.11 on Windows)")
        elif entry.get("rate_low") is False:
            if n >= LOW_RATE_BEATS:
                log.info("sampling_rate_recovered", source=source, achieved_hz=round(entry["achieved_hz"], 1))
            self._low_rate[source] = 0

    @property
    def clock_port(self) -> int | None:
        from urllib.parse import urlsplit

        return urlsplit(self.config.clock_endpoint).port if self.config.clock_endpoint else None

    def run(self, stop: threading.Event) -> int:
        """Publish until ``stop`` is set or the duration ends; returns the number of messages sent."""
        ctx = self._ctx or zmq.Context.instance()
        hwm = {} if self.config.send_hwm is None else {"send_hwm": self.config.send_hwm}
        sock = bind_pub(ctx, self.config.endpoint, self.config.curve, send_buffer_b=self.config.send_buffer_b, **hwm)
        out: "queue.SimpleQueue[Item]" = queue.SimpleQueue()
        inner_stop = threading.Event()
        pub = Publisher(sock, self.config.src)
        started_ns = timebase.now_ns()
        hb_ns = round(self.config.heartbeat_s * 1e9)
        next_hb = started_ns + hb_ns
        end_ns = started_ns + round(self.config.duration_s * 1e9) if self.config.duration_s else None
        skew = self.config.clock_skew or (lambda t: t)
        clock = None
        if self.config.clock_endpoint:
            try:
                clock = ClockServer(ctx, self.config.clock_endpoint, self.config.src,
                                    lambda: skew(timebase.now_ns()), self.config.boot_id, self.config.curve)
                clock.start()
            except BusError as exc:
                if not self.config.clock_optional:
                    sock.close(linger=0)
                    raise
                log.warning("clock_probe_unavailable", error=str(exc),
                            hint="a collector on another host cannot map this daemon's clock; pass --clock-endpoint")
                self.config.clock_endpoint = None
        log.info("telemetry_start", **self.describe(), clock_endpoint=self.config.clock_endpoint)
        weak = timebase.timing_ok()
        if weak:
            log.warning("timing_too_coarse", problem=weak, fix="use Python 3.11 or later")
        # Python hands the GIL over only every 5 ms by default; a sampler woken for its deadline
        # would wait that long behind the publisher. A shorter interval keeps 1 kHz jitter small.
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(min(old_switch, 0.0002))
        try:
            self._start_threads(out, inner_stop)
            self.started.set()
            while not stop.is_set():
                now = timebase.now_ns()
                if end_ns is not None and now >= end_ns:
                    break
                if now >= next_hb:
                    pub.publish(TEL_HB, self.heartbeat(now, started_ns), t=skew(now))
                    self.published += 1
                    next_hb = max(next_hb + hb_ns, now + hb_ns // 2)
                    continue
                timeout_s = min(next_hb - now, (end_ns or next_hb) - now, 100_000_000) / 1e9
                try:
                    topic, body, t_ns, wall_ns = out.get(timeout=max(timeout_s, 0.0))
                except queue.Empty:
                    continue
                pub.publish(topic, body, t=skew(t_ns), wall=wall_ns)
                self.published += 1
        finally:
            inner_stop.set()
            if clock is not None:
                clock.stop()
            for th in self.threads:
                th.join(timeout=1.0)
                if th.is_alive():
                    self.stuck_sources.append(th.source)
                    log.warning("sampler_stuck_at_exit", source=th.source,
                                hint="a driver call did not return; the thread is abandoned")
            sock.close(linger=0)
            sys.setswitchinterval(old_switch)
            log.info("telemetry_stop", published=self.published,
                     sources={th.source: {"samples": th.schedule.samples, "dropped": th.schedule.dropped}
                              for th in self.threads})
        return self.published
