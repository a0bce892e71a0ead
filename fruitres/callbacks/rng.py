"""Random generator states saved in every checkpoint and restored on resume.

Lightning checkpoints hold the weights, optimizer, scheduler and loop counters but not the random
generators, so a resumed run would shuffle and augment differently from the run it continues. With
these states restored, resuming from an end-of-epoch checkpoint replays exactly what the uninterrupted
run would have drawn.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback


def collect_rng_states() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA states, as types a `weights_only=True` load accepts."""
    name, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if states["torch.cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])


class RngStateCheckpoint(Callback):
    """Stores the generator states with each checkpoint; loading the checkpoint sets them back."""

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict)
