"""Pieces shared by the telemetry entry points: stop-on-signal, CURVE key flags."""
from __future__ import annotations

import argparse
import signal
import threading
from shared.bus import CurveKeys


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
