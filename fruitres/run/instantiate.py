"""Build what a config group lists: every node with a `_target_` (callbacks, loggers) becomes an object."""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class, instantiate
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig


def instantiable(nodes: DictConfig | None) -> list[DictConfig]:
    """The entries of a group such as `callbacks` or `logger` that have a `_target_`."""
    return [node for node in (nodes or {}).values() if isinstance(node, DictConfig) and "_target_" in node]


def instantiate_each(nodes: DictConfig | None) -> list[Any]:
    return [instantiate(node) for node in instantiable(nodes)]


def instantiate_callbacks(cfg: DictConfig) -> list[Callback]:
    return instantiate_each(cfg.get("callbacks"))


def instantiate_loggers(cfg: DictConfig, purge_step: int | None = None) -> list[Logger]:
    """The loggers of `cfg.logger`; with `purge_step` (a resumed run), TensorBoard hides what the stopped
    run had logged from that step on, so its curves continue without doubled points."""
    loggers = []
    for node in instantiable(cfg.get("logger")):
        purge = purge_step is not None and issubclass(get_class(node._target_), TensorBoardLogger)
        loggers.append(instantiate(node, **({"purge_step": purge_step} if purge else {})))
    return loggers
