"""Pieces shared by the telemetry entry points: stop-on-signal, CURVE key flags."""
from __future__ import annotations

import argparse
import signal
import threading
from typing import Any, Iterator

import zmq

from shared.bus import CurveKeys, Inbox


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


def receive(sock: zmq.Socket, inbox: Inbox, timeout_ms: int,
            max_batch: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
    """Messages already queued, or arriving within ``timeout_ms``: one poll, then non-blocking receives.

    Polling once per batch instead of once per message keeps a subscriber ahead of bursts;
    ``max_batch`` bounds a batch so the caller still checks its stop conditions under a steady
    flood. Unusable frames are counted by ``inbox`` and skipped."""
    if not sock.poll(timeout_ms, zmq.POLLIN):
        return
    for _ in range(max_batch):
        try:
            frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        msg = inbox.unpack(frames)
        if msg is not None:
            yield msg
