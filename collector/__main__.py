"""``python -m collector`` entry point (see collector/cli.py)."""
import sys

from collector.cli import main

if __name__ == "__main__":
    sys.exit(main())
