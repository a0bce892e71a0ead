"""The checkpoint a run tests: the best by val/acc, the later one where scores tie (best_checkpoint.py)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from fruitres.run.compose import compose_config


class ScriptedScores(L.LightningModule):
    """A one-parameter model whose val/acc at each epoch is read from `scores`."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - batch[0].mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_with_default_checkpointing(scores: list[float], run_dir: Path, save_top_k: int) -> L.Trainer:
    """A real Trainer with the checkpoint callback of conf/callbacks/default.yaml, writing into run_dir."""
    cfg = compose_config(
        "train", [f"paths.output_dir={run_dir}", f"callbacks.model_checkpoint.save_top_k={save_top_k}"]
    )
    checkpoint = instantiate(cfg.callbacks.model_checkpoint)
    data = DataLoader(TensorDataset(torch.randn(4, 1)), batch_size=2)
    trainer = L.Trainer(
        max_epochs=len(scores),
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(ScriptedScores(scores), train_dataloaders=data, val_dataloaders=data)
    return trainer


@pytest.mark.parametrize("save_top_k", [1, 2])
def test_a_saturated_val_acc_tests_the_latest_of_the_equally_good_checkpoints(
    tmp_path: Path, save_top_k: int
) -> None:
    trainer = fit_with_default_checkpointing([0.5, 1.0, 1.0, 1.0, 0.9], tmp_path, save_top_k)
    callback = trainer.checkpoint_callback
    latest = tmp_path / "checkpoints" / "epoch_003.ckpt"
    assert Path(callback.best_model_path) == latest
    assert callback.best_model_score == 1.0
    kept = sorted(path.name for path in (tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    assert kept == ["epoch_002.ckpt", "epoch_003.ckpt"][-save_top_k:]  # the older of a tie goes first
    # the checkpoint itself names the best as it was when written: itself, for a resume to go on from
    saved = torch.load(latest, weights_only=False)["callbacks"]
    (state,) = (value for key, value in saved.items() if "BestCheckpoint" in key)
    assert Path(state["best_model_path"]) == latest


def test_a_better_score_still_wins_over_a_later_worse_one(tmp_path: Path) -> None:
    trainer = fit_with_default_checkpointing([0.7, 0.9, 0.8, 0.85], tmp_path, 1)
    assert Path(trainer.checkpoint_callback.best_model_path).name == "epoch_001.ckpt"
