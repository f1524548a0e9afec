"""Command-line pieces every process shares (daemon, collector, analyzer, bus subscribers):
stop-on-signal, log flags, CURVE key flags and loading, subscriber set-up. One definition each."""
from __future__ import annotations

import argparse
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import zmq

from shared.bus import BusSecurityError, CurveKeys, Subscriptions, telemetry_endpoint
from shared.logs import configure_logging


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGINT/SIGTERM (and Ctrl-Break on Windows); call from the main thread."""

    def handler(signum, frame):
        stop.set()

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):  # SIGBREAK exists only on Windows
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, handler)


def _flag(ap: argparse.ArgumentParser, name: str, underscore: bool, **kw) -> None:
    """``--a-b``, plus the seed's ``--a_b`` spelling where a CLI keeps it."""
    names = [name] + (["--" + name[2:].replace("-", "_")] if underscore and "-" in name[2:] else [])
    ap.add_argument(*names, dest=name[2:].replace("-", "_"), **kw)


def add_curve_args(ap: argparse.ArgumentParser, underscore: bool = False, server_key: bool = True) -> None:
    """``--curve-secret FILE`` (this process's key pair) and, for a subscriber, ``--curve-server-key FILE``."""
    _flag(ap, "--curve-secret", underscore, type=Path, metavar="FILE",
          help="this process's .key_secret file (from `python -m telemetry.keys DIR`); needed when the bus "
               "leaves 127.0.0.1")
    if server_key:
        _flag(ap, "--curve-server-key", underscore, type=Path, metavar="FILE",
              help="the publisher's public .key file (with --curve-secret, to subscribe to a CURVE publisher)")


def curve_keys(args: argparse.Namespace, server_key_required: bool = False) -> CurveKeys | None:
    """The keys the CURVE flags name, or None without them. Raises BusSecurityError naming the
    file and the fix (a missing, unreadable or wrong file), never a traceback."""
    secret, server = getattr(args, "curve_secret", None), getattr(args, "curve_server_key", None)
    if not secret and not server:
        return None
    if not secret or (server_key_required and not server):
        raise BusSecurityError("--curve-secret and --curve-server-key go together "
                               "(this subscriber's .key_secret and the publisher's .key)")
    return CurveKeys.from_secret_file(secret, server)


def add_log_args(ap: argparse.ArgumentParser, underscore: bool = False, default_level: str = "info") -> None:
    _flag(ap, "--log-json", underscore, action="store_true", help="log JSON lines on stderr instead of key=value text")
    _flag(ap, "--log-level", underscore, default=default_level, choices=("debug", "info", "warning", "error"),
          help=f"least severe log lines shown (default {default_level})")


def add_subscriber_args(ap: argparse.ArgumentParser, topics: list[str], topics_help: str) -> None:
    """The flags every bus subscriber (tail, record, prometheus) takes."""
    ap.add_argument("--endpoint", action="append", default=None,
                    help="endpoint to subscribe to; repeatable (default: the telemetry endpoint)")
    ap.add_argument("--endpoint-server-key", type=Path, action="append", default=None, metavar="FILE",
                    help="several CURVE daemons with keys of their own: each one's public .key, in the order of "
                         "--endpoint (with --curve-secret; default: --curve-server-key for all)")
    ap.add_argument("--topics", nargs="*", default=topics, help=topics_help)
    ap.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    add_curve_args(ap)
    add_log_args(ap)


def subscriber_curves(args: argparse.Namespace, n: int) -> CurveKeys | list[CurveKeys] | None:
    """Subscriptions' CURVE keys: one set for all endpoints, or one per endpoint (--endpoint-server-key)."""
    files = getattr(args, "endpoint_server_key", None)
    if not files:
        return curve_keys(args, server_key_required=True)
    if not args.curve_secret or len(files) != n:
        raise BusSecurityError(f"{len(files)} --endpoint-server-key for {n} --endpoint; give one daemon .key per "
                               "endpoint, in order, with --curve-secret")
    return [CurveKeys.from_secret_file(args.curve_secret, f) for f in files]


@contextmanager
def subscriptions(args: argparse.Namespace) -> Iterator[tuple[Subscriptions, threading.Event, list[str]]]:
    """Every bus subscriber's set-up (tail, record, prometheus): logging, signals, one SUB socket per
    endpoint (shared.bus.Subscriptions, the receive loop the collector's recorder and analyzer --live
    use too); yields (Subscriptions, stop event, endpoints) and closes everything on the way out."""
    configure_logging(args.log_level, json=args.log_json)
    stop = threading.Event()
    stop_on_signals(stop)
    endpoints = args.endpoint or [telemetry_endpoint()]
    ctx = zmq.Context()
    subs = None
    try:
        subs = Subscriptions(ctx, endpoints, subscriber_curves(args, len(endpoints)), topics=args.topics)
        yield subs, stop, endpoints
    finally:
        if subs is not None:
            subs.close()
        ctx.term()
