"""Every fast path computes what the plain path computes: batched cache reads, cached linear-probe
features, channels-last, bf16 training and torch.compile."""

from __future__ import annotations

from pathlib import Path

import kornia.augmentation as K
import lightning as L
import numpy as np
import pytest
import torch
import torchvision
from conftest import set_up_datamodule
from lightning.pytorch import Callback
from omegaconf import DictConfig, open_dict

from fruitres.callbacks.feature_cache import (
    ImagesWithFeatures,
    LinearProbeFeatureCache,
    build_feature_cache,
    feature_cache_path,
)
from fruitres.data.folders import list_samples
from fruitres.data.images import decode_image
from fruitres.models.classifier import FruitClassifier
from fruitres.train import train

NUM_CLASSES = 5


def probe_model(seed: int = 0, **overrides) -> FruitClassifier:
    torch.manual_seed(seed)
    return FruitClassifier(num_classes=NUM_CLASSES, frozen_stages=5, **overrides).eval()


def cpu_trainer(callbacks: list[Callback] = (), **overrides) -> L.Trainer:
    """A quiet CPU trainer with the linear-probe feature cache, as conf/callbacks/default.yaml has it."""
    kwargs = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    return L.Trainer(callbacks=[LinearProbeFeatureCache(), *callbacks], **(kwargs | overrides))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_batched_cache_reads_return_the_decoded_images_and_labels(
    tiny_dataset: Path, tmp_path: Path, num_workers: int
) -> None:
    datamodule = set_up_datamodule(tiny_dataset, tmp_path, num_workers=num_workers)
    class_to_idx = {name: index for index, name in enumerate(datamodule.class_names)}
    samples = list_samples(tiny_dataset / "Training", class_to_idx)
    dataset = datamodule.datasets["val"]

    images, labels = next(iter(datamodule.val_dataloader()))

    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32)
    assert images.is_contiguous(memory_format=torch.channels_last)  # NHWC rows, no copy
    for position, row in enumerate(dataset.rows[:8]):
        path, label = samples[row]
        assert np.array_equal(images[position].permute(1, 2, 0).numpy(), decode_image(path, 32))
        assert labels[position] == label
        assert torch.equal(images[position], dataset[position][0])


