"""Learning-rate schedules built from the run's total number of optimizer steps."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


def cosine_with_warmup(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.01
) -> LRScheduler:
    """Linear warm-up for `warmup_fraction` of the steps, then cosine decay to `min_lr_ratio` × lr."""
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def one_cycle(optimizer: Optimizer, total_steps: int, pct_start: float = 0.25) -> LRScheduler:
    """torch's one-cycle policy peaking at each parameter group's own learning rate."""
    max_lr = [group["lr"] for group in optimizer.param_groups]
    # torch divides by the warm-up's length in steps; very short runs (debug, tests) need at least one
    shortest = math.floor(1 / pct_start) + 2
    return OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=max(shortest, int(total_steps)), pct_start=pct_start
    )
