"""Telemetry daemon: sample GPUs and the host, publish on the ZeroMQ bus until stopped.

    python -m telemetry                          # NVML if it initialises, else host only
    python -m telemetry --gpu sim --duration 10  # a SIMULATED GPU (machines without NVIDIA GPUs)
    python -m telemetry --endpoint tcp://0.0.0.0:5556 --curve-secret keys/telemetry.key_secret

Ctrl-C (SIGINT) or SIGTERM stops it cleanly (exit code 0).
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from shared.bus import BusError, telemetry_endpoint
from shared.clock import default_clock_endpoint
from shared.logs import configure_logging, get_logger
from shared.cli import add_curve_args, add_log_args, curve_keys, stop_on_signals
from telemetry.daemon import Daemon, DaemonConfig
from telemetry.gpu.base import GPUError
from telemetry.gpu.factory import open_gpus
from telemetry.host import DEFAULT_SERVER_PORT, DEFAULT_WATCH, HostReader
from telemetry.rapl import DEFAULT_ROOT

log = get_logger("telemetry")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m telemetry", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default=None,
                    help="ZeroMQ PUB endpoint to bind (default: env GENAI_TELEMETRY_ENDPOINT or tcp://127.0.0.1:5556)")
    ap.add_argument("--gpu", choices=("auto", "nvml", "sim", "none"), default="auto",
                    help="auto: NVML if it initialises, else no GPU samples (with a warning); "
                         "nvml: fail if NVML is unavailable; sim: simulated GPU(s); none: host only")
    ap.add_argument("--sim-gpus", type=int, default=1, metavar="N", help="number of simulated GPUs with --gpu sim")
    ap.add_argument("--gpu-hz", type=float, default=100.0, help="GPU power/energy sampling rate (default 100)")
    ap.add_argument("--no-dither", action="store_true",
                    help="GPU ticks on a fixed grid (default: each tick moved by a spread fraction of a period so "
                         "the sampling never locks to the energy counter's refresh; the analyzer fits the refresh)")
    ap.add_argument("--gpu-slow-hz", type=float, default=10.0,
                    help="rate of the slow GPU fields: util, memory, temperature, clock, pstate, procs (default 10)")
    ap.add_argument("--host-hz", type=float, default=10.0, help="host (psutil + RAPL) sampling rate (default 10)")
    ap.add_argument("--heartbeat-s", type=float, default=1.0, help="seconds between tel.hb heartbeats (default 1)")
    ap.add_argument("--watch", nargs="*", default=list(DEFAULT_WATCH), metavar="NAME",
                    help=f"process names to report CPU %% and RSS for (default: {' '.join(DEFAULT_WATCH)}; "
                         "give --watch with no names to watch none)")
    ap.add_argument("--rapl-root", type=Path, default=DEFAULT_ROOT,
                    help=f"powercap tree to read RAPL counters from (default {DEFAULT_ROOT.as_posix()})")
    ap.add_argument("--no-rapl", action="store_true", help="do not read RAPL counters")
    ap.add_argument("--server-port", type=int, default=DEFAULT_SERVER_PORT, metavar="PORT",
                    help="TCP port of the LLM server: the process listening there and its children are watched "
                         "and their CPU time recorded (tel.host server_cpu_s) for the server's CPU share "
                         f"(default {DEFAULT_SERVER_PORT}, Ollama's; llama-server and vLLM: the port they serve on; "
                         "0: off)"),
    ap.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop by itself after this long")
    ap.add_argument("--clock-endpoint", default=None,
                    help="REP endpoint answering the collector's clock probes (default: the telemetry port + 2 on "
                         "the same address, e.g. tcp://127.0.0.1:5558; 'none' to answer none). Same loopback-or-"
                         "CURVE rule as the bus")
    ap.add_argument("--test-pose-host", default=None, metavar="NAME", help=argparse.SUPPRESS)
    ap.add_argument("--test-clock-offset-s", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--test-clock-drift-ppm", type=float, default=0.0, help=argparse.SUPPRESS)
    add_curve_args(ap, server_key=False)
    ap.add_argument("--send-hwm", type=int, default=None, metavar="N",
                    help="messages queued per slow subscriber before they are dropped for it (default 200000)")
    ap.add_argument("--send-buffer-kib", type=int, default=None, metavar="KIB",
                    help="kernel send buffer per subscriber connection (default: OS default; TCP autotunes it "
                         "up to several MiB, so a stalled subscriber lags by seconds before it loses messages)")
    add_log_args(ap)
    return ap


def _clock_options(args: argparse.Namespace) -> dict:
    """The clock probe endpoint, and the tests' pose as another host (its name, a boot id of its own and a
    clock offset + drift applied to every stamp), which the loopback multi-host tests need."""
    endpoint = args.endpoint or telemetry_endpoint()
    clock = None if (args.clock_endpoint or "").lower() == "none" else (args.clock_endpoint or
                                                                         default_clock_endpoint(endpoint))
    out: dict = {"clock_endpoint": clock, "clock_optional": not args.clock_endpoint}
    if args.test_pose_host:
        out["src"] = f"telemetry@{args.test_pose_host}"
        out["boot_id"] = f"test-pose-{args.test_pose_host}"
    if args.test_clock_offset_s or args.test_clock_drift_ppm:
        # remote = t + offset + drift × t on the machine's clock (shared.timebase): a test knows the true mapping exactly
        offset_ns, drift = round(args.test_clock_offset_s * 1e9), args.test_clock_drift_ppm * 1e-6
        out["clock_skew"] = lambda t: t + offset_ns + round(drift * t)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    stop = threading.Event()
    stop_on_signals(stop)
    backend = None
    try:
        curve = curve_keys(args)
        config = DaemonConfig(
            endpoint=args.endpoint or telemetry_endpoint(), gpu_hz=args.gpu_hz, gpu_slow_hz=args.gpu_slow_hz,
            host_hz=args.host_hz, heartbeat_s=args.heartbeat_s, watch=tuple(args.watch),
            rapl_root=None if args.no_rapl else args.rapl_root, duration_s=args.duration, curve=curve,
            send_hwm=args.send_hwm, gpu_dither=not args.no_dither, server_port=args.server_port or None,
            send_buffer_b=None if args.send_buffer_kib is None else args.send_buffer_kib * 1024,
            **_clock_options(args))
        gpus, source, backend = open_gpus(args.gpu, args.sim_gpus)
        host = HostReader(config.watch, config.rapl_root, config.server_port)
        if host.rapl is not None and host.rapl.problems:
            log.warning("rapl_unavailable", problems=host.rapl.problems)
        daemon = Daemon(config, gpus, source, host)
        daemon.run(stop)
        if daemon.stuck_sources:
            backend = None  # nvmlShutdown could block behind the stuck call: let the OS clean up
    except (BusError, GPUError, ValueError) as exc:
        log.error("telemetry_refused", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if backend is not None:
            backend.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
