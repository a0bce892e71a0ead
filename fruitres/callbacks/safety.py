"""Stopping a run without damaging its checkpoints: on a NaN or infinite loss, on Ctrl-C and on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fruitres.checkpoints.files import INTERRUPTED, newest_checkpoint
from fruitres.errors import FixableError

log = logging.getLogger(__name__)


class NonFiniteLossError(FixableError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and the last good checkpoint."""


class StopOnNonFiniteLoss(Callback):
    """Stop at the first NaN or infinite training loss, before backward: the weights and the checkpoints
    on disk never see it, and the error names the step and the last good checkpoint."""

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if torch.isfinite(loss).all():
            return
        folders = {cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}
        checkpoint = newest_checkpoint(folders)
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved yet"
        raise NonFiniteLossError(
            f"the training loss is {loss.item()} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); training stopped before it reached the weights and {kept}; "
            "lower model.optimizer.lr or look for broken inputs, then train again"
        )


class CheckpointOnInterrupt(Callback):
    """Ctrl-C (or SIGTERM) during fitting: finish the current batch, save `<dirpath>/<filename>.ckpt`, exit.

    Lightning handles the KeyboardInterrupt itself (on_exception hooks, loggers closed) and stops at a batch
    boundary on SIGTERM; this callback defers Ctrl-C to the end of the batch, so the saved state is never
    half an optimizer step, and writes the checkpoint. A second Ctrl-C interrupts at once. The run is then
    recorded as interrupted and exits with 130 (Ctrl-C) or 143 (SIGTERM): fruitres/run/interruption.py.
    """

    def __init__(self, dirpath: str, filename: str = Path(INTERRUPTED).stem) -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._requested = False
        self._previous_handler: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._requested = False
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous_handler = signal.signal(signal.SIGINT, self._request_stop)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._restore_handler()
        self._requested = True
        log.warning(
            "Ctrl-C: stopping after this batch and saving %s (press Ctrl-C again to stop now)", self.path
        )

    def _stop_if_requested(self) -> None:
        if self._requested:
            self._requested = False
            raise KeyboardInterrupt

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._stop_if_requested()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._stop_if_requested()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handler()
        if not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return  # other errors leave the checkpoints as they were: the last good ones
        if trainer.global_step == 0:
            log.warning("Interrupted before the first training step: no checkpoint to save")
            return
        trainer.save_checkpoint(self.path)
        log.warning(
            "Interrupted at step %d; saved %s. Continue with: python -m fruitres.train resume=%s",
            trainer.global_step,
            self.path,
            self.path.parent.parent,
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        """Put back the Ctrl-C handler that was there before fitting, unless someone replaced ours since."""
        if self._previous_handler is not None and signal.getsignal(signal.SIGINT) == self._request_stop:
            signal.signal(signal.SIGINT, self._previous_handler)
        self._previous_handler = None
