"""Learning-rate schedules built from the run's total number of optimizer steps, or fitted to its time budget.

With `fit_to_max_time=true` and `trainer.max_time` set, a schedule's position is the further of the step
count and the clock (elapsed / max_time of the training time, which checkpoints keep across a resume), so
the learning rate reaches its end when the time does on a machine too slow for `max_epochs`, instead of
being cut mid-way at a high rate; on a fast machine the steps end it first, as without the option.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

TimeFraction = Callable[[], float]


def max_time_fraction(trainer: L.Trainer) -> TimeFraction | None:
    """The share of `trainer.max_time` spent training so far, read live; None without a time limit."""
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
    if timer is None or timer.time_remaining() is None:
        return None

    def fraction() -> float:
        elapsed = timer.time_elapsed()
        return elapsed / max(elapsed + timer.time_remaining(), 1e-9)

    return fraction


def _schedule_step(total_steps: int, time_fraction: TimeFraction | None) -> Callable[[int], int]:
    """Optimizer step → the schedule's step: the same, or further where the clock has gone further."""
    if time_fraction is None:
        return lambda step: step
    return lambda step: min(total_steps, max(step, math.floor(time_fraction() * total_steps)))


def cosine_with_warmup(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.01,
    fit_to_max_time: bool = False,
    time_fraction: TimeFraction | None = None,
) -> LRScheduler:
    """Linear warm-up for `warmup_fraction` of the steps, then cosine decay to `min_lr_ratio` × lr."""
    warmup = max(1, round(total_steps * warmup_fraction))
    position = _schedule_step(total_steps, time_fraction if fit_to_max_time else None)

    def factor(step: int) -> float:
        step = position(step)
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


class _PositionedOneCycleLR(OneCycleLR):
    """torch's one-cycle, evaluated at the schedule's position rather than the optimizer's step count."""

    def __init__(self, optimizer: Optimizer, position: Callable[[int], int], **kwargs: Any) -> None:
        self._position = position
        super().__init__(optimizer, **kwargs)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        self.last_epoch = min(self.total_steps - 1, self._position(step))
        try:
            return super().get_lr()
        finally:
            self.last_epoch = step

    def state_dict(self) -> dict[str, Any]:
        """The position is a function of the run, rebuilt with the scheduler; it is not saved."""
        return {key: value for key, value in super().state_dict().items() if key != "_position"}


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    pct_start: float = 0.25,
    fit_to_max_time: bool = False,
    time_fraction: TimeFraction | None = None,
) -> LRScheduler:
    """torch's one-cycle policy peaking at each parameter group's own learning rate."""
    max_lr = [group["lr"] for group in optimizer.param_groups]
    # torch divides by the warm-up's length in steps; very short runs (debug, tests) need at least one
    total_steps = max(math.floor(1 / pct_start) + 2, int(total_steps))
    position = _schedule_step(total_steps, time_fraction if fit_to_max_time else None)
    return _PositionedOneCycleLR(
        optimizer, position, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start
    )
