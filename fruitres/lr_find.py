"""`python -m fruitres.lr_find experiment=...`: Lightning's learning-rate range test over the head's lr.

Each step raises the learning rate exponentially from `lr_find.min_lr` to `lr_find.max_lr`; every parameter
group keeps its ratio to the head (backbone_lr_mult, layer_lr_decay), so the suggestion is the head's
`model.optimizer.lr`. Writes `lr_find.png` (loss against lr, the suggestion marked) and `lr_find.json`
to the run dir, the same figure to TensorBoard, and prints the override to use. `tune.lr_find=true` on a
training run does the same before fitting and trains at the suggestion.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig

from fruitres.errors import FixableError
from fruitres.files import replaced_whole, write_text_whole
from fruitres.run.instantiate import instantiate_loggers
from fruitres.run.precision_probe import settle_precision
from fruitres.run.task import hydra_main, run_task

log = logging.getLogger(__name__)

PLOT_FILE = "lr_find.png"
RESULT_FILE = "lr_find.json"


class LearningRateSearchFailed(FixableError, RuntimeError):
    """The range test gave no finite suggestion; the message says what to change."""


@contextmanager
def group_ratios_kept(model: L.LightningModule) -> Iterator[None]:
    """During the range test, every parameter group runs at its configured ratio to the head (group 0).

    Lightning's finder gives every group the same learning rate and replaces the trainer's callbacks for
    the test; the module's own `lr_scheduler_step` hook still runs, so it puts the ratios back after each
    step of the finder's schedule.
    """
    configured = [group["lr"] for group in model.param_groups()]
    step = model.lr_scheduler_step

    def step_keeping_ratios(scheduler, metric=None) -> None:
        step(scheduler, metric)
        groups = scheduler.optimizer.param_groups
        for group, lr in zip(groups, configured, strict=True):
            group["lr"] = groups[0]["lr"] * lr / configured[0]

    model.lr_scheduler_step = step_keeping_ratios
    try:
        yield
    finally:
        del model.lr_scheduler_step


def find_lr(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    output_dir: Path,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_training: int = 100,
) -> float:
    """Run the range test with `trainer`, write its plot and numbers, and return the suggested head lr."""
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = max(max_epochs, num_training)  # its step count ends it, not short epochs
    try:
        with group_ratios_kept(model):
            finder = Tuner(trainer).lr_find(
                model,
                datamodule=datamodule,
                min_lr=min_lr,
                max_lr=max_lr,
                num_training=num_training,
                update_attr=False,
            )
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None or not math.isfinite(suggestion):
        raise LearningRateSearchFailed(
            f"the learning-rate range test from {min_lr:g} to {max_lr:g} gave no suggestion (too few steps "
            f"or a loss that never fell); raise lr_find.num_training (now {num_training}) or widen "
            "lr_find.min_lr/max_lr"
        )
    figure = finder.plot(suggest=True)
    figure.axes[0].set_title(f"learning-rate range test: suggested model.optimizer.lr={suggestion:.3g}")
    with replaced_whole(output_dir / PLOT_FILE) as path:
        figure.savefig(path, format="png", dpi=100)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure("lr_find/loss_vs_lr", figure)
    results = {"suggestion": suggestion, "lr": finder.results["lr"], "loss": finder.results["loss"]}
    write_text_whole(output_dir / RESULT_FILE, json.dumps(results))
    log.info(
        "Learning-rate range test: suggested head lr %.3g (plot: %s)", suggestion, output_dir / PLOT_FILE
    )
    return suggestion


def lr_find(cfg: DictConfig) -> dict[str, float]:
    """Seed → data → model → trainer → range test → plot, numbers and the override to use."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    model: L.LightningModule = instantiate(
        cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names
    )
    settle_precision(cfg.trainer, model, datamodule)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=[], logger=instantiate_loggers(cfg), enable_checkpointing=False
    )
    output_dir = Path(cfg.paths.output_dir)
    suggestion = find_lr(trainer, model, datamodule, output_dir, **cfg.lr_find)
    print(f"Suggested learning rate (plot: {output_dir / PLOT_FILE}); train with:")
    print(f"  model.optimizer.lr={suggestion:.3g}")
    return {"lr_find/suggestion": suggestion}


@hydra_main("lr_find")
def main(cfg: DictConfig) -> float | None:
    return run_task(cfg, lr_find)


if __name__ == "__main__":
    main()
