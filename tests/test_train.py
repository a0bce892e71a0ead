"""The main job end to end: real configs, real Trainer, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fruitres.data.datamodule import Fruits360DataModule
from fruitres.models.classifier import FruitClassifier
from fruitres.train import train

REPO = Path(__file__).resolve().parents[1]


def scalar_tags(run_dir: Path) -> set[str]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return set(events.Tags()["scalars"])


def test_fast_dev_run_runs_every_stage(train_config: DictConfig) -> None:
    with open_dict(train_config):
        train_config.trainer.fast_dev_run = True
    metrics = train(train_config)
    assert {"train/loss_epoch", "val/acc", "test/acc"} <= metrics.keys()


def test_short_training_beats_chance_and_logs_to_tensorboard(
    train_config: DictConfig, tmp_path: Path
) -> None:
    with open_dict(train_config):
        train_config.trainer.max_epochs = 8
        train_config.data.augment = None
    metrics = train(train_config)

    chance = 1 / 5
    assert metrics["val/acc_best"] >= 3 * chance
    assert metrics["test/acc"] >= 3 * chance
    tags = scalar_tags(tmp_path)
    expected = {
        "train/loss_step",
        "train/loss_epoch",
        "train/acc_step",
        "train/acc_epoch",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "test/loss",
        "test/acc",
        "test/acc_ci_low",
        "test/acc_ci_high",
        "time/wall_s",
    }
    assert expected <= tags
    assert any(tag.startswith("lr-") for tag in tags), tags
    checkpoints = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch_") for name in checkpoints)


def test_checkpoint_alone_rebuilds_the_model_with_the_same_predictions(
    train_config: DictConfig, tmp_path: Path
) -> None:
    with open_dict(train_config):
        train_config.trainer.max_epochs = 1
        train_config.test = False
    train(train_config)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"

    restored = FruitClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    trained_state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    original = FruitClassifier(**{k: v for k, v in restored.hparams.items()}).eval()
    original.load_state_dict(trained_state)

    datamodule: Fruits360DataModule = instantiate(train_config.data)
    datamodule.setup("test")
    images, _ = next(iter(datamodule.test_dataloader()))
    images = datamodule.normalize(images)
    with torch.no_grad():
        torch.testing.assert_close(restored(images), original(images))
    assert restored.hparams.class_names == datamodule.class_names
    assert restored.hparams.num_classes == 5


def test_command_line_run_writes_config_checkpoints_and_events(tiny_dataset: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "fruitres.train",
        f"data.data_dir={tiny_dataset}",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.accelerator=cpu",
        "callbacks.progress_bar=null",
    ]
    env = {**os.environ, "FRUITRES_ROOT": str(tmp_path)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "config_tree.log").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "test/acc" in scalar_tags(run_dir)
