"""DataLoader settings that Lightning's DDP and Hydra's joblib launcher leave to the application."""

from __future__ import annotations

import multiprocessing

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset


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


def loader_start_method(num_workers: int) -> str | None:
    """How DataLoader workers start: the default, except in a joblib sweep job (loky cannot start them)."""
    if num_workers == 0 or multiprocessing.get_start_method(allow_none=True) != "loky":
        return None
    return next(method for method in multiprocessing.get_all_start_methods() if method != "loky")
