"""What produced a run's numbers, recorded in its `run_record.json` (and checkpoints, HParams, MLflow tags).

The code (git commit, dirty flag and a hash of the uncommitted diff), the command line, Python and the key
package versions, the data (the image cache's key of each split, with class and image counts) and the
hardware (CPU, GPUs, the precision the trainer used). A run that loads a checkpoint also records the
checkpoint's own provenance, which `fruitres.train` stores in every checkpoint it writes.

One job runs at a time in a process (Hydra's basic launcher runs sweep jobs one after another), so the
provenance being gathered is the module's `_current` dict: `begin_provenance` starts it for a job, the job
adds what only it knows (`note_trainer`, `note_data`), and the record is written with it at the end.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback

from fruitres.data.cache import cache_key_of
from fruitres.run.devices import cpu_bf16_features, cpu_model
from fruitres.run.installation import CHECKOUT_DIR

PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "hydra-core")
CHECKPOINT_KEY = "fruitres_provenance"  # where checkpoints hold the provenance of the run that wrote them

_current: dict[str, Any] = {}


def git_state(folder: Path | None = CHECKOUT_DIR) -> dict[str, Any]:
    """Commit, whether tracked files differ from it, and the SHA-256 of that diff; all None outside git, and
    for an installed package (no checkout: a repository around its virtual environment holds other code)."""

    def git(*args: str) -> str | None:
        try:
            command = ["git", *args]  # git writes UTF-8 whatever the locale (an ASCII one would fail on it)
            done = subprocess.run(
                command, cwd=folder, capture_output=True, encoding="utf-8", errors="replace", timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):  # no git installed, or a hung filesystem
            return None
        return done.stdout if done.returncode == 0 else None

    commit = None if folder is None else git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff_sha256": None}
    diff = git("diff", "HEAD", "--no-color", "--no-ext-diff") or ""
    return {
        "commit": commit.strip(),
        "dirty": bool(diff),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def host_hardware() -> dict[str, Any]:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_bf16": cpu_bf16_features(),
        "gpu": ", ".join(sorted(set(gpus))) or None,
        "gpu_count": len(gpus),
    }


def checkpoint_provenance(path: str | Path | None) -> dict[str, Any] | None:
    """The provenance stored in a fruitres checkpoint (None if there is no file or it holds none)."""
    if path is None or not Path(path).expanduser().is_file():
        return None
    try:
        checkpoint = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a loadable checkpoint: the job itself reports that, in one line
        return None
    return checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None


def command_line() -> str:
    """The command as typed: `python -m fruitres.train ...` rather than the module file's path."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = ["-m", spec.name] if spec is not None and spec.name else sys.argv[:1]
    return shlex.join([Path(sys.executable).name, *program, *sys.argv[1:]])


def begin_provenance(ckpt_path: str | None = None) -> dict[str, Any]:
    """Start the provenance of the job about to run (the dict the job's record will hold)."""
    _current.clear()
    _current.update(
        git=git_state(),
        command=command_line(),
        working_dir=os.getcwd(),
        versions=package_versions(),
        hardware=host_hardware(),
    )
    if ckpt_path is not None:
        _current["checkpoint"] = {"path": str(ckpt_path), "provenance": checkpoint_provenance(ckpt_path)}
    return _current


def current_provenance() -> dict[str, Any]:
    return _current


def note_trainer(trainer: L.Trainer) -> None:
    """The precision the trainer actually runs at, and its device count."""
    _current.setdefault("hardware", {}).update(
        precision=str(trainer.precision), accelerator=type(trainer.accelerator).__name__
    )
    _current["hardware"]["devices"] = trainer.num_devices


def note_data(datamodule: L.LightningDataModule) -> None:
    """Each set-up split of a Fruits360DataModule: its cache key (files, sizes, mtimes, image size),
    its images and classes."""
    splits = {
        split: {
            "folder": getattr(datamodule, "split_sources", {}).get(split),  # e.g. Training/ (val_fraction)
            "fingerprint": cache_key_of(dataset.array_path),
            "images": len(dataset),
            "classes": len(set(dataset.labels.tolist())),
        }
        for split, dataset in getattr(datamodule, "datasets", {}).items()
    }
    _current["data"] = {
        "root": str(Path(datamodule.root).resolve()),
        "image_size": datamodule.hparams.image_size,
        "num_classes": datamodule.num_classes,
        "splits": splits,
    }


def tested_images() -> int | None:
    """How many test images this run's test accuracy was measured on (note_tested), if it was tested."""
    return _current.get("data", {}).get("splits", {}).get("test", {}).get("tested")


def note_tested(trainer: L.Trainer, datamodule: L.LightningDataModule) -> None:
    """How many test images `trainer.test` saw (fewer than the split's with `limit_test_batches`)."""
    split = _current.get("data", {}).get("splits", {}).get("test")
    if split is not None and trainer.num_test_batches:
        batches = sum(trainer.num_test_batches) * trainer.world_size
        split["tested"] = min(split["images"], int(batches * datamodule.hparams.batch_size))


def flat_provenance(
    provenance: Mapping[str, Any] | None = None, prefix: str = ""
) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) pairs of the provenance, for trackers whose tags and params are flat."""
    for key, value in (provenance if provenance is not None else _current).items():
        if isinstance(value, Mapping):
            yield from flat_provenance(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


class ProvenanceInCheckpoints(Callback):
    """Every checkpoint carries the provenance of the run that wrote it (plain values: loads weights-only)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = dict(_current)
