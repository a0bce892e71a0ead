"""One log line per epoch for runs no terminal watches (a cluster job, nohup, a notebook's captured output).

The Rich progress bar draws only on a terminal, so elsewhere a long run is silent between the cache build
and the end. This callback logs, from rank 0 only, the epoch, step, training and validation loss and
accuracy, training images per second, the time elapsed and an estimate of the time left. It logs through
Python logging, which Hydra's job logging sends to stdout and to the run's `train.log`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch import Callback

from fruitres.errors import ConfigError
from fruitres.models.schedules import planned_length

log = logging.getLogger(__name__)

WHEN = ("auto", "always", "never")  # callbacks.epoch_log.when; auto: when stdout is not a terminal


class EpochLog(Callback):
    """A line per finished training epoch, logged when `when` says so (auto: stdout is not a terminal)."""

    def __init__(self, when: str = "auto") -> None:
        if when not in WHEN:
            raise ConfigError(f"callbacks.epoch_log.when={when!r} is not one of {', '.join(WHEN)}")
        self.when = when
        self.fit_started = 0.0
        self.epoch_started = 0.0
        self.train_seconds = 0.0
        self.images = 0
        self.first_epoch = 0
        self.first_step = 0

    @property
    def enabled(self) -> bool:
        if self.when == "auto":
            return not sys.stdout.isatty()
        return self.when == "always"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_started = time.monotonic()
        self.first_epoch = trainer.current_epoch  # a resumed run estimates from its own epochs only
        self.first_step = trainer.global_step

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.images = 0
        self.train_seconds = 0.0
        self.epoch_started = time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.images += len(batch[0]) * trainer.world_size
        self.train_seconds = time.monotonic() - self.epoch_started  # validation excluded from images/s

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and trainer.is_global_zero:
            log.info("%s", self.epoch_line(trainer))

    def epoch_line(self, trainer: L.Trainer) -> str:
        metrics = trainer.callback_metrics
        elapsed = time.monotonic() - self.fit_started
        speed = self.images / self.train_seconds if self.train_seconds > 0 else math.nan
        total = _total_epochs(trainer)
        epochs = f"{trainer.current_epoch + 1}/{total:g}" if total else f"{trainer.current_epoch + 1}"
        return (
            f"Epoch {epochs} step {trainer.global_step}: "
            f"train loss {_metric(metrics, 'train/loss')} acc {_metric(metrics, 'train/acc')} | "
            f"val loss {_metric(metrics, 'val/loss')} acc {_metric(metrics, 'val/acc')} | "
            f"{speed:.0f} images/s | elapsed {_duration(elapsed)}, left ~{_duration(self.time_left(trainer))}"
        )

    def time_left(self, trainer: L.Trainer) -> float | None:
        """The time the remaining epochs (or steps, under trainer.max_steps) take at this run's pace."""
        elapsed = time.monotonic() - self.fit_started
        done_epochs = trainer.current_epoch + 1 - self.first_epoch
        done_steps = trainer.global_step - self.first_step
        left = []
        if trainer.max_epochs is not None and trainer.max_epochs >= 0 and done_epochs > 0:
            left.append(elapsed / done_epochs * max(0, trainer.max_epochs - trainer.current_epoch - 1))
        if trainer.max_steps >= 0 and done_steps > 0:
            left.append(elapsed / done_steps * max(0, trainer.max_steps - trainer.global_step))
        plan = planned_length(trainer)
        if plan is not None and plan.planned_total is not None and done_steps > 0:  # a time budget's end
            left.append(elapsed / done_steps * max(0, plan.planned_total - trainer.global_step))
        return min(left) if left else None


def _total_epochs(trainer: L.Trainer) -> float | None:
    """The epochs the run is to train: as a time budget planned them (to a tenth), else max_epochs."""
    plan = planned_length(trainer)
    if plan is not None and plan.planned_total is not None and trainer.num_training_batches:
        return round(
            plan.planned_total * max(1, trainer.accumulate_grad_batches) / trainer.num_training_batches, 1
        )
    return trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None


def _metric(metrics: dict[str, Any], name: str) -> str:
    """An epoch value (`<name>_epoch` when the metric is also logged per step) to 4 digits, or '-'."""
    value = metrics.get(f"{name}_epoch", metrics.get(name))
    return "-" if value is None else f"{float(value):.4f}"


def _duration(seconds: float | None) -> str:
    return "?" if seconds is None else str(timedelta(seconds=round(seconds)))
