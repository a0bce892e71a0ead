"""Each job's outcome in its own run directory (`run_record.json`): what sweep tables are built from.

A record says whether the job finished (status ok), failed (with its error) or was stopped by SIGTERM or
Ctrl-C (status interrupted, with the command that resumes it), its overrides, its wall
time, how many epochs it trained, its final metrics and what produced them (its provenance: code, command,
versions, data, hardware; fruitres/run/provenance.py). In a sweep a failed job is recorded and the sweep
goes on; a re-launched sweep (same `hydra.sweep.dir`) reuses the jobs already recorded as ok.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from fruitres.checkpoints.files import CHECKPOINT_DIR, LAST
from fruitres.errors import fixable_cause, innermost
from fruitres.files import write_text_whole
from fruitres.reports.sweep_report import write_sweep_report
from fruitres.run.interruption import stopped_by
from fruitres.run.provenance import begin_provenance
from fruitres.run.resume import resume_command
from fruitres.run_folders import RECORD_FILE, read_record

log = logging.getLogger(__name__)

TRACEBACK_FILE = "traceback.txt"  # a failed sweep job's traceback, when its error is not a FixableError


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Replace the record at once, so a reader never sees half of one."""
    write_text_whole(Path(run_dir) / RECORD_FILE, json.dumps(record, indent=2) + "\n")


def epochs_trained(run_dir: Path, since: float) -> int | None:
    """Finished epochs, from the end-of-epoch checkpoint written after `since` (None if there is none)."""
    checkpoint = Path(run_dir) / CHECKPOINT_DIR / LAST
    if not checkpoint.is_file() or checkpoint.stat().st_mtime < since:  # not one of an earlier attempt's
        return None
    # saved during its last epoch, whose index it holds
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["epoch"]) + 1


def root_cause(error: BaseException) -> str:
    """The innermost error of a chain, on one line, as the record shows it."""
    error = innermost(error)
    return " ".join(f"{type(error).__name__}: {error}".split())


def run_recorded(cfg: DictConfig, job: Callable[[], dict[str, float]]) -> float | None:
    """Run `job` and record its outcome; returns the optimized metric (None for a failed sweep job).

    A failed single run re-raises (non-zero exit status); a failed sweep job is logged and the sweep goes
    on. A job stopped by a signal is recorded as interrupted and stops the sweep too. A sweep job whose
    directory already holds an ok record for the same overrides is not run again.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    metric = cfg.get("optimized_metric")

    previous = read_record(run_dir)
    if in_sweep and previous and previous["status"] == "ok" and previous["overrides"] == overrides:
        log.info("Job %s already finished (%s): reusing its record, not training again", run_dir, RECORD_FILE)
        return previous["metrics"].get(metric)

    record: dict[str, Any] = {
        "overrides": overrides,
        "optimized_metric": metric,
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "provenance": begin_provenance(cfg.get("ckpt_path")),  # the job adds its data and precision
    }
    started = time.time()
    try:
        metrics = job()
    except Exception as error:
        record |= {"status": "failed", "error": root_cause(error), "metrics": {}}
        _finish(run_dir, record, started)
        if not in_sweep:
            raise
        log.error(
            "Job %s failed, the sweep goes on: %s%s",
            run_dir,
            record["error"],
            _traceback_note(run_dir, error),
        )
        return None
    except BaseException as error:
        signal_name = stopped_by(error)
        if signal_name is None:
            raise
        record |= {"status": "interrupted", "error": f"stopped by {signal_name}", "metrics": {}}
        record |= {"resume": resume_command(cfg, run_dir)}
        _finish(run_dir, record, started)
        if in_sweep and rank_zero_only.rank == 0:  # Hydra's end-of-job callbacks do not run after a signal
            write_sweep_report(Path(hydra_cfg.sweep.dir))
        raise
    record |= {"status": "ok", "error": None, "metrics": metrics}
    _finish(run_dir, record, started)
    return metrics.get(metric)


def _traceback_note(run_dir: Path, error: Exception) -> str:
    """A bug's traceback goes to a file beside the record; an error the user can fix is its one line."""
    if fixable_cause(error) is not None:
        return ""
    write_text_whole(run_dir / TRACEBACK_FILE, "".join(traceback.format_exception(error)))
    return f" (traceback in {run_dir / TRACEBACK_FILE})"


def _finish(run_dir: Path, record: dict[str, Any], started: float) -> None:
    record |= {"wall_time_s": round(time.time() - started, 1), "epochs": epochs_trained(run_dir, started)}
    if rank_zero_only.rank == 0:  # DDP ranks > 0 run in the same directory
        write_record(run_dir, record)
