"""Validation accuracy against wall time for a run of the real `fruitres.train` job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch import Callback

from fruitres.files import write_text_whole


class ValidationClock(Callback):
    """After every validation, records (seconds since `start`, epochs trained, val/acc) into `path` (JSON),
    and stops fitting once val/acc reaches `stop_at`.

    `start` is a `time.time()` taken by the caller before the run began: the clock counts everything the
    run does (data and feature caches, model building, sanity check, checkpoints), not only the steps.
    """

    def __init__(self, path: str, start: float, stop_at: float | None = None) -> None:
        self.path, self.start, self.stop_at = Path(path), start, stop_at
        self.points: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        accuracy = float(trainer.callback_metrics["val/acc"])
        epochs = trainer.global_step / max(1, trainer.num_training_batches)  # a time cap can end mid-epoch
        point = {"seconds": time.time() - self.start, "epochs": epochs, "steps": trainer.global_step}
        self.points.append({**point, "val_acc": accuracy})
        write_text_whole(self.path, json.dumps(self.points))
        if self.stop_at is not None and accuracy >= self.stop_at:
            trainer.should_stop = True
