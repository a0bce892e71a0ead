"""Training recipes: weight decay groups, layer-wise lr decay, Mixup/CutMix, weight averaging, TTA,
the learning-rate finder and schedules that fit a time budget."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from lightning.pytorch import Callback
from omegaconf import DictConfig

from fruitres.data.mix import MixupCutmix
from fruitres.models.classifier import FruitClassifier
from fruitres.train import train

SGD = {"_target_": "torch.optim.SGD", "lr": 0.5, "weight_decay": 1e-4}


def recipe_config(data_dir: Path, run_dir: Path, extra: list[str] = ()) -> DictConfig:
    """The default training config shrunk to two short epochs, without figures or a test pass."""
    overrides = [
        *tiny_train_overrides(data_dir, run_dir),
        "trainer.max_epochs=2",
        "++trainer.limit_train_batches=3",
        "++trainer.limit_val_batches=1",
        "callbacks.figures=null",
        "test=false",
        *extra,
    ]
    return compose_config("train", overrides)


# --- weight decay and layer-wise learning rates ---------------------------------------------------
def test_no_decay_groups_hold_exactly_the_batchnorm_and_bias_parameters() -> None:
    model = FruitClassifier(num_classes=4, optimizer=SGD)
    optimizer = model.configure_optimizers()["optimizer"]
    norm_and_bias = {
        id(p)
        for module in model.net.modules()
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.Linear)
        for name, p in module.named_parameters(recurse=False)
        if isinstance(module, torch.nn.BatchNorm2d) or name == "bias"
    }
    exempt = {id(p) for g in optimizer.param_groups if g["name"].endswith("/no_decay") for p in g["params"]}
    assert exempt == norm_and_bias
    assert all(g["weight_decay"] == 0 for g in optimizer.param_groups if g["name"].endswith("/no_decay"))
    assert all(g["weight_decay"] == 1e-4 for g in optimizer.param_groups if "/" not in g["name"])
    everything = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert everything == model.parameter_counts()["params/total"]


def test_decay_norm_and_bias_switch_puts_every_parameter_under_decay() -> None:
    model = FruitClassifier(num_classes=4, optimizer=SGD, decay_norm_and_bias=True)
    optimizer = model.configure_optimizers()["optimizer"]
    assert not any(g["name"].endswith("/no_decay") for g in optimizer.param_groups)
    assert all(g["weight_decay"] == 1e-4 for g in optimizer.param_groups)


def test_layer_decay_gives_each_stage_the_stated_learning_rate() -> None:
    model = FruitClassifier(num_classes=4, optimizer=SGD, backbone_lr_mult=0.5, layer_lr_decay=0.1)
    optimizer = model.configure_optimizers()["optimizer"]
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    expected = {
        "head": 0.5,
        "layer4": 0.5 * 0.5 * 0.1,
        "layer3": 0.5 * 0.5 * 0.01,
        "layer2": 0.5 * 0.5 * 1e-3,
    }
    expected |= {"layer1": 0.5 * 0.5 * 1e-4, "stem": 0.5 * 0.5 * 1e-5}
    assert lrs == pytest.approx(expected | {f"{name}/no_decay": lr for name, lr in expected.items()})
    assert [g["name"] for g in optimizer.param_groups][::2] == [
        "head",
        "layer4",
        "layer3",
        "layer2",
        "layer1",
        "stem",
    ]


def test_frozen_stages_have_no_groups_and_unfrozen_ones_keep_their_decayed_rate() -> None:
    model = FruitClassifier(num_classes=4, optimizer=SGD, frozen_stages=3, layer_lr_decay=0.5)
    names = [g["name"] for g in model.configure_optimizers()["optimizer"].param_groups]
    assert names == ["head", "head/no_decay", "layer4", "layer4/no_decay", "layer3", "layer3/no_decay"]
    assert model.stage_lr(4) == pytest.approx(0.25)  # layer4 of five stages: one from the head


# --- Mixup / CutMix ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixed_targets_sum_to_one_and_mix_two_labels(mixup_alpha: float, cutmix_alpha: float) -> None:
    torch.manual_seed(0)
    mix = MixupCutmix(num_classes=6, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    images, labels = torch.rand(6, 3, 16, 16), torch.arange(6)
    for _ in range(10):
        mixed, targets = mix(images, labels)
        assert mixed.shape == images.shape and targets.shape == (6, 6)
        assert torch.allclose(targets.sum(dim=1), torch.ones(6))
        assert ((targets > 0).sum(dim=1) <= 2).all()
        weight = targets[torch.arange(6), labels]  # the share of each image's own label
        if cutmix_alpha == 0:  # Mixup: pixels are the same blend as the labels
            expected = images * weight.view(-1, 1, 1, 1) + images.flip(0) * (1 - weight.view(-1, 1, 1, 1))
            assert torch.allclose(mixed, expected, atol=1e-6)
        if mixup_alpha == 0:  # CutMix: the label share is the share of pixels kept
            kept = (mixed == images).all(dim=1).float().mean(dim=(1, 2))
            assert torch.allclose(weight, kept, atol=1e-6)


def test_mixing_is_off_in_validation_and_test() -> None:
    torch.manual_seed(0)
    model = FruitClassifier(num_classes=5, mix={"_target_": "fruitres.data.mix.MixupCutmix"}).eval()
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(model(images), labels)
        assert model.validation_step((images, labels), 0)["loss"] == pytest.approx(float(plain))
        assert model.test_step((images, labels), 0)["loss"] == pytest.approx(float(plain))
        assert model.training_step((images, labels), 0)["loss"] != pytest.approx(float(plain))


def test_training_with_mixup_cutmix_and_label_smoothing_runs(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = recipe_config(tiny_dataset, tmp_path, ["model/mix=mixup_cutmix", "model.label_smoothing=0.1"])
    metrics = train(cfg)
    assert 0 <= metrics["train/acc_epoch"] <= 1 and torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))


# --- weight averaging ---------------------------------------------------------------------------------
KEYS = ("net.layer4.1.conv2.weight", "net.fc.weight", "net.bn1.running_mean")


class ValidatedWeights(Callback):
    """Saves to `path` a few of the tensors the model holds while it validates, at each epoch."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and not trainer.sanity_checking:
            state = pl_module.state_dict()
            self.weights.append({key: state[key].detach().clone() for key in KEYS})
            torch.save(self.weights, self.path)


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True  # an interruption at a clean epoch boundary


