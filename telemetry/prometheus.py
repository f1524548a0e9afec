"""Prometheus exporter: subscribes to the telemetry bus and serves the latest values over HTTP.

    python -m telemetry.prometheus --listen 127.0.0.1:9109   # then scrape http://127.0.0.1:9109/metrics

GPU gauges carry labels ``host`` (the daemon's host, from its publisher id), ``gpu``, ``uuid``,
``name`` and ``simulated`` ("true" for the simulated source, so a dashboard can never mistake it for
a measurement); host metrics carry ``host``. Subscribe to several daemons (one ``--endpoint`` each)
for a fleet view, and to the collector's (or the measuring proxy's) endpoint for ``genai_requests_total``
(labels ``host`` — the LLM server's host —, ``model``, ``status``) and ``genai_request_tokens_total``,
and to the live analyzer's ``--publish-endpoint`` for ``genai_request_energy_joules_total`` (per model). Energy counters are exported as Prometheus counters
(``*_joules_total``); use ``rate()`` on them for average watts. Listens on 127.0.0.1:9109 (--listen HOST:PORT;
--addr/--port are older spellings); another address (Prometheus on another host) needs
--allow-remote and logs a warning: /metrics has no authentication. grafana/ holds a dashboard for these metrics.
"""
from __future__ import annotations

import argparse
import sys
import threading
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shared import timebase
from shared.logs import get_logger
from shared.messages import BATCH_START, REQ_END, REQ_START, TEL_GPU, TEL_HB, TEL_HOST, src_host
from shared.cli import add_subscriber_args, subscriptions
from shared.listen import Listen, ListenError, add_listen_args, check_listen, parse_listen
from telemetry.tail import ANA_ROW, output_tokens

