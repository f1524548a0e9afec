"""Open the GPU source that ``--gpu auto|nvml|sim|none`` names."""
from __future__ import annotations

from shared.logs import get_logger
from telemetry.gpu.base import GPU, GPUError
from telemetry.gpu.sim import SimGPU

log = get_logger("telemetry")


def open_gpus(kind: str, sim_gpus: int) -> tuple[list[GPU], str, object | None]:
    """``(gpus, gpu_source, backend)`` for ``--gpu kind``; raises GPUBackendUnavailable for nvml."""
    if kind == "none":
        return [], "none", None
    if kind == "sim":
        if sim_gpus < 1:
            raise ValueError(f"--sim-gpus must be at least 1, got {sim_gpus}")
        log.warning("simulated_gpu", gpus=sim_gpus,
                    note="SIMULATED GPU: power follows host CPU load; not a measurement of any hardware")
        return [SimGPU(index=i) for i in range(sim_gpus)], "sim", None
    from telemetry.gpu.nvml import NvmlBackend

    try:
        backend = NvmlBackend()
    except GPUError as exc:
        if kind == "nvml":
            raise
        log.warning("no_gpu", reason=str(exc),
                    note="running WITHOUT GPU samples (host only); use --gpu sim to simulate one")
        return [], "none", None
    for index, reason in backend.skipped:
        log.warning("gpu_skipped", gpu=index, reason=reason)
    if not backend.gpus and kind == "auto":
        log.warning("no_gpu", reason="NVML found no devices", note="running WITHOUT GPU samples (host only)")
    return backend.gpus, "nvml", backend
