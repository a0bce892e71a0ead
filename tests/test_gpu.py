"""On a CUDA GPU (`trainer=gpu`): where the model and batches live, the precision the forward pass computes
in, and a linear probe whose cached features the GPU computes. Marked `gpu`: `make bench-gpu` runs them
(`pytest -m gpu`); without CUDA they are skipped."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import DictConfig

from fruitres.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def gpu_config(data_dir: Path, run_dir: Path, *overrides: str) -> DictConfig:
    """The tests' shrunk training config on one GPU (`trainer=gpu`), from random init."""
    shrunk = [item for item in tiny_train_overrides(data_dir, run_dir) if item != "trainer.accelerator=cpu"]
    return compose_config("train", ["trainer=gpu", "model.weights=null", *shrunk, *overrides])


class Placement(Callback):
    """Records where the parameters and a training batch are, and the dtype of the logits."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        images = batch[0]
        self.seen.update(
            parameters_on={p.device.type for p in pl_module.parameters()},
            batch_on=images.device.type,
            batch_channels_last=images.is_contiguous(memory_format=torch.channels_last),
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.seen["logits_dtype"] = outputs["logits"].dtype


def test_gpu_trainer_puts_model_and_channels_last_batches_on_cuda_under_autocast_with_pinned_memory(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = gpu_config(tiny_dataset, tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    model = instantiate(cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names)
    placement = Placement()
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=[placement], logger=False, enable_checkpointing=False, max_steps=3
    )
    trainer.fit(model, datamodule=datamodule)

    expected_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert placement.seen == {
        "parameters_on": {"cuda"},
        "batch_on": "cuda",
        "batch_channels_last": True,
        "logits_dtype": expected_dtype,
    }
    assert trainer.train_dataloader.pin_memory


def test_linear_probe_on_the_gpu_caches_backbone_features_and_trains_its_head(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    metrics = train(gpu_config(tiny_dataset, tmp_path, "model.frozen_stages=5", "data.augment=null"))
    assert list((tmp_path / "data" / "cache").glob("features-*.npy"))
    assert 0.0 <= metrics["test/acc"] <= 1.0
