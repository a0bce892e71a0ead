"""Learning-rate schedules built from the run's total number of optimizer steps, or fitted to its time budget.

With `trainer.max_time` set, the run plans its length from the speed of its first steps
(callbacks/time_budget.py) and a schedule follows that plan (`ScheduleLength`): from the step the plan is
made at, it is stretched or compressed so that it ends at the planned last step, on a fast machine (more
epochs than `max_epochs`) as on a slow one (fewer).

With `fit_to_max_time=true` and `trainer.max_time` set, a schedule's position is also the further of that
and the clock (elapsed / max_time of the training time, which checkpoints keep across a resume): a safety
net, so that the learning rate reaches its end when the time does on a machine that slows down after the
plan (or without one, `callbacks.time_budget=null`), instead of being cut mid-way at a high rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class ScheduleLength:
    """Where the run ends, in optimizer steps, once a time-budget plan made at step `planned_at` says so.

    Shared, and read live, by the callback that plans (callbacks/time_budget.py) and the schedules. A
    re-plan at step `anchor_step`, where `anchor_fraction` of the schedule after `planned_at` was done,
    stretches or compresses only the rest, so the learning rate does not jump.
    """

    planned_at: int | None = None
    planned_total: int | None = None
    anchor_step: int | None = None  # None: planned_at, with nothing of the rest done
    anchor_fraction: float = 0.0

    def fraction_done(self, step: int) -> float:
        """The share of the schedule after `planned_at` done at optimizer step `step` (a plan is set)."""
        anchor = self.planned_at if self.anchor_step is None else self.anchor_step
        remaining = self.planned_total - anchor
        if remaining <= 0:
            return 1.0
        done = self.anchor_fraction + (step - anchor) * (1 - self.anchor_fraction) / remaining
        return min(1.0, max(0.0, done))

    def replan(self, step: int, planned_total: int) -> None:
        """From `step` on, the rest of the schedule ends at `planned_total` instead."""
        self.anchor_fraction = self.fraction_done(step)
        self.anchor_step, self.planned_total = step, planned_total

    def position(self, step: int, total_steps: int) -> float:
        """Optimizer step → the schedule's step: the same until the plan, then mapped so that the rest of
        the schedule (`total_steps` long in all) ends at `planned_total`."""
        if self.planned_at is None or self.planned_total is None or step <= self.planned_at:
            return step
        start = min(self.planned_at, total_steps)
        return start + self.fraction_done(step) * (total_steps - start)


def planned_length(trainer: L.Trainer) -> ScheduleLength | None:
    """The length the run's time-budget callback plans, if it has one (callbacks/time_budget.py)."""
    lengths = (getattr(callback, "schedule_length", None) for callback in trainer.callbacks)
    return next((length for length in lengths if isinstance(length, ScheduleLength)), None)


def _schedule_step(
    total_steps: int, time_fraction: TimeFraction | None, length: ScheduleLength | None
) -> Callable[[int], int]:
    """Optimizer step → the schedule's step: as planned, or further where the clock has gone further."""

    def position(step: int) -> int:
        by_steps = length.position(step, total_steps) if length is not None else step
        by_clock = time_fraction() * total_steps if time_fraction is not None else 0.0
        return min(total_steps, math.floor(max(by_steps, by_clock)))

    return position


def cosine_with_warmup(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.01,
    fit_to_max_time: bool = False,
    time_fraction: TimeFraction | None = None,
    length: ScheduleLength | None = None,
) -> LRScheduler:
    """Linear warm-up for `warmup_fraction` of the steps, then cosine decay to `min_lr_ratio` × lr."""
    warmup = max(1, round(total_steps * warmup_fraction))
    position = _schedule_step(total_steps, time_fraction if fit_to_max_time else None, length)

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
    length: ScheduleLength | None = None,
) -> LRScheduler:
    """torch's one-cycle policy peaking at each parameter group's own learning rate."""
    max_lr = [group["lr"] for group in optimizer.param_groups]
    # torch divides by the warm-up's length in steps; very short runs (debug, tests) need at least one
    total_steps = max(math.floor(1 / pct_start) + 2, int(total_steps))
    position = _schedule_step(total_steps, time_fraction if fit_to_max_time else None, length)
    return _PositionedOneCycleLR(
        optimizer, position, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start
    )
