"""Which test images a model gets most wrong, as fastai's interpretation shows them: per-image outcomes
(`predictions.csv`) and the highest-loss images (`top_losses.png`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback
from matplotlib.figure import Figure

from fruitres.reports.figures import labelled_grid

PREDICTION_FIELDS = ("path", "true", "predicted", "probability", "loss")


class PerImageOutcomes(Callback):
    """Each test image's true class, predicted class, the probability given to that prediction, and its
    cross-entropy loss (-log of the probability given to the true class), in the test loader's order."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batches = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        targets = batch[1]
        log_probabilities = outputs["logits"].detach().float().log_softmax(dim=1)
        probability, predicted = log_probabilities.exp().max(dim=1)
        loss = -log_probabilities.gather(1, targets[:, None]).squeeze(1)
        columns = (targets.float(), predicted.float(), probability, loss)
        self.batches.append(torch.stack(columns, dim=1).cpu())

    def rows(self, paths: Sequence[Path], class_names: Sequence[str]) -> list[dict[str, Any]]:
        """One row per image, `paths` in the loader's order, highest loss first."""
        outcomes = torch.cat(self.batches) if self.batches else torch.empty(0, 4)
        if len(outcomes) != len(paths):
            raise ValueError(f"{len(outcomes)} test outcomes for {len(paths)} images")
        rows = [
            {
                "index": index,
                "path": str(path),
                "true": class_names[int(target)],
                "predicted": class_names[int(predicted)],
                "probability": float(probability),
                "loss": float(loss),
            }
            for index, (path, (target, predicted, probability, loss)) in enumerate(
                zip(paths, outcomes.tolist(), strict=True)
            )
        ]
        return sorted(rows, key=lambda row: -row["loss"])


def top_losses_figure(images: torch.Tensor, rows: Sequence[dict[str, Any]], ncols: int = 6) -> Figure:
    """[0, 1] RGB images of the highest-loss rows, titled predicted/true, loss and probability."""
    titles = [
        f"{row['predicted']}/{row['true']}\nloss {row['loss']:.2f} p {row['probability']:.2f}" for row in rows
    ]
    colors = ["green" if row["predicted"] == row["true"] else "red" for row in rows]
    return labelled_grid(images, titles, ncols=min(ncols, max(1, len(rows))), title_colors=colors)
