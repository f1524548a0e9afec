"""Pieces shared by the telemetry entry points: stop-on-signal, CURVE key flags, subscriber set-up."""
from __future__ import annotations

import argparse
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

import zmq

from shared.bus import CurveKeys, connect_sub, telemetry_endpoint
from shared.logs import configure_logging


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGINT/SIGTERM (and Ctrl-Break on Windows); call from the main thread."""

    def handler(signum, frame):
        stop.set()

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):  # SIGBREAK exists only on Windows
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, handler)


def add_subscriber_curve_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--curve-secret", metavar="FILE",
                    help="this subscriber's .key_secret file (from `python -m telemetry.keys DIR`); "
                         "needed only when the publisher uses CURVE")
    ap.add_argument("--curve-server-key", metavar="FILE",
                    help="the publisher's public .key file (with --curve-secret)")


def subscriber_curve(args: argparse.Namespace) -> CurveKeys | None:
    if not args.curve_secret and not args.curve_server_key:
        return None
    if not (args.curve_secret and args.curve_server_key):
        raise SystemExit("error: --curve-secret and --curve-server-key go together "
                         "(this subscriber's .key_secret and the publisher's .key)")
    return CurveKeys.from_secret_file(args.curve_secret, args.curve_server_key)


def add_log_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--log-json", action="store_true", help="log JSON lines on stderr instead of key=value text")
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def add_subscriber_args(ap: argparse.ArgumentParser, topics: list[str], topics_help: str) -> None:
    """The flags every bus subscriber (tail, record, prometheus) takes."""
    ap.add_argument("--endpoint", action="append", default=None,
                    help="endpoint to subscribe to; repeatable (default: the telemetry endpoint)")
    ap.add_argument("--topics", nargs="*", default=topics, help=topics_help)
    ap.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    add_subscriber_curve_args(ap)
    add_log_args(ap)


@contextmanager
def subscription(args: argparse.Namespace) -> Iterator[tuple[zmq.Socket, threading.Event, list[str]]]:
    """Configure logging and signals, connect a SUB socket; yields (socket, stop event, endpoints)
    and closes everything on the way out."""
    configure_logging(args.log_level, json=args.log_json)
    stop = threading.Event()
    stop_on_signals(stop)
    endpoints = args.endpoint or [telemetry_endpoint()]
    ctx = zmq.Context()
    sock = None
    try:
        sock = connect_sub(ctx, endpoints, args.topics, curve=subscriber_curve(args))
        yield sock, stop, endpoints
    finally:
        if sock is not None:
            sock.close(linger=0)
        ctx.term()
