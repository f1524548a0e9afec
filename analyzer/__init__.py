"""The analyzer: message stream (live bus or a recorded batch) → energy, speed, quality, ratios.

Pure parts: stream (messages → arrays), integrate/windows/energy (numpy), throughput, tables,
pipeline. I/O: cli, live, outputs, plots. The quality step (analyzer.quality) is imported lazily.
"""
