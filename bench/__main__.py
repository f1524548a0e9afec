"""Run every benchmark and write the figures into BENCHMARKS.md.

    python -m bench                 # all parts, full size, rewrites BENCHMARKS.md
    python -m bench --only analyzer --quick --no-write
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import re
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
    produced = (f"`{cmd}` (`make bench`) on {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
                f"{platform.processor() or platform.system()}, Python {platform.python_version()}")
    path = ROOT / "BENCHMARKS.md"
    if args.only and path.is_file():  # the other parts' sections stay as they were
        text = merge(path.read_text(encoding="utf-8"), sections, f"Sections rerun by {produced}.")
    else:
        text = (f"# Benchmarks\n\nProduced by {produced}.\n"
                "Speed targets are checked here, never by timed unit tests.\n\n" + "\n".join(sections))
    print(text)
    if not args.no_write:
        path.write_text(text, encoding="utf-8")
    return 0


def merge(existing: str, sections: list[str], note: str) -> str:
    """``existing`` with each of ``sections`` in place of the section of the same ``## `` heading (new
    ones appended), and ``note`` as a line of the header: one part rerun leaves the others' figures."""
    def split(text: str) -> list[str]:
        parts = re.split(r"(?m)^(?=## )", text)
        return [p.rstrip() + "\n" for p in parts]

    parts = split(existing)
    head = parts[0].rstrip("\n").split("\n")
    head = [line for line in head if not line.startswith("Sections rerun by ")]
    head.insert(3 if len(head) >= 3 else len(head), note)
    out = {p.split("\n", 1)[0]: p for p in parts[1:]}
    for sec in sections:
        out[sec.split("\n", 1)[0]] = sec.rstrip() + "\n"
    return "\n".join(head) + "\n\n" + "\n".join(out.values())


if __name__ == "__main__":
    from shared.procs import ctrl_c_interrupts

    ctrl_c_interrupts()  # (started as a background job, SIGINT ignored: its daemons would inherit that)
    sys.exit(main())