def test_cached_batches_hold_the_pixels_and_labels_the_tutorial_loader_reads(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    datamodule = set_up_datamodule(tiny_dataset, tmp_path, batch_size=16)
    tutorial = torchvision.datasets.ImageFolder(
        str(tiny_dataset / "Test"), transform=torchvision.transforms.ToTensor()
    )
    images, labels = next(iter(datamodule.test_dataloader()))  # Test/ is neither split nor shuffled
    for position in range(16):
        pixels, label = tutorial[position]
        torch.testing.assert_close(images[position].float() / 255, pixels, rtol=0, atol=1e-6)
        assert labels[position] == label


def test_cached_features_give_the_same_logits_as_the_live_backbone(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    datamodule = set_up_datamodule(tiny_dataset, tmp_path)
    model = probe_model()
    images = datamodule.datasets["val"]
    cached = ImagesWithFeatures(images, build_feature_cache(model, images, datamodule, cpu_trainer()))

    pixels, labels, features = cached.__getitems__(list(range(len(images))))

    with torch.no_grad():
        live = model(datamodule.normalize(pixels))
        from_cache = model.forward_head(features)
    torch.testing.assert_close(from_cache, live, rtol=1e-4, atol=1e-5)
    assert torch.equal(labels, images.labels)


def test_feature_cache_key_follows_data_weights_statistics_normalisation_and_precision(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    datamodule = set_up_datamodule(tiny_dataset, tmp_path)
    train_images, test_images = datamodule.datasets["train"], datamodule.datasets["test"]
    model = probe_model(seed=0)
    key = feature_cache_path(train_images, model, "imagenet", "32-true")

    assert feature_cache_path(train_images, probe_model(seed=0), "imagenet", "32-true") == key
    with torch.no_grad():
        model.net.fc.weight.add_(1.0)  # the head is not part of the features
    assert feature_cache_path(train_images, model, "imagenet", "32-true") == key

    with torch.no_grad():
        model.net.layer4[1].bn2.running_mean.add_(0.1)
    changed_statistics = feature_cache_path(train_images, model, "imagenet", "32-true")
    others = {
        "statistics": changed_statistics,
        "weights": feature_cache_path(train_images, probe_model(seed=1), "imagenet", "32-true"),
        "data": feature_cache_path(test_images, probe_model(seed=0), "imagenet", "32-true"),
        "normalisation": feature_cache_path(train_images, probe_model(seed=0), "other", "32-true"),
        "precision": feature_cache_path(train_images, probe_model(seed=0), "imagenet", "bf16-mixed"),
    }
    assert len({key, *others.values()}) == 1 + len(others), others


def probe_config(train_config: DictConfig, output_dir: Path, cache_features: bool) -> DictConfig:
    config = train_config.copy()
    with open_dict(config):
        config.model.frozen_stages = 5
        if not cache_features:
            config.callbacks.linear_probe_cache = None
        config.data.augment = None
        config.trainer.max_epochs = 1
        config.paths.output_dir = str(output_dir)
    return config


def test_linear_probe_trains_on_cached_features_as_it_would_on_the_live_backbone(
    train_config: DictConfig, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "data" / "cache"
    live = train(probe_config(train_config, tmp_path / "live", cache_features=False))
    assert not list(cache_dir.glob("features-*.npy"))

    cached = train(probe_config(train_config, tmp_path / "cached", cache_features=True))

    assert len(list(cache_dir.glob("features-*.npy"))) == 1
    for metric in ("train/loss_epoch", "val/loss", "test/loss"):  # test runs the live backbone on images
        assert cached[metric] == pytest.approx(live[metric], rel=1e-3), metric


class BatchItems(Callback):
    """Records how many items each training batch had (3 = images, labels, cached features)."""

    def __init__(self) -> None:
        self.counts: set[int] = set()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        self.counts.add(len(batch))


def test_cached_features_reach_loader_workers_started_before_fitting(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # A scheduler asks for the number of steps, which makes Lightning iterate the train loader (starting
    # its persistent worker) while the optimizers are set up, before `on_fit_start`.
    datamodule = set_up_datamodule(tiny_dataset, tmp_path, num_workers=1, persistent_workers=True)
    model = probe_model(scheduler={"_target_": "fruitres.models.schedules.one_cycle", "pct_start": 0.25})
    items = BatchItems()
    trainer = cpu_trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=1, callbacks=[items])
    trainer.fit(model.train(), datamodule=datamodule)
    assert items.counts == {3}


class UnfreezeLayer4(Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            pl_module.net.layer4.requires_grad_(True)


def test_unfreezing_the_backbone_during_a_cached_probe_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    datamodule = set_up_datamodule(tiny_dataset, tmp_path)
    trainer = cpu_trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[UnfreezeLayer4()]
    )
    with pytest.raises(RuntimeError, match="callbacks.linear_probe_cache=null"):
        trainer.fit(probe_model(), datamodule=datamodule)


def test_probe_with_training_augmentation_runs_the_live_backbone(tiny_dataset: Path, tmp_path: Path) -> None:
    datamodule = set_up_datamodule(tiny_dataset, tmp_path, augment={"hflip": K.RandomHorizontalFlip()})
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(probe_model(), datamodule=datamodule)
    assert not list((tmp_path / "cache").glob("features-*.npy"))


def test_channels_last_model_gives_the_same_logits() -> None:
    images = torch.rand(4, 3, 32, 32)
    torch.manual_seed(0)
    plain = FruitClassifier(num_classes=NUM_CLASSES).eval()
    torch.manual_seed(0)
    channels_last = FruitClassifier(num_classes=NUM_CLASSES, channels_last=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(channels_last(images), plain(images), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # bf16 pays off at 100 px and batch 128; at the 32 px of the tests it only costs time
def test_bf16_mixed_channels_last_training_learns(train_config: DictConfig) -> None:
    with open_dict(train_config):
        train_config.trainer.precision = "bf16-mixed"
        train_config.model.channels_last = True
        train_config.trainer.max_epochs = 8
        train_config.data.augment = None
    metrics = train(train_config)
    chance = 1 / NUM_CLASSES
    assert metrics["val/acc_best"] >= 3 * chance
    assert metrics["test/acc"] >= 3 * chance


@pytest.mark.slow
def test_compiled_model_gives_the_same_logits_and_checkpoint_keys() -> None:
    images = torch.rand(4, 3, 32, 32)
    torch.manual_seed(0)
    plain = FruitClassifier(num_classes=NUM_CLASSES).eval()
    torch.manual_seed(0)
    compiled = FruitClassifier(num_classes=NUM_CLASSES, compile=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), plain(images), rtol=1e-3, atol=1e-3)
    assert compiled.state_dict().keys() == plain.state_dict().keys()
