"""MLflow as a second tracker (`logger=mlflow` or `logger=[tensorboard,mlflow]`, the `mlflow` extra).

Lightning's MLFlowLogger logs the parameters and every step's metrics; fruitres adds the run's provenance as
tags and its files as artifacts (the best checkpoint of a training run, the report of an evaluation, the
sweep tables). A single run goes to the experiment named after its task (`train`, `eval`); a sweep is one
experiment of its own (`train/<sweep folder>`) with one run per job.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, MLFlowLogger

from fruitres.errors import ConfigError
from fruitres.run.provenance import current_provenance, flat_provenance

MISSING = 'logger=mlflow needs MLflow, an optional extra: pip install -e ".[mlflow]"'
MAX_TAG_LENGTH = 5000  # MLflow rejects longer tag values


def experiment_name(task_name: str, sweep_dir: str | Path | None) -> str:
    """The task's experiment for a single run; one experiment per sweep."""
    return task_name if sweep_dir is None else f"{task_name}/{Path(sweep_dir).name}"


def mlflow_logger(task_name: str, **kwargs: Any) -> MLFlowLogger:
    """Lightning's MLFlowLogger in this run's experiment, the run named after its folder (a sweep job:
    its number and overrides); a one-line error naming the extra when MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING) from None
    sweep_dir, run_name = None, None
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        output_dir = Path(hydra.runtime.output_dir)
        run_name = output_dir.name
        if hydra.mode == RunMode.MULTIRUN:
            sweep_dir = output_dir.parent
            run_name = f"{hydra.job.num}: {' '.join(hydra.overrides.task)}"[:250]
    return MLFlowLogger(
        **{"experiment_name": experiment_name(task_name, sweep_dir), "run_name": run_name} | kwargs
    )


def mlflow_loggers(loggers: Iterable[Logger]) -> list[MLFlowLogger]:
    return [logger for logger in loggers if isinstance(logger, MLFlowLogger)]


def tag_provenance(logger: MLFlowLogger) -> None:
    """The run's provenance (fruitres/run/provenance.py) as `provenance.<key>` tags."""
    for key, value in flat_provenance(current_provenance()):
        logger.experiment.set_tag(logger.run_id, f"provenance.{key}", str(value)[:MAX_TAG_LENGTH])


def store_run_files(trainer: L.Trainer, files: Iterable[Path], folder: str) -> None:
    """Tag the provenance and upload `files` under `folder` in every MLflow run of the trainer."""
    if not trainer.is_global_zero:
        return
    files = [Path(path) for path in files if Path(path).is_file()]
    for logger in mlflow_loggers(trainer.loggers):
        tag_provenance(logger)
        for path in files:
            logger.experiment.log_artifact(logger.run_id, str(path), folder)


def store_sweep_files(tracking_uri: str, experiment: str, files: Iterable[Path]) -> int:
    """Upload the sweep's tables into every run of its experiment; returns how many runs got them."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    runs = client.search_runs([found.experiment_id])
    for run in runs:
        for path in files:
            if Path(path).is_file():
                client.log_artifact(run.info.run_id, str(path), "sweep")
    return len(runs)
