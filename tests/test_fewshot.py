"""The few-shot recipe (conf/recipe/fewshot.yaml): composed with transfer_target and run on tiny data from
a backbone the project trained, at 10 images per class."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TrainedSweep, compose_config, tiny_train_overrides
from omegaconf import DictConfig

from fruitres.train import train

SHOTS = 10


def fewshot_config(tiny_dataset: Path, run_dir: Path, source: Path) -> DictConfig:
    """transfer_target with recipe=fewshot on 3 of the tiny classes, shrunk to a few steps."""
    classes = sorted(p.name for p in (tiny_dataset / "Training").iterdir())[:3]
    return compose_config(
        "train",
        [
            "experiment=transfer_target",
            "recipe=fewshot",
            *tiny_train_overrides(tiny_dataset, run_dir),
            f"data.classes=[{','.join(classes)}]",
            f"data.train_per_class={SHOTS}",
            f"model.weights_path={source}",
            "trainer.max_epochs=-1",  # the recipe counts steps, as transfer_target does
            "trainer.max_steps=8",
            "trainer.val_check_interval=4",
            "callbacks.figures=null",
        ],
    )


def test_fewshot_composes_a_longer_head_only_recipe_on_cached_features() -> None:
    cfg = compose_config(
        "train", ["experiment=transfer_target", "recipe=fewshot", "model.weights_path=/s.ckpt"]
    )
    assert cfg.model.frozen_stages == 5 and not cfg.model.train_bn
    assert cfg.data.augment is None  # what lets the features be cached
    assert cfg.trainer.max_steps == 4 * 120  # transfer_target's 120 steps, 4 times
    assert cfg.callbacks.last_checkpoint.every_n_train_steps == cfg.trainer.val_check_interval == 120


@pytest.mark.slow  # the session's trained_sweep, then a run
def test_fewshot_trains_from_the_source_backbone_and_tests(
    tiny_dataset: Path, tmp_path: Path, trained_sweep: TrainedSweep
) -> None:
    metrics = train(fewshot_config(tiny_dataset, tmp_path, trained_sweep.checkpoint))

    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert len(list((tmp_path / "data" / "cache").glob("features-*.npy"))) == 1  # the head ran on them
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 8
    assert checkpoint["state_dict"]["net.fc.weight"].shape[0] == 3
