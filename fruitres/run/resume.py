"""Continuing a stopped run in its own run directory and TensorBoard run.

``python -m fruitres.train resume=<run dir> [overrides]`` re-runs the command with the run's saved
overrides (``<run dir>/.hydra/overrides.yaml``), then the new ones, ``ckpt_path=last`` and
``hydra.run.dir=<run dir>``; ``ckpt_path=last`` picks the newer of ``checkpoints/last.ckpt`` (the end of
the last finished epoch) and ``checkpoints/interrupted.ckpt`` (written on Ctrl-C); without either, the
newest other checkpoint there (the best epoch's), so a finished epoch is never trained again from scratch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from fruitres.checkpoints.files import CHECKPOINT_DIR, RESUMABLE, newest_checkpoint
from fruitres.files import PARTIAL_SUFFIX, check_checkpoint_file
from fruitres.run.folder_claim import (
    RUN_DIR_KEY,
    RunFolderError,
    command_line_run_dir,
    is_ddp_follower,
    refuse_used_folder,
)
from fruitres.run_folders import OVERRIDES_FILE, saved_overrides

log = logging.getLogger(__name__)

RESUME_PREFIX = "resume="
RESUMABLE_TASK = "train"  # the one command that continues a run in its folder


def resume_command(cfg: DictConfig, run_dir: Path) -> str | None:
    """The command that continues the run in `run_dir` (None for commands that are simply run again)."""
    return (
        f"python -m fruitres.{RESUMABLE_TASK} resume={run_dir}" if cfg.task_name == RESUMABLE_TASK else None
    )


def continues_a_run(argv: list[str]) -> bool:
    """A training command line with `ckpt_path=` (as `resume=` expands) continues the run in its folder."""
    return any(arg.startswith("ckpt_path=") for arg in argv[1:])


def expand_resume_argv(argv: list[str]) -> list[str]:
    """Rewrite `resume=<run dir>` into the overrides that continue that run; other command lines pass."""
    given = [arg for arg in argv[1:] if arg.startswith(RESUME_PREFIX)]
    if not given:
        _refuse_finished_run_dir(argv)
        return argv
    run_dir = Path(given[-1].removeprefix(RESUME_PREFIX)).expanduser().resolve()
    previous = saved_overrides(run_dir)
    if previous is None:
        raise SystemExit(
            f"resume={run_dir}: no {OVERRIDES_FILE} there; pass a run directory "
            "(logs/train/runs/<time>) or one job of a sweep (logs/train/multiruns/<time>/<job number>)"
        )
    rest = [arg for arg in argv[1:] if not arg.startswith(RESUME_PREFIX)]
    if {"-m", "--multirun"} & set(rest):
        raise SystemExit("resume= continues one run; resume the jobs of a sweep one by one, without -m")
    flags = [arg for arg in rest if arg.startswith("-")]
    overrides = [arg for arg in rest if not arg.startswith("-")]
    # Hydra applies overrides in order, so a later value of the same key wins.
    return [argv[0], *flags, *previous, "ckpt_path=last", *overrides, f"hydra.run.dir={run_dir}"]


def _refuse_finished_run_dir(argv: list[str]) -> None:
    """A fresh run given the `hydra.run.dir` of an earlier run would overwrite its files."""
    run_dir = command_line_run_dir(argv)
    if run_dir is None or continues_a_run(argv) or is_ddp_follower():  # DDP ranks join rank 0's run
        return
    try:
        refuse_used_folder(run_dir, RUN_DIR_KEY, resumable=True)
    except RunFolderError as error:
        raise SystemExit(str(error)) from None


@dataclass(frozen=True)
class ResumePoint:
    checkpoint: Path | None  # None: nothing was saved yet, start again in the same run directory
    step: int  # TensorBoard drops what the stopped run logged from this step on


def resume_point(cfg: DictConfig) -> ResumePoint | None:
    """Where `ckpt_path` says to continue from (None for a fresh run); the checkpoint is checked whole."""
    value = cfg.get("ckpt_path")
    if value is None:
        return None
    if value == "last":
        folder = Path(cfg.paths.output_dir) / CHECKPOINT_DIR
        _remove_partial_files(folder)
        checkpoint = newest_checkpoint([folder], RESUMABLE) or newest_checkpoint([folder])
        if checkpoint is None:
            log.warning("No checkpoint in %s yet: training from the start in the same run directory", folder)
            return ResumePoint(None, 0)
        if checkpoint.name not in RESUMABLE:  # last.ckpt deleted or lost: a best checkpoint is whole too
            log.warning(
                "No %s in %s: resuming from %s, the newest checkpoint there",
                RESUMABLE[0],
                folder,
                checkpoint.name,
            )
    else:
        checkpoint = Path(value).expanduser()  # validate_config checked that it exists
    check_checkpoint_file(checkpoint)
    step = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    log.info("Resuming from %s (step %d)", checkpoint, step)
    return ResumePoint(checkpoint, step)


def _remove_partial_files(folder: Path) -> None:
    """A checkpoint write cut off by a kill leaves a hidden partial file; the resumed run owns the folder."""
    for partial in folder.glob(f".*{PARTIAL_SUFFIX}"):
        log.info("Removing %s, a checkpoint write cut off when the run stopped", partial)
        partial.unlink(missing_ok=True)
