"""A resumed run is the same run: the checkpoint's model fits the config, and the data it now sees is the data
the checkpoint recorded (its provenance holds the data folder, resolved at launch, and each split's
fingerprint: files, sizes, modification times, image size and resizing filter).

Resuming on other data, or on a relative `data.data_dir` that now resolves elsewhere (another working folder
or FRUITRES_ROOT), would mix two datasets in one run's curves and checkpoints with nothing said.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fruitres.errors import ConfigError
from fruitres.run.provenance import CHECKPOINT_KEY, current_provenance
from fruitres.run.resume import ResumePoint

log = logging.getLogger(__name__)


def check_resumed_run(cfg: DictConfig, resume: ResumePoint | None) -> None:
    """Refuse, in one line, to continue a checkpoint with another model or other data than it recorded;
    call it once `note_data` has noted the data this run sees. A fresh run (None) passes."""
    if resume is None or resume.checkpoint is None:
        return
    checkpoint_path = resume.checkpoint
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    _check_same_model(cfg, checkpoint_path, checkpoint.get("hyper_parameters") or {})
    recorded = (checkpoint.get(CHECKPOINT_KEY) or {}).get("data")
    if not recorded:
        log.warning("%s records no data provenance (an older checkpoint): data not checked", checkpoint_path)
        return
    _check_same_data(checkpoint_path, recorded, current_provenance().get("data") or {})


def _check_same_model(cfg: DictConfig, path: Path, hparams: dict[str, Any]) -> None:
    arch = cfg.model.get("arch")
    if hparams.get("arch") not in (None, arch):
        raise ConfigError(
            f"model.arch={arch} cannot continue {path}, a {hparams['arch']} checkpoint; resume with "
            f"model.arch={hparams['arch']}, or start a new run (model.weights_path={path} fine-tunes from it)"
        )


def _check_same_data(path: Path, recorded: dict[str, Any], now: dict[str, Any]) -> None:
    if recorded.get("root") and recorded["root"] != now.get("root"):
        raise ConfigError(
            f"data.data_dir now points at {now.get('root')}, but {path} was trained on {recorded['root']} "
            "(a relative path resolves against the launch folder or FRUITRES_ROOT); resume with "
            f"data.data_dir={recorded['root']}, or start a new run"
        )
    for split, then in (recorded.get("splits") or {}).items():
        fingerprint = (now.get("splits") or {}).get(split, {}).get("fingerprint")
        if then.get("fingerprint") not in (None, fingerprint):
            raise ConfigError(
                f"the {split} data in {now.get('root')} differs from what {path} was trained on (files "
                f"added, removed or rewritten, or another data.image_size or data.interpolation: fingerprint "
                f"{then['fingerprint']}, now {fingerprint}); restore that data, or start a new run"
            )
