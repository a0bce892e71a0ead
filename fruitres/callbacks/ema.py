"""Weight averaging: an exponential moving average (EMA) of the weights, or SWA, validated and checkpointed.

Lightning's `WeightAveraging` keeps the averaged copy (parameters and BatchNorm buffers), swaps it in for
validation, writes it as the checkpoint's `state_dict` (the raw weights go to `current_model_state`) and
puts it in the model when fitting ends, so the best checkpoint, `trainer.test` and `fruitres.eval` all see
the averaged weights. A resumed run gets both copies back.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from fruitres.errors import ConfigError


class _AveragedWeights(WeightAveraging):
    """Lightning's callback, with the average used only once it averages something, and restored for fits.

    Before its first update the average is the initial weights: validation, checkpoints and the end of
    fitting keep the raw weights until then. Lightning's callback also restores the raw weights when
    `trainer.test(ckpt_path=...)` loads a checkpoint after fitting, which would test them instead of the
    averaged ones the checkpoint was chosen by; here that happens only to resume fitting.
    """

    _swapped = False

    def averages_anything(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swapped = self.averages_anything()
        if self._swapped:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averages_anything():
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.averages_anything():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def warmed_up_ema(decay: float):
    """EMA update with timm's warm-up: the rate is min(decay, (1 + n) / (10 + n)) after n updates.

    Without it the average of a short run is mostly its random initialisation (0.999 needs ~1000 steps).
    One foreach update a group of tensors (torch's multi_avg_fn): 4.5 ms a step for a ResNet-18 on a 2-core
    Zen 4, against 31 ms tensor by tensor, which cost a 15-minute run 10% of its steps.
    """

    def average(
        averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor
    ) -> None:
        updates = float(num_averaged)
        rate = min(decay, (1 + updates) / (10 + updates))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - rate)
        else:  # BatchNorm's batch counts: integers, nothing to average
            torch._foreach_copy_(averaged, current)

    return average


class ExponentialMovingAverage(_AveragedWeights):
    """An EMA of the weights and BatchNorm buffers, updated after every `every_n_steps` optimizer steps."""

    def __init__(self, decay: float = 0.999, every_n_steps: int = 1, warmup: bool = True) -> None:
        if not 0 < decay < 1:
            raise ConfigError(f"callbacks.ema.decay={decay} must lie in (0, 1), e.g. 0.999")
        if every_n_steps < 1:
            raise ConfigError(f"callbacks.ema.every_n_steps={every_n_steps} must be at least 1")
        average = warmed_up_ema(decay) if warmup else torch.optim.swa_utils.get_ema_multi_avg_fn(decay)
        super().__init__(use_buffers=True, multi_avg_fn=average)
        self.every_n_steps = every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.every_n_steps == 0


class StochasticWeightAveraging(_AveragedWeights):
    """SWA: the equal-weight average of the weights at the end of every epoch from `start_epoch` on.

    The update comes with the epoch's last step, so the epoch's validation and checkpoint include it.
    """

    def __init__(self, start_epoch: int = 1) -> None:
        if start_epoch < 0:
            raise ConfigError(f"callbacks.swa.start_epoch={start_epoch} must be at least 0")
        super().__init__(use_buffers=True)
        self.start_epoch = start_epoch
        self._epoch_ends_at: int | None = None  # the epoch whose last step this is, else None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        self._epoch_ends_at = trainer.current_epoch if last else None
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return (
            step_idx is not None
            and self._epoch_ends_at is not None
            and self._epoch_ends_at >= self.start_epoch
        )
