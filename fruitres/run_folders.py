"""A run's folder as every part of fruitres reads it: what Hydra and fruitres write there, and the order of a
sweep's job folders. The one home of these names; writing records is the run layer's (fruitres/run/record.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

HYDRA_DIR = ".hydra"  # Hydra's copy of the job's config, its own config and the overrides
OVERRIDES_FILE = Path(HYDRA_DIR) / "overrides.yaml"  # written into every job folder as the job starts
RECORD_FILE = "run_record.json"  # the job's outcome (fruitres/run/record.py)
NO_RECORD_STATUS = "no record (running, or killed)"
TENSORBOARD_DIR = "tensorboard"  # conf/logger/tensorboard.yaml's save_dir
CLAIM_FILE = ".fruitres-claim"  # names the process that holds the folder (fruitres/run/folder_claim.py)


def job_order(name: str) -> tuple[int, str]:
    """Sort key of job folder names: Hydra numbers them, so 2 comes before 10."""
    return len(name), name


def job_dirs(sweep_dir: Path) -> list[Path]:
    """A sweep's job folders (those Hydra started), in job order."""
    dirs = [path for path in Path(sweep_dir).iterdir() if path.is_dir() and (path / HYDRA_DIR).is_dir()]
    return sorted(dirs, key=lambda path: job_order(path.name))


def saved_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides the run in `run_dir` was started with; None if it has none (yet)."""
    try:
        return [str(item) for item in OmegaConf.load(Path(run_dir) / OVERRIDES_FILE)]
    except (OSError, ValueError):  # no job there yet, or one being claimed by a parallel launcher
        return None


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The record of the job that ran in `run_dir`, or None if it has none (yet)."""
    path = Path(run_dir) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def job_record(run_dir: Path) -> dict[str, Any]:
    """The job's record; a job without one (still running, or killed) gets a status saying so."""
    return read_record(run_dir) or {"status": NO_RECORD_STATUS, "error": None, "metrics": {}}


def tensorboard_events_dir(run_dir: Path) -> Path:
    """The folder of a run's TensorBoard events: `tensorboard/<swept values>/` in a sweep job (named by
    fruitres/run/run_names.py), else `tensorboard/`."""
    folder = Path(run_dir) / TENSORBOARD_DIR
    named = sorted({path.parent for path in folder.glob("*/events.out.tfevents.*")})
    return named[0] if named else folder
