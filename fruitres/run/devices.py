"""Which device and precision a run gets: one rule for `auto`, bf16 only where the hardware runs it natively.

bf16-mixed trains faster than float32 on a GPU and on a CPU with AVX-512 BF16 or AMX, with the same
accuracy; a CPU without them emulates bf16, far slower than float32, so there the fastest precision is
32-true (docs/results.md#precision).
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def uses_cuda(accelerator: str = "auto") -> bool:
    """Whether Lightning's `accelerator` (cpu, gpu, cuda or auto) runs on a CUDA GPU."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


# What makes bf16 fast on a CPU, by torch's own (private) probes; a torch without a probe reads False.
CPU_BF16_PROBES = {"avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported"}


def cpu_bf16_features() -> dict[str, bool]:
    """Which of the CPU features that run bf16 natively (AVX-512 BF16, AMX tiles) this CPU has."""
    return {name: bool(getattr(torch.cpu, probe, lambda: False)()) for name, probe in CPU_BF16_PROBES.items()}


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX tiles (recent Xeon, Zen 4 and later)."""
    return any(cpu_bf16_features().values())


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; elsewhere what the platform reports)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def fastest_precision(accelerator: str = "auto") -> str:
    """The Lightning precision that trains fastest on `accelerator` (cpu, gpu/cuda or auto)."""
    if uses_cuda(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def sweep_job_gpu(job_num: int | str) -> str:
    """The one GPU job `job_num` of a sweep gets: round robin over the GPUs its launcher made visible."""
    visible = [device for device in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if device]
    gpu = visible[int(job_num) % len(visible)] if visible else ""
    log.info("Sweep job %s runs with CUDA_VISIBLE_DEVICES=%s", job_num, gpu)
    return gpu


def gpu_count() -> int:
    return torch.cuda.device_count()


def machine_summary() -> str:
    """One line saying which kind of machine this is and the precision `auto` runs get on it."""
    features = ", ".join(
        f"{name} {'yes' if present else 'no'}" for name, present in cpu_bf16_features().items()
    )
    gpus = sorted({torch.cuda.get_device_name(i) for i in range(gpu_count())}) or ["none"]
    return (
        f"CPU: {cpu_model()} ({os.cpu_count()} cores; {features}); GPU: {', '.join(gpus)}; "
        f"fastest precision: cpu {fastest_precision('cpu')}, auto {fastest_precision('auto')}"
    )
