"""Helpers around the composed Hydra config: show it, save it, and build what it lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rich.syntax
import rich.tree
from hydra.utils import get_class, instantiate
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

PRINT_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")


def print_config_tree(cfg: DictConfig, save_to: Path | None = None) -> None:
    """Print the resolved config as a tree, groups first, and save the same text beside the run."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in PRINT_ORDER if k in cfg] + [k for k in cfg if k not in PRINT_ORDER]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        tree.add(str(key), style="yellow", guide_style="yellow").add(rich.syntax.Syntax(text, "yaml"))
    Console().print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        with open(save_to, "w") as file:
            Console(file=file, width=120, color_system=None).print(tree)


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
