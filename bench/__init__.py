"""Benchmarks (`make bench`): each bench_<part>.py exposes run(quick) -> a Markdown section."""
