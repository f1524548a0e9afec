"""The analyzer: message stream (live bus or a recorded batch) → energy, speed, quality, ratios.

Pure parts: stream (messages → arrays), integrate/windows/energy (numpy), throughput, tables,
pipeline. I/O: cli, live, outputs, plots. The quality step (analyzer.quality) is imported lazily.
"""
import os

# Arrow's own allocator (mimalloc) keeps what the copy's row groups needed: a long recording's first run
# peaked ~10-30 % higher with it, and took ~10 % more CPU. pyarrow picks its allocator when imported, so
# the system's is asked for here, before any analyzer module imports it; a user's own setting wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
