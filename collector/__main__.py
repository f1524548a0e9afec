"""``python -m collector`` entry point (see collector/cli.py)."""
import sys

from shared.procs import ctrl_c_interrupts

if __name__ == "__main__":
    ctrl_c_interrupts()  # (before the imports: a Ctrl-C stops it from the start)
    from collector.cli import main

    sys.exit(main())
