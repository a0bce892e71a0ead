"""Faults injected into real training processes: a SIGKILL at a chosen point, weights turned to NaN.

Training subprocesses load these callbacks with ``+callbacks.kill={_target_:faults.SigkillAt,...}`` and
this folder on PYTHONPATH; a resumed run drops them again with ``~callbacks.kill``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch import Callback

POINTS = ("train", "validation", "checkpoint_write")


class SigkillAt(Callback):
    """SIGKILL at the second training batch, the first validation batch or a checkpoint write of `epoch`."""

    def __init__(self, epoch: int, point: str) -> None:
        assert point in POINTS, point
        self.epoch = epoch
        self.point = point

    def _due(self, trainer: L.Trainer, point: str) -> bool:
        return self.point == point and trainer.current_epoch == self.epoch and not trainer.sanity_checking

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self._due(trainer, "train") and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_batch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if self._due(trainer, "validation"):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        # Lightning runs checkpoint callbacks after this one: the saves of this epoch are about to start.
        if self._due(trainer, "checkpoint_write"):
            folder = Path(trainer.checkpoint_callback.dirpath)
            threading.Thread(target=_kill_once_a_partial_file_grows, args=(folder,), daemon=True).start()


def _kill_once_a_partial_file_grows(folder: Path) -> None:
    while True:
        for partial in folder.glob(".*.partial"):
            try:
                if partial.stat().st_size > 0:
                    os.kill(os.getpid(), signal.SIGKILL)
            except FileNotFoundError:
                pass
        time.sleep(0.0005)


class PoisonWeightsAt(Callback):
    """At the start of `epoch`, set one weight to NaN, as a diverging run would: the next loss is NaN."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                weight = next(pl_module.parameters())
                weight[(0,) * weight.dim()] = float("nan")