def ema_config(data_dir: Path, run_dir: Path, extra: list[str] = ()) -> DictConfig:
    return recipe_config(
        data_dir, run_dir, ["callbacks=[default,ema]", "callbacks.ema.decay=0.9", "data.augment=null", *extra]
    )


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_ema_weights_differ_from_the_raw_ones_and_are_validated_and_checkpointed(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    probe = tmp_path / "validated.pt"
    probe_overrides = [
        "+callbacks.probe._target_=test_recipes.ValidatedWeights",
        f"+callbacks.probe.path={probe}",
    ]
    train(ema_config(tiny_dataset, tmp_path, probe_overrides))

    checkpoint = last_checkpoint(tmp_path)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert not torch.allclose(averaged[KEYS[0]], raw[KEYS[0]])
    validated = torch.load(probe, weights_only=True)
    assert len(validated) == 2
    for key in KEYS:
        assert torch.equal(validated[-1][key], averaged[key])


@pytest.mark.slow
def test_resumed_ema_run_equals_an_uninterrupted_one(tiny_dataset: Path, tmp_path: Path) -> None:
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    train(ema_config(tiny_dataset, uninterrupted))
    train(
        ema_config(tiny_dataset, interrupted, ["+callbacks.stop._target_=test_recipes.StopAfterFirstEpoch"])
    )
    assert last_checkpoint(interrupted)["epoch"] == 0
    resumed = tmp_path / "resumed"
    train(ema_config(tiny_dataset, resumed, [f"ckpt_path={interrupted / 'checkpoints' / 'last.ckpt'}"]))

    want, got = last_checkpoint(uninterrupted), last_checkpoint(resumed)
    assert got["epoch"] == want["epoch"] == 1
    for part in ("state_dict", "current_model_state", "averaging_state"):
        assert want[part].keys() == got[part].keys()
        for key, value in want[part].items():
            assert torch.allclose(got[part][key].float(), value.float(), atol=1e-5), (part, key)
