"""Fine-tuning from a backbone the project trained itself: `model.weights_path=<fruitres .ckpt>`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import TrainedSweep
from omegaconf import DictConfig, open_dict

from fruitres.models.backbone import WeightsUnavailableError
from fruitres.models.classifier import FruitClassifier
from fruitres.train import train


def source_network_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def test_backbone_from_a_checkpoint_equals_the_source_and_the_head_is_new(
    trained_sweep: TrainedSweep, caplog: pytest.LogCaptureFixture
) -> None:
    source = source_network_state(trained_sweep.checkpoint)
    torch.manual_seed(123)
    with caplog.at_level(logging.INFO, logger="fruitres.models.backbone"):
        model = FruitClassifier(num_classes=3, weights_path=str(trained_sweep.checkpoint))

    loaded = model.net.state_dict()
    backbone = [key for key in loaded if not key.startswith("fc.")]
    for key in backbone:
        torch.testing.assert_close(loaded[key], source[key], rtol=0, atol=0, msg=key)
    assert model.net.fc.weight.shape == (3, source["fc.weight"].shape[1]) != source["fc.weight"].shape
    torch.manual_seed(123)
    fresh = FruitClassifier(num_classes=3)
    torch.testing.assert_close(model.net.fc.weight, fresh.net.fc.weight)  # initialised as for a new run
    (line,) = [r.getMessage() for r in caplog.records if "backbone tensors" in r.getMessage()]
    assert f"Loaded {len(backbone)} backbone tensors from {trained_sweep.checkpoint}" in line
    assert line.endswith("left out 2: fc.bias, fc.weight")


def test_a_checkpoint_of_another_architecture_names_the_first_missing_tensor(
    trained_sweep: TrainedSweep,
) -> None:
    with pytest.raises(WeightsUnavailableError, match=r"lacks the backbone tensor layer1\.2\.conv1\.weight"):
        FruitClassifier(num_classes=3, arch="resnet34", weights_path=str(trained_sweep.checkpoint))


def test_a_mis_shaped_backbone_tensor_is_named(trained_sweep: TrainedSweep, tmp_path: Path) -> None:
    checkpoint = torch.load(trained_sweep.checkpoint, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["net.layer2.0.conv1.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.ckpt"
    torch.save(checkpoint, broken)
    with pytest.raises(WeightsUnavailableError, match=r"layer2\.0\.conv1\.weight has shape \(1,\)"):
        FruitClassifier(num_classes=3, weights_path=str(broken))


def test_a_linear_probe_on_a_transferred_backbone_uses_the_feature_cache(
    trained_sweep: TrainedSweep, train_config: DictConfig, tmp_path: Path
) -> None:
    with open_dict(train_config):
        train_config.model.weights_path = str(trained_sweep.checkpoint)
        train_config.model.frozen_stages = 5
        train_config.data.augment = None
        train_config.data.classes = sorted(
            p.name for p in (Path(train_config.data.data_dir) / "Training").iterdir()
        )[:3]
    train(train_config)

    assert len(list((tmp_path / "data" / "cache").glob("features-*.npy"))) == 1
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["state_dict"]["net.fc.weight"].shape[0] == 3
    source = source_network_state(trained_sweep.checkpoint)
    torch.testing.assert_close(
        checkpoint["state_dict"]["net.layer4.1.bn2.running_mean"], source["layer4.1.bn2.running_mean"]
    )
