"""The best checkpoint by the monitored metric, the later one where two are equally good.

Lightning's `ModelCheckpoint` keeps the earlier of two checkpoints with the same score. A validation split
of near copies of training frames (Fruits-360 by image) saturates: val/acc reaches 1.000 mid-run and stays
there, so the run tested the first checkpoint to reach it, before the schedule had annealed (0.9836 Test
against 0.9896 at the end on the full dataset, docs/results.md). A later checkpoint scoring the same has
trained longer at a lower rate; it is the one kept here.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` with ties going to the later checkpoint."""

    def check_monitor_top_k(self, trainer: Any, current: torch.Tensor | None = None) -> bool:
        if current is None or self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return super().check_monitor_top_k(trainer, current)
        at_least = {"min": torch.le, "max": torch.ge}[self.mode]
        kept = at_least(current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(kept))

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        # Lightning sets best_model_path just before saving (the checkpoint holds it) to the first of the
        # best scores; best_k_models is in the order of saving, so the last of them is the latest
        if self.monitor is not None and self.best_k_models:
            best = self.best_model_score
            self.best_model_path = [path for path, score in self.best_k_models.items() if score == best][-1]
        super()._save_checkpoint(trainer, filepath)
