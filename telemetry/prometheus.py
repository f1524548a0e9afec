"""Prometheus exporter: subscribes to the telemetry bus and serves the latest values over HTTP.

    python -m telemetry.prometheus --port 9109     # then scrape http://127.0.0.1:9109/metrics

GPU gauges carry labels ``gpu``, ``uuid`` and ``simulated`` ("true" for the simulated source, so
a dashboard can never mistake it for a measurement). Energy counters are exported as Prometheus
counters (``*_joules_total``); use ``rate()`` on them for average watts. Binds 127.0.0.1 only
unless --addr says otherwise.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shared.bus import Inbox
from shared.logs import get_logger
from shared.messages import TEL_GPU, TEL_HB, TEL_HOST
from shared.cli import add_subscriber_args, subscription

log = get_logger("telemetry.prometheus")
_MIB = 1024 * 1024
GPU_LABELS = ["gpu", "uuid", "simulated"]

# (metric, help, payload key, scale to the metric's unit)
_GPU_GAUGES = (
    ("genai_gpu_power_watts", "GPU board power (see power_kind on tel.gpu).", "power_mw", 1e-3),
    ("genai_gpu_utilization_percent", "GPU utilisation.", "util_gpu_pct", 1.0),
    ("genai_gpu_memory_utilization_percent", "GPU memory-controller utilisation.", "util_mem_pct", 1.0),
    ("genai_gpu_memory_used_bytes", "GPU memory in use.", "mem_used_mib", _MIB),
    ("genai_gpu_memory_total_bytes", "GPU memory size.", "mem_total_mib", _MIB),
    ("genai_gpu_temperature_celsius", "GPU core temperature.", "temp_c", 1.0),
    ("genai_gpu_sm_clock_hertz", "GPU SM clock.", "sm_clock_mhz", 1e6),
)
_HOST_GAUGES = (
    ("genai_host_cpu_percent", "Host CPU utilisation, all cores.", "cpu_pct", 1.0),
    ("genai_host_memory_used_bytes", "Host memory in use.", "mem_used_mib", _MIB),
    ("genai_host_memory_total_bytes", "Host memory size.", "mem_total_mib", _MIB),
    ("genai_host_swap_used_bytes", "Host swap in use.", "swap_used_mib", _MIB),
)


class TelemetryMetrics:
    """Latest values from the bus, turned into metric families at scrape time (a custom collector)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.gpus: dict[tuple[Any, Any], dict[str, Any]] = {}
        self.host: dict[str, Any] | None = None
        self.hb: dict[str, Any] | None = None
        self.messages = 0

    def update(self, topic: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self.messages += 1
            if topic == TEL_GPU:
                key = (payload.get("src"), payload.get("gpu"))
                # Keep slow fields from earlier ticks; fast ticks carry only power and energy.
                self.gpus[key] = {**self.gpus.get(key, {}), **payload}
            elif topic == TEL_HOST:
                self.host = payload
            elif topic == TEL_HB:
                self.hb = payload

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            gpus = [dict(g) for g in self.gpus.values()]
            host = dict(self.host) if self.host else None
            hb = dict(self.hb) if self.hb else None
            messages = self.messages
        for name, doc, key, scale in _GPU_GAUGES:
            fam = GaugeMetricFamily(name, doc, labels=GPU_LABELS)
            for g in gpus:
                if g.get(key) is not None:
                    fam.add_metric(self._gpu_labels(g), g[key] * scale)
            yield fam
        energy = CounterMetricFamily("genai_gpu_energy_joules", "GPU total energy counter.", labels=GPU_LABELS)
        for g in gpus:
            if g.get("energy_mj") is not None:
                energy.add_metric(self._gpu_labels(g), g["energy_mj"] / 1e3)
        yield energy
        for name, doc, key, scale in _HOST_GAUGES:
            fam = GaugeMetricFamily(name, doc)
            if host and host.get(key) is not None:
                fam.add_metric([], host[key] * scale)
            yield fam
        cores = GaugeMetricFamily("genai_host_cpu_core_percent", "Host CPU utilisation per core.", labels=["core"])
        rapl = CounterMetricFamily("genai_host_rapl_energy_joules", "RAPL energy counter (unwrapped).", labels=["zone"])
        if host:
            for i, pct in enumerate(host.get("cpu_pct_per_core") or []):
                cores.add_metric([str(i)], pct)
            for zone, uj in sorted((host.get("rapl_uj") or {}).items()):
                rapl.add_metric([zone], uj / 1e6)
        yield cores
        yield rapl
        achieved = GaugeMetricFamily("genai_telemetry_achieved_hz", "Achieved sampling rate per source.",
                                     labels=["source"])
        dropped = CounterMetricFamily("genai_telemetry_dropped_ticks", "Ticks a sampler missed.", labels=["source"])
        if hb:
            for src, s in sorted((hb.get("sources") or {}).items()):
                if s.get("achieved_hz") is not None:
                    achieved.add_metric([src], s["achieved_hz"])
                if s.get("dropped_ticks") is not None:
                    dropped.add_metric([src], s["dropped_ticks"])
        yield achieved
        yield dropped
        sim = GaugeMetricFamily("genai_telemetry_simulated", "1 when the daemon's GPU source is simulated.")
        if hb:
            sim.add_metric([], 1.0 if hb.get("simulated") else 0.0)
        yield sim
        yield CounterMetricFamily("genai_telemetry_messages", "Bus messages received by this exporter.",
                                  value=messages)

    @staticmethod
    def _gpu_labels(g: dict[str, Any]) -> list[str]:
        return [str(g.get("gpu")), str(g.get("uuid", "")), "true" if g.get("simulated") else "false"]


def serve(metrics: TelemetryMetrics, port: int, addr: str = "127.0.0.1"):
    """Start the HTTP endpoint in a background thread; returns (server, thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return start_http_server(port, addr=addr, registry=registry)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m telemetry.prometheus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=9109, help="HTTP port for /metrics (default 9109)")
    ap.add_argument("--addr", default="127.0.0.1", help="HTTP address to bind (default 127.0.0.1)")
    add_subscriber_args(ap, ["tel."], "topic prefixes (default: tel.)")
    args = ap.parse_args(argv)
    metrics, inbox = TelemetryMetrics(), Inbox()
    end = time.monotonic() + args.duration if args.duration else None
    with subscription(args) as (sock, stop, endpoints):
        try:
            server, _thread = serve(metrics, args.port, args.addr)
        except OSError as exc:
            print(f"error: cannot serve on {args.addr}:{args.port}: {exc} (is the port in use? pass --port)",
                  file=sys.stderr)
            return 2
        log.info("prometheus_start", url=f"http://{args.addr}:{args.port}/metrics", endpoints=endpoints)
        try:
            while not stop.is_set() and (end is None or time.monotonic() < end):
                for msg in inbox.drain(sock, timeout_ms=100):
                    metrics.update(*msg)
        finally:
            server.shutdown()
            server.server_close()
    log.info("prometheus_stop", messages=metrics.messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
