"""Launch checks: what Lightning's DDP and Hydra's launchers cannot run together."""

from __future__ import annotations

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from fruitres.errors import ConfigError


def check_launch(trainer: L.Trainer) -> None:
    """Refuse a DDP launch that would re-run a whole local Hydra sweep in every rank."""
    strategy = trainer.strategy
    relaunches_command = (
        isinstance(strategy.launcher, _SubprocessScriptLauncher)
        and strategy.launcher.num_processes > 1
        and not strategy.launcher.cluster_environment.creates_processes_externally
    )
    if relaunches_command and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(
            f"trainer.strategy={type(strategy).__name__} on {trainer.num_devices} devices cannot run "
            "inside a local multirun: Lightning starts each rank by re-running the command line, which "
            "would re-run the whole sweep; set trainer.strategy=ddp_spawn, or sweep with "
            "hydra/launcher=slurm (srun starts the ranks), or run one DDP job at a time without -m"
        )