log = get_logger("telemetry.prometheus")
_MIB = 1024 * 1024
GPU_LABELS = ["host", "gpu", "uuid", "name", "simulated"]
REQUEST_LABELS = ["host", "model", "status"]
MAX_OPEN_REQUESTS = 10_000  # req.start kept until its req.end; beyond this the oldest are forgotten
LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}

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
        self.hosts: dict[str, dict[str, Any]] = {}      # publisher id → last tel.host
        self.hbs: dict[str, dict[str, Any]] = {}        # publisher id → last tel.hb
        self.servers: dict[str, str] = {}               # collector publisher id → the LLM server's host
        self.open: dict[str, tuple[str, str]] = {}      # rid → (server host, model) until req.end
        self.requests: dict[tuple[str, str, str], int] = {}
        self.tokens: dict[tuple[str, str], float] = {}   # (server host, model) → generated tokens
        self.joules: dict[tuple[str, str], float] = {}   # (server host, model) → GPU J of finished requests
        self.ended: dict[str, tuple[str, str]] = {}     # rid → (server host, model) until its ana.row
        self.messages = 0

    def update(self, topic: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self.messages += 1
            if topic == TEL_GPU:
                key = (payload.get("src"), payload.get("gpu"))
                # Keep slow fields from earlier ticks; fast ticks carry only power and energy.
                self.gpus[key] = {**self.gpus.get(key, {}), **payload}
            elif topic == TEL_HOST:
                self.hosts[str(payload.get("src"))] = payload
            elif topic == TEL_HB:
                self.hbs[str(payload.get("src"))] = payload
            elif topic == BATCH_START:
                self.servers[str(payload.get("src"))] = self._server_host(payload)
            elif topic == REQ_START:
                src = str(payload.get("src"))
                self.open[str(payload.get("rid"))] = (self.servers.get(src) or src_host(src) or "",
                                                      str(payload.get("model") or ""))
                while len(self.open) > MAX_OPEN_REQUESTS:
                    self.open.pop(next(iter(self.open)))
            elif topic == REQ_END:
                host, model = self.open.pop(str(payload.get("rid")), (src_host(payload.get("src")) or "", ""))
                key = (host, model, "ok" if payload.get("ok") else "failed")
                self.requests[key] = self.requests.get(key, 0) + 1
                tokens = output_tokens(payload.get("api") or {})
                if tokens is not None:
                    self.tokens[(host, model)] = self.tokens.get((host, model), 0) + tokens
                self.ended[str(payload.get("rid"))] = (host, model)
                while len(self.ended) > MAX_OPEN_REQUESTS:
                    self.ended.pop(next(iter(self.ended)))
            elif topic == ANA_ROW and payload.get("energy_ready"):
                # the live analyzer's row: counted once per request (a final row may follow the first)
                energy = (payload.get("row") or {}).get("gpu_energy_j")
                key = self.ended.pop(str(payload.get("rid")), None)
                if key is not None and isinstance(energy, (int, float)) and not isinstance(energy, bool):
                    self.joules[key] = self.joules.get(key, 0.0) + float(energy)

    @staticmethod
    def _server_host(batch_start: dict[str, Any]) -> str:
        """The LLM server's host from batch.start base_url; a loopback server is on the collector's host."""
        from urllib.parse import urlsplit

        try:
            host = urlsplit(str(batch_start.get("base_url") or "")).hostname or ""
        except ValueError:
            host = ""
        if host in LOOPBACK:
            return src_host(batch_start.get("src")) or ""
        return host

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            gpus = [dict(g) for g in self.gpus.values()]
            hosts = {src_host(k) or k: dict(v) for k, v in sorted(self.hosts.items())}
            hbs = {src_host(k) or k: dict(v) for k, v in sorted(self.hbs.items())}
            requests = dict(self.requests)
            tokens, joules = dict(self.tokens), dict(self.joules)
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
            fam = GaugeMetricFamily(name, doc, labels=["host"])
            for h, host in hosts.items():
                if host.get(key) is not None:
                    fam.add_metric([h], host[key] * scale)
            yield fam
        cores = GaugeMetricFamily("genai_host_cpu_core_percent", "Host CPU utilisation per core.",
                                  labels=["host", "core"])
        rapl = CounterMetricFamily("genai_host_rapl_energy_joules", "RAPL energy counter (unwrapped).",
                                   labels=["host", "zone"])
        for h, host in hosts.items():
            for i, pct in enumerate(host.get("cpu_pct_per_core") or []):
                cores.add_metric([h, str(i)], pct)
            for zone, uj in sorted((host.get("rapl_uj") or {}).items()):
                rapl.add_metric([h, zone], uj / 1e6)
        yield cores
        yield rapl
        achieved = GaugeMetricFamily("genai_telemetry_achieved_hz", "Achieved sampling rate per source.",
                                     labels=["host", "source"])
        dropped = CounterMetricFamily("genai_telemetry_dropped_ticks", "Ticks a sampler missed.",
                                      labels=["host", "source"])
        sim = GaugeMetricFamily("genai_telemetry_simulated", "1 when the daemon's GPU source is simulated.",
                                labels=["host"])
        for h, hb in hbs.items():
            for src, s in sorted((hb.get("sources") or {}).items()):
                if s.get("achieved_hz") is not None:
                    achieved.add_metric([h, src], s["achieved_hz"])
                if s.get("dropped_ticks") is not None:
                    dropped.add_metric([h, src], s["dropped_ticks"])
            sim.add_metric([h], 1.0 if hb.get("simulated") else 0.0)
        yield achieved
        yield dropped
        yield sim
        req = CounterMetricFamily("genai_requests", "Requests finished (req.end), by LLM server host, model and "
                                  "status (ok | failed).", labels=REQUEST_LABELS)
        for key, n in sorted(requests.items()):
            req.add_metric(list(key), n)
        yield req
        tok = CounterMetricFamily("genai_request_tokens", "Tokens generated by finished requests (the server's "
                                  "count), by LLM server host and model.", labels=["host", "model"])
        for key, n in sorted(tokens.items()):
            tok.add_metric(list(key), n)
        yield tok
        en = CounterMetricFamily("genai_request_energy_joules", "GPU energy of finished requests, from the live "
                                 "analyzer's rows (ana.row), by LLM server host and model.", labels=["host", "model"])
        for key, j in sorted(joules.items()):
            en.add_metric(list(key), j)
        yield en
        yield CounterMetricFamily("genai_telemetry_messages", "Bus messages received by this exporter.",
                                  value=messages)

    @staticmethod
    def _gpu_labels(g: dict[str, Any]) -> list[str]:
        return [src_host(g.get("src")) or "", str(g.get("gpu")), str(g.get("uuid", "")), str(g.get("name") or ""),
                "true" if g.get("simulated") else "false"]


def serve(metrics: TelemetryMetrics, port: int, addr: str = "127.0.0.1"):
    """Start the HTTP endpoint in a background thread; returns (server, thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return start_http_server(port, addr=addr, registry=registry)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m telemetry.prometheus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_listen_args(ap, "127.0.0.1:9109", "/metrics")
    ap.add_argument("--port", type=int, default=None, help="the port of --listen (older spelling)")
    ap.add_argument("--addr", default=None, help="the address of --listen (older spelling)")
    add_subscriber_args(ap, ["tel.", "req.", "batch.", ANA_ROW], "topic prefixes (default: tel. req. batch. "
                        "ana.row: telemetry, the request rate and tokens when an --endpoint is the collector's or "
                        "the measuring proxy's, joules when one is the live analyzer's --publish-endpoint)")
    args = ap.parse_args(argv)
    try:  # the one rule of every HTTP listener: loopback unless --allow-remote (no authentication)
        listen = parse_listen(args.listen)
        listen = Listen(args.addr or listen.host, listen.port if args.port is None else args.port)
        warning = check_listen(listen, args.allow_remote, "--listen/--addr")
    except ListenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if warning:
        log.warning("listen_remote", warning=warning)
    metrics = TelemetryMetrics()
    end = timebase.now_s() + args.duration if args.duration else None
    with subscriptions(args) as (subs, stop, endpoints):
        try:
            server, _thread = serve(metrics, listen.port, listen.host)
        except OSError as exc:
            print(f"error: cannot serve on {listen}: {exc} (is the port in use? pass --listen 127.0.0.1:PORT)",
                  file=sys.stderr)
            return 2
        log.info("prometheus_start", url=f"{listen.url}/metrics", endpoints=endpoints)
        try:
            while not stop.is_set() and (end is None or timebase.now_s() < end):
                for _, batch in subs.poll(100):
                    for msg in batch:
                        metrics.update(*msg)
        finally:
            server.shutdown()
            server.server_close()
    log.info("prometheus_stop", messages=metrics.messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
