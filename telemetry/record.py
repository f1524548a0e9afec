"""Record the bus to a stream.msgpack file (shared.recording format) until stopped.

    python -m telemetry.record --out run/stream.msgpack --duration 60
    python -m telemetry.record --out s.msgpack --endpoint tcp://127.0.0.1:5556 --endpoint tcp://127.0.0.1:5557

Each received ``[topic, payload]`` is appended as-is; the file is flushed at least every 0.2 s
and closed cleanly on SIGINT/SIGTERM or when --duration/--count is reached.
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import zmq

from shared import timebase
from shared.bus import Inbox
from shared.logs import get_logger
from shared.recording import RecordingWriter
from shared.cli import add_subscriber_args, subscription

log = get_logger("telemetry.record")


def record(sock: zmq.Socket, writer: RecordingWriter, stop: threading.Event, duration_s: float | None = None,
           count: int | None = None, inbox: Inbox | None = None) -> int:
    """Write messages from ``sock`` until stop, duration or count; returns how many were written."""
    inbox = inbox or Inbox()
    end = timebase.now_s() + duration_s if duration_s else None
    written = 0
    while not stop.is_set() and (count is None or written < count):
        if end is not None and timebase.now_s() >= end:
            break
        for topic, payload in inbox.drain(sock, timeout_ms=100):
            writer.write(topic, payload)
            written += 1
            if count is not None and written >= count:
                break
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m telemetry.record", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="recording file to write (appended to if it exists)")
    ap.add_argument("--count", type=int, default=None, metavar="N", help="stop after N messages")
    add_subscriber_args(ap, [""], "topic prefixes to keep (default: everything)")
    args = ap.parse_args(argv)
    inbox = Inbox()
    with subscription(args) as (sock, stop, endpoints):
        with RecordingWriter(args.out, meta={"recorder": "telemetry.record", "endpoints": endpoints}) as writer:
            log.info("record_start", out=str(args.out), endpoints=endpoints, topics=args.topics,
                     resumed_from=writer.resumed_from)
            written = record(sock, writer, stop, args.duration, args.count, inbox)
        log.info("record_stop", out=str(args.out), written=written, dropped_oversize=inbox.dropped_oversize,
                 dropped_invalid=inbox.dropped_invalid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
