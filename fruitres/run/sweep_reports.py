"""Hydra callbacks that write a sweep's reports when the multirun ends (conf/hydra/default.yaml; the transfer
study's in conf/hparams_search/transfer.yaml), and keep a sweep logged to MLflow as one parent run with a
child run per job (fruitres/run/mlflow_tracking.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from fruitres.reports.sweep_report import (
    CSV_FILE,
    FIGURE_FILE,
    GROUPS_CSV_FILE,
    MARKDOWN_FILE,
    SUMMARY_RUN,
    folder_jobs,
    write_sweep_report,
)
from fruitres.reports.transfer_report import PNG_FILE, TENSORBOARD_DIR, write_transfer_report
from fruitres.run.mlflow_tracking import (
    experiment_name,
    mlflow_client,
    start_sweep_run,
    store_job_record,
    store_sweep_files,
)

log = logging.getLogger(__name__)


def mlflow_settings(config: DictConfig) -> tuple[str, str, str | None] | None:
    """The sweep's MLflow tracking URI, experiment and artifact location; None when it logs no MLflow."""
    settings = (config.get("logger") or {}).get("mlflow")
    if settings is None:
        return None
    experiment = experiment_name(config.task_name, config.hydra.sweep.dir)
    return settings.get("tracking_uri"), experiment, settings.get("artifact_location")


class WriteSweepReport(Callback):
    """Hydra callback: the sweep table and figure, written and printed when a multirun ends; in MLflow, the
    sweep's parent run made before the first job, each job's record in its child run, the table and figure
    in the parent at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        mlflow = mlflow_settings(config)
        if mlflow is not None:  # before any job, so parallel jobs nest under one parent
            tracking_uri, experiment, artifact_location = mlflow
            sweep_dir = Path(config.hydra.sweep.dir)
            start_sweep_run(mlflow_client(tracking_uri), experiment, sweep_dir, artifact_location)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        mlflow = mlflow_settings(config)
        if mlflow is not None and HydraConfig.get().mode == RunMode.MULTIRUN:
            tracking_uri, experiment, artifact_location = mlflow
            job_dir = Path(HydraConfig.get().runtime.output_dir)
            store_job_record(tracking_uri, experiment, job_dir, artifact_location)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(write_sweep_report(sweep_dir))
        log.info(
            "Sweep table and figure: %s, %s and %s (TensorBoard run %s)",
            sweep_dir / CSV_FILE,
            sweep_dir / MARKDOWN_FILE,
            sweep_dir / FIGURE_FILE,
            sweep_dir / SUMMARY_RUN,
        )
        mlflow = mlflow_settings(config)
        if mlflow is not None:
            tracking_uri, experiment, _ = mlflow
            files = [sweep_dir / name for name in (CSV_FILE, MARKDOWN_FILE, GROUPS_CSV_FILE, FIGURE_FILE)]
            finished = all(job.record["status"] == "ok" for job in folder_jobs(sweep_dir))
            parent_id = store_sweep_files(tracking_uri, experiment, sweep_dir, files, finished)
            log.info("Sweep table and figure stored in MLflow run %s of experiment %s", parent_id, experiment)


class WriteTransferReport(Callback):
    """Hydra callback: the transfer figure and table, written and printed when the study's sweep ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(write_transfer_report(sweep_dir))
        log.info("Transfer figure: %s (also in %s)", sweep_dir / PNG_FILE, sweep_dir / TENSORBOARD_DIR)
