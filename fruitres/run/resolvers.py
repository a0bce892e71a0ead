"""Every OmegaConf resolver the configs use, registered once when the package is imported.

Any entry point, test or notebook that imports fruitres can compose any config; `replace=True` keeps a
re-import (Hydra's multirun, notebook reloads) harmless.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from fruitres.run.devices import fastest_precision, gpu_count, sweep_job_gpu
from fruitres.run.job_dirs import sweep_job_subdir

RESOLVERS = {
    "fastest_precision": fastest_precision,  # trainer precision: bf16 where native, else 32-true
    "sweep_job_gpu": sweep_job_gpu,  # conf/hydra/launcher/local_gpus.yaml: one GPU per sweep job
    "gpu_count": gpu_count,  # conf/hydra/launcher/local_gpus.yaml: parallel jobs
    "sweep_job_subdir": sweep_job_subdir,  # conf/hydra/default.yaml: a job directory per set of overrides
}

for name, resolver in RESOLVERS.items():
    OmegaConf.register_new_resolver(name, resolver, replace=True)
