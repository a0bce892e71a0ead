"""`${fastest_precision:<accelerator>}` in the configs: bf16 autocast where the hardware runs bf16 natively.

bf16-mixed trains ResNet-18 about twice as fast as float32 on a GPU and on a CPU with AVX-512 BF16 or
AMX (README "Performance"), with the same accuracy; a CPU without them would emulate bf16 and run slower
than float32, so there the default stays 32-true. Importing this module registers the resolver.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX tiles (recent Xeon, Zen 4 and later); private torch probes, False if absent."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def fastest_precision(accelerator: str = "auto") -> str:
    """The Lightning precision that trains fastest on `accelerator` (cpu, gpu/cuda or auto)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


OmegaConf.register_new_resolver("fastest_precision", fastest_precision, replace=True)
