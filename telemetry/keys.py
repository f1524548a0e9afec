"""Write CURVE key pairs for a telemetry bus that leaves this machine.

    python -m telemetry.keys DIR

writes DIR/telemetry.key + DIR/telemetry.key_secret (the daemon: --curve-secret
DIR/telemetry.key_secret) and DIR/subscriber.key + DIR/subscriber.key_secret (each subscriber:
--curve-secret DIR/subscriber.key_secret --curve-server-key DIR/telemetry.key).
Keep the .key_secret files private; copy only .key files to other machines.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import zmq.auth

from shared.logs import configure_logging, get_logger
from shared.cli import add_log_args

log = get_logger("telemetry.keys")


def write_pair(directory: Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Create ``name.key`` and ``name.key_secret`` in ``directory``; refuses to overwrite unless ``force``."""
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise FileExistsError(f"{public} or {secret} already exists; pass --force to replace the key pair")
    directory.mkdir(parents=True, exist_ok=True)
    pub_s, sec_s = zmq.auth.create_certificates(str(directory), name)
    return Path(pub_s), Path(sec_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m telemetry.keys", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, metavar="DIR", help="directory to write the key files into")
    ap.add_argument("--name", default="telemetry", help="base name of the publisher's pair (default telemetry)")
    ap.add_argument("--client-name", default="subscriber", help="base name of the subscribers' pair (default subscriber)")
    ap.add_argument("--force", action="store_true", help="overwrite existing key files")
    add_log_args(ap)
    args = ap.parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    try:
        written = [write_pair(args.dir, n, args.force) for n in (args.name, args.client_name)]
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for public, secret in written:
        log.info("curve_keys_written", public=str(public), secret=str(secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
