"""`python -m bench --only PART` rewrites PART's section of BENCHMARKS.md and leaves the others' figures."""
from __future__ import annotations

from bench.__main__ import merge

EXISTING = """# Benchmarks

Produced by `python -m bench` (`make bench`) on 2026-01-01, x86_64, Linux, Python 3.11.7.
Sections rerun by `python -m bench --only b` (`make bench`) on 2026-01-02, x86_64, Linux, Python 3.11.7.
Speed targets are checked here, never by timed unit tests.

## a

old a

## b (long name)

old b

## c

old c
"""


def test_a_rerun_part_replaces_its_section_only():
    got = merge(EXISTING, ["## b (long name)\n\nnew b\n", "## d\n\nnew d\n"], "Sections rerun by X.")
    assert [line for line in got.splitlines() if line.startswith("## ")] == ["## a", "## b (long name)", "## c", "## d"]
    assert "old a" in got and "old c" in got and "new b" in got and "new d" in got and "old b" not in got
    head = got.split("## a", 1)[0].splitlines()
    assert head[2].startswith("Produced by `python -m bench` ") and head[3] == "Sections rerun by X."
    assert not any("--only b" in line for line in head)  # the last rerun's line replaced, not piled up
    assert merge(got, ["## b (long name)\n\nnew b\n", "## d\n\nnew d\n"], "Sections rerun by X.") == got
