"""Telemetry daemon: samples GPUs (NVML or a simulated GPU), the host (psutil) and RAPL, and
publishes the readings on the ZeroMQ bus (topics tel.gpu / tel.host / tel.hb).

Entry points: ``python -m telemetry`` (the daemon), ``python -m telemetry.tail``,
``python -m telemetry.record``, ``python -m telemetry.prometheus``, ``python -m telemetry.keys``.
"""
