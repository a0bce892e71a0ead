"""MLflow as a second tracker (`logger=mlflow` or `logger=[tensorboard,mlflow]`, the `mlflow` extra).

Lightning's MLFlowLogger logs the curated parameters (fruitres/run/hparams.py) and every step's metrics;
fruitres adds the run's provenance as tags and its files as artifacts (the best checkpoint of a training
run, the report of an evaluation). A single run goes to the experiment named after its task (`train`,
`eval`). A sweep is an experiment of its own (`train/<sweep folder>`) holding one parent run, made when the
multirun starts, with each job a child run nested under it: named by its swept values, tagged with them,
and given its `run_record.json` when it ends; the sweep's table and figure are the parent's artifacts when
the multirun ends (the tags: fruitres/reports/mlflow_sweep.py, which reads a sweep back).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger, MLFlowLogger

from fruitres.reports.mlflow_sweep import (
    JOB_TAG,
    MISSING,  # noqa: F401  (the logger's message, named here too)
    OVERRIDES_TAG,
    PARENT_RUN_TAG,
    SWEEP_TAG,
    mlflow_client,
    require_mlflow,
    sweep_children,
    sweep_parent,
)
from fruitres.run.provenance import current_provenance, flat_provenance
from fruitres.run.run_names import in_sweep_job, job_overrides, swept_keys, swept_values_name
from fruitres.run_folders import RECORD_FILE, read_record

if TYPE_CHECKING:
    from mlflow import MlflowClient

MAX_TAG_LENGTH = 5000  # MLflow rejects longer tag values
SWEEP_FOLDER = "sweep"  # the parent's artifact folder of the sweep's table and figure


def experiment_name(task_name: str, sweep_dir: str | Path | None) -> str:
    """The task's experiment for a single run; one experiment per sweep."""
    return task_name if sweep_dir is None else f"{task_name}/{Path(sweep_dir).name}"


def start_sweep_run(
    client: MlflowClient, experiment: str, sweep_dir: Path, artifact_location: str | None = None
) -> str:
    """The id of the sweep's parent run, made (with its experiment) unless a job or a launch made it."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location)
    parent = sweep_parent(client, experiment_id)
    if parent is not None:
        return parent.info.run_id
    run = client.create_run(experiment_id, tags={SWEEP_TAG: str(sweep_dir)}, run_name=Path(sweep_dir).name)
    return run.info.run_id


def mlflow_logger(task_name: str, **kwargs: Any) -> MLFlowLogger:
    """Lightning's MLFlowLogger in this run's experiment: a single run named after its folder; a sweep job
    as a child of the sweep's run, named and tagged by its swept values. A one-line error naming the extra
    when MLflow is not installed."""
    require_mlflow()
    if not in_sweep_job():
        run_name = Path(HydraConfig.get().runtime.output_dir).name if HydraConfig.initialized() else None
        return MLFlowLogger(**{"experiment_name": task_name, "run_name": run_name} | kwargs)
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    experiment = experiment_name(task_name, job_dir.parent)
    client = mlflow_client(kwargs.get("tracking_uri"))
    parent_id = start_sweep_run(client, experiment, job_dir.parent, kwargs.get("artifact_location"))
    keys = swept_keys()
    tags = child_tags(parent_id, job_dir.name, keys) | (kwargs.pop("tags", None) or {})
    run_name = swept_values_name(keys) or job_dir.name
    return MLFlowLogger(**{"experiment_name": experiment, "run_name": run_name} | kwargs, tags=tags)


def child_tags(parent_id: str, job_name: str, keys: list[str]) -> dict[str, str]:
    """A sweep job's run: nested under the sweep's, its job folder, its overrides and its swept values."""
    overrides = list(HydraConfig.get().overrides.task)
    values = job_overrides()
    return {
        PARENT_RUN_TAG: parent_id,
        JOB_TAG: job_name,
        OVERRIDES_TAG: json.dumps(overrides)[:MAX_TAG_LENGTH],
        **{key: values[key][:MAX_TAG_LENGTH] for key in keys if key in values},
    }


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


def store_job_record(
    tracking_uri: str, experiment: str, job_dir: Path, artifact_location: str | None = None
) -> None:
    """Upload an ended sweep job's run_record.json into its child run; a job that failed before it made
    one (say, on a bad config) gets a failed child run of its own, so MLflow lists every job."""
    client = mlflow_client(tracking_uri)
    parent_id = start_sweep_run(client, experiment, job_dir.parent, artifact_location)
    experiment_id = client.get_run(parent_id).info.experiment_id
    children = sweep_children(client, experiment_id, parent_id)
    runs = [run for run in children if run.data.tags.get(JOB_TAG) == job_dir.name]
    record = read_record(job_dir) or {}
    if runs:
        run_id = runs[0].info.run_id
    else:
        keys = swept_keys()
        tags = child_tags(parent_id, job_dir.name, keys)
        run_id = client.create_run(experiment_id, tags=tags, run_name=swept_values_name(keys)).info.run_id
        client.set_terminated(run_id, "FINISHED" if record.get("status") == "ok" else "FAILED")
    if record:
        client.log_artifact(run_id, str(job_dir / RECORD_FILE))


def store_sweep_files(
    tracking_uri: str, experiment: str, sweep_dir: Path, files: Iterable[Path], finished: bool
) -> str:
    """Upload the sweep's table and figure into its parent run and end it (FAILED unless every job
    `finished`); returns the parent's id."""
    client = mlflow_client(tracking_uri)
    parent_id = start_sweep_run(client, experiment, sweep_dir)
    for path in files:
        if Path(path).is_file():
            client.log_artifact(parent_id, str(path), SWEEP_FOLDER)
    client.set_terminated(parent_id, "FINISHED" if finished else "FAILED")
    return parent_id
