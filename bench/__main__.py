"""Run every benchmark and write the figures into BENCHMARKS.md.

    python -m bench                 # all parts, full size, rewrites BENCHMARKS.md
    python -m bench --only analyzer --quick --no-write
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import sys
import time
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parent.parent


def _parts() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=_parts(), help="parts to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    sections = []
    for part in args.only or _parts():
        mod = importlib.import_module(f"bench.bench_{part}")
        started = time.monotonic()
        print(f"== {part} ...", file=sys.stderr, flush=True)
        sections.append(mod.run(quick=args.quick).rstrip() + "\n")
        print(f"   {part} took {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    cmd = "python -m bench" + (" --quick" if args.quick else "") + (f" --only {' '.join(args.only)}" if args.only else "")
    text = (f"# Benchmarks\n\nProduced by `{cmd}` (`make bench`) on {time.strftime('%Y-%m-%d')}, "
            f"{platform.machine()}, {platform.processor() or platform.system()}, Python {platform.python_version()}.\n"
            "Speed targets are checked here, never by timed unit tests.\n\n" + "\n".join(sections))
    print(text)
    if not args.no_write:
        (ROOT / "BENCHMARKS.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
