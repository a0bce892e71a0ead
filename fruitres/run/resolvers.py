"""Every OmegaConf resolver the configs use, registered by whatever composes a config: the entry points
(`hydra_main`, fruitres/run/task.py) and `compose_config` (fruitres/run/compose.py). `replace=True` keeps a
second registration (Hydra's multirun, notebook reloads) harmless.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from fruitres.errors import ConfigError
from fruitres.models.backbone import backbone_data_config
from fruitres.run.devices import fastest_precision, gpu_count, sweep_job_gpu
from fruitres.run.job_dirs import sweep_job_subdir
from fruitres.run.run_names import tensorboard_run_name


def backbone_data(arch: str, weights: str | None) -> DictConfig:
    """conf/data/: the preprocessing `arch`'s weights were trained with, for the data module's null values.
    A DictConfig, not a dict: `--cfg job --resolve` and OmegaConf.resolve take only config nodes."""
    return OmegaConf.create(backbone_data_config(arch, weights).as_dict())


def fruitres_root() -> str:
    """conf/paths/: FRUITRES_ROOT with `~` expanded (a shell leaves it as is inside quotes), else the launch
    folder. Set but empty is refused: it would put data/ and logs/ at the file-system root."""
    value = os.environ.get("FRUITRES_ROOT")
    if value is None:
        return "."
    if not value.strip():
        raise ConfigError(
            "FRUITRES_ROOT is set but empty, which would write /data and /logs at the file-system root; "
            "unset it (unset FRUITRES_ROOT) to write under the launch folder, or set it to a folder"
        )
    return os.path.expanduser(value)


RESOLVERS = {
    "fruitres_root": fruitres_root,  # conf/paths/default.yaml: where data/ and logs/ go
    "backbone_data": backbone_data,  # conf/data/: data meets model here, not in the data module
    "fastest_precision": fastest_precision,  # trainer precision: bf16 where native, else 32-true
    "sweep_job_gpu": sweep_job_gpu,  # conf/hydra/launcher/local_gpus.yaml: one GPU per sweep job
    "gpu_count": gpu_count,  # conf/hydra/launcher/local_gpus.yaml: parallel jobs
    "sweep_job_subdir": sweep_job_subdir,  # conf/hydra/default.yaml: a job directory per set of overrides
    "tensorboard_run_name": tensorboard_run_name,  # conf/logger/tensorboard.yaml: a sweep job's swept values
}


def register_resolvers() -> None:
    """Register every resolver; a FRUITRES_ROOT that cannot be used stops here, in one line, before Hydra
    resolves the run directory from it (where an error would come with Hydra's traceback)."""
    for name, resolver in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)
    try:
        fruitres_root()
    except ConfigError as error:
        raise SystemExit(str(error)) from None
