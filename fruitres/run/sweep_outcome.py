"""How a sweep ends: its table written after every job, and a non-zero exit status with one line when any
job of this launch failed.

A failed job is recorded and the sweep goes on (`fruitres/run/record.py`), so without this callback a sweep
whose every job failed would exit 0, and an Optuna sweep with no finished trial would stop inside the
sweeper (`No trials are completed yet`) before any table was written.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from fruitres.reports.sweep_report import MARKDOWN_FILE, write_sweep_report
from fruitres.run_folders import OVERRIDES_FILE, job_dirs, job_record

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


SWEEP_FAILED_EXIT_STATUS = 1


def launch_records(sweep_dir: Path, since: float) -> dict[str, dict[str, Any]]:
    """The records of the jobs this launch ran (Hydra rewrites a job's overrides file when it starts it);
    a job without one (killed, or still running elsewhere) counts as failed."""
    return {
        path.name: job_record(path)
        for path in job_dirs(sweep_dir)
        if (path / OVERRIDES_FILE).stat().st_mtime >= since
    }


def failure_summary(sweep_dir: Path, records: dict[str, dict[str, Any]]) -> str | None:
    """One line on the jobs that did not finish ok, or None when every one did."""
    failed = {name: record for name, record in records.items() if record["status"] != "ok"}
    if not failed:
        return None
    name, first = next(iter(failed.items()))
    reason = first["error"] or first["status"]
    return (
        f"{len(failed)} of {len(records)} jobs of this sweep failed (job {name}: {reason}); "
        f"each job's error is in {sweep_dir / MARKDOWN_FILE}"
    )


def exit_failed(summary: str) -> None:
    """End the sweep with its one line and status 1 (Hydra turns exceptions in callbacks into warnings)."""
    sys.stderr.write(summary + "\n")
    raise SystemExit(SWEEP_FAILED_EXIT_STATUS)


class SweepOutcome(Callback):
    """Hydra callback (conf/hydra/default.yaml): the table after every job, the exit status at the end."""

    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 1  # file times may be rounded to the second

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        write_sweep_report(sweep_dir)
        if not _is_last_optuna_trial(config):
            return
        records = launch_records(sweep_dir, self.started)
        if not any(record["status"] == "ok" for record in records.values()):
            # Optuna's sweeper raises "No trials are completed yet" right after this trial; stop first.
            exit_failed(failure_summary(sweep_dir, records) or "no Optuna trial finished")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = failure_summary(sweep_dir, launch_records(sweep_dir, self.started))
        if summary:
            exit_failed(summary)


def _is_last_optuna_trial(config: DictConfig) -> bool:
    sweeper = config.hydra.sweeper
    return sweeper.get("_target_") == OPTUNA_SWEEPER and config.hydra.job.num == sweeper.n_trials - 1
