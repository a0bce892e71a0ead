"""What Lightning's DDP and Hydra's launchers leave to the application.

Exact evaluation shards under DDP, a safe DDP launch under Hydra, DataLoader workers inside joblib sweep
jobs, and one GPU per job of a local sweep.
"""

from __future__ import annotations

import logging
import multiprocessing
import os

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import OmegaConf
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


def evaluation_sampler(dataset: Dataset, trainer: L.Trainer | None) -> UnrepeatedDistributedSampler | None:
    """Under DDP, give every val/test image to exactly one rank; None when a single process evaluates.

    Lightning's default `DistributedSampler` pads the last shard with repeated images so that all ranks
    get the same count, which would skew accuracy. Shards here differ by at most one image instead,
    which is safe for evaluation (no gradient sync) and keeps the synced metrics exact.
    """
    kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
    if not kwargs or kwargs["num_replicas"] < 2:
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False, **kwargs)


def check_launch(trainer: L.Trainer) -> None:
    """Refuse a DDP launch that would re-run a whole local Hydra sweep in every rank."""
    strategy = trainer.strategy
    relaunches_command = (
        isinstance(strategy.launcher, _SubprocessScriptLauncher)
        and strategy.launcher.num_processes > 1
        and not strategy.launcher.cluster_environment.creates_processes_externally
    )
    if relaunches_command and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError(
            f"trainer.strategy={type(strategy).__name__} on {trainer.num_devices} devices cannot run "
            "inside a local multirun: Lightning starts each rank by re-running the command line, which "
            "would re-run the whole sweep; set trainer.strategy=ddp_spawn, or sweep with "
            "hydra/launcher=slurm (srun starts the ranks), or run one DDP job at a time without -m"
        )


def loader_start_method(num_workers: int) -> str | None:
    """How DataLoader workers start: the default, except in a joblib sweep job (loky cannot start them)."""
    if num_workers == 0 or multiprocessing.get_start_method(allow_none=True) != "loky":
        return None
    return next(method for method in multiprocessing.get_all_start_methods() if method != "loky")


def sweep_job_gpu(job_num: int | str) -> str:
    """The one GPU job `job_num` of a sweep gets: round robin over the GPUs its launcher made visible."""
    visible = [device for device in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if device]
    gpu = visible[int(job_num) % len(visible)] if visible else ""
    log.info("Sweep job %s runs with CUDA_VISIBLE_DEVICES=%s", job_num, gpu)
    return gpu


def gpu_count() -> int:
    return torch.cuda.device_count()


# Used by conf/hydra/launcher/local_gpus.yaml.
OmegaConf.register_new_resolver("sweep_job_gpu", sweep_job_gpu, replace=True)
OmegaConf.register_new_resolver("gpu_count", gpu_count, replace=True)
