"""Hydra callbacks that write a sweep's reports when the multirun ends (conf/hydra/default.yaml; the transfer
study's in conf/hparams_search/transfer.yaml), and store the sweep tables in MLflow when it logs there."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fruitres.reports.sweep_report import CSV_FILE, GROUPS_CSV_FILE, MARKDOWN_FILE, write_sweep_report
from fruitres.reports.transfer_report import PNG_FILE, TENSORBOARD_DIR, write_transfer_report
from fruitres.run.mlflow_tracking import experiment_name, store_sweep_files

log = logging.getLogger(__name__)


class WriteSweepReport(Callback):
    """Hydra callback: the sweep table, written and printed when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(write_sweep_report(sweep_dir))
        log.info("Sweep table: %s and %s", sweep_dir / CSV_FILE, sweep_dir / MARKDOWN_FILE)
        if "mlflow" in (config.get("logger") or {}):  # the tables go into every job's MLflow run
            experiment = experiment_name(config.task_name, sweep_dir)
            tables = [sweep_dir / name for name in (CSV_FILE, MARKDOWN_FILE, GROUPS_CSV_FILE)]
            runs = store_sweep_files(config.logger.mlflow.tracking_uri, experiment, tables)
            log.info("Sweep tables stored in the %d run(s) of MLflow experiment %s", runs, experiment)


class WriteTransferReport(Callback):
    """Hydra callback: the transfer figure and table, written and printed when the study's sweep ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(write_transfer_report(sweep_dir))
        log.info("Transfer figure: %s (also in %s)", sweep_dir / PNG_FILE, sweep_dir / TENSORBOARD_DIR)
