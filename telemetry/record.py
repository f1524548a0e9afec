"""Record the bus to a stream.msgpack file (shared.recording format) until stopped.

    python -m telemetry.record --out run/stream.msgpack --duration 60
    python -m telemetry.record --out s.msgpack --endpoint tcp://127.0.0.1:5556 --endpoint tcp://127.0.0.1:5557

Each received ``[topic, payload]`` is appended as-is; the file is flushed at least every 0.2 s
and closed cleanly on SIGINT/SIGTERM or when --duration/--count is reached.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.cli import add_subscriber_args, subscriptions
from shared.logs import get_logger
from shared.recording import BusRecording

log = get_logger("telemetry.record")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m telemetry.record", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="recording file to write (appended to if it exists)")
    ap.add_argument("--count", type=int, default=None, metavar="N", help="stop after N messages")
    add_subscriber_args(ap, [""], "topic prefixes to keep (default: everything)")
    args = ap.parse_args(argv)
    with subscriptions(args) as (subs, stop, endpoints):
        # the collector's Recorder records through the same core (shared.recording.BusRecording)
        rec = BusRecording(args.out, meta={"recorder": "telemetry.record", "endpoints": endpoints})
        try:
            log.info("record_start", out=str(args.out), endpoints=endpoints, topics=args.topics,
                     resumed_from=rec.writer.resumed_from)
            written = rec.run(subs, stop, args.duration, args.count, poll_ms=100)
        finally:
            rec.close()
        log.info("record_stop", out=str(args.out), written=written, dropped_oversize=subs.inbox.dropped_oversize,
                 dropped_invalid=subs.inbox.dropped_invalid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
