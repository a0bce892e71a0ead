"""`model.frozen_stages`: what is frozen stays frozen — weights, BatchNorm statistics, optimizer, autograd —
and with `model.train_bn` all of it but the BatchNorm layers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from conftest import set_up_datamodule
from omegaconf import DictConfig, open_dict

from fruitres.callbacks.feature_cache import LinearProbeFeatureCache
from fruitres.models.classifier import FruitClassifier
from fruitres.train import train

# torchvision's ResNet-18 stages (their modules), their parameters, and those of a 5-class head.
RESNET_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
RESNET18_STAGE_PARAMS = (9_536, 147_968, 525_568, 2_099_712, 8_393_728)
HEAD_PARAMS_5_CLASSES = 512 * 5 + 5


def stage_state(state: dict[str, torch.Tensor], stage: int) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (BatchNorm running statistics included) of one stage."""
    prefixes = tuple(f"net.{name}." for name in RESNET_STAGES[stage])
    return {key: value for key, value in state.items() if key.startswith(prefixes)}


@pytest.mark.parametrize("frozen_stages", range(6))
def test_trainable_parameter_count_matches_the_stage_arithmetic(frozen_stages: int) -> None:
    model = FruitClassifier(num_classes=5, frozen_stages=frozen_stages)

    frozen = sum(RESNET18_STAGE_PARAMS[:frozen_stages])
    trainable = sum(RESNET18_STAGE_PARAMS[frozen_stages:]) + HEAD_PARAMS_5_CLASSES
    assert model.parameter_counts() == {
        "params/total": frozen + trainable,
        "params/trainable": trainable,
        "params/frozen": frozen,
    }
    optimizer = model.configure_optimizers()["optimizer"]
    in_optimizer = [p for group in optimizer.param_groups for p in group["params"]]
    assert sum(p.numel() for p in in_optimizer) == trainable
    assert all(p.requires_grad for p in in_optimizer)


def test_no_autograd_graph_is_built_through_the_frozen_prefix() -> None:
    model = FruitClassifier(num_classes=5, frozen_stages=3).train()
    builds_graph: dict[str, bool] = {}
    for name in ("maxpool", "layer1", "layer2", "layer3", "layer4"):
        getattr(model.net, name).register_forward_hook(
            lambda module, inputs, output, name=name: builds_graph.__setitem__(name, output.requires_grad)
        )
    model(torch.randn(2, 3, 32, 32)).sum().backward()

    assert builds_graph == {
        "maxpool": False,
        "layer1": False,
        "layer2": False,
        "layer3": True,
        "layer4": True,
    }
    assert all(
        p.grad is None
        for name in ("conv1", "bn1", "layer1", "layer2")
        for p in getattr(model.net, name).parameters()
    )
    assert all(p.grad is not None for p in model.net.layer3.parameters())


def test_frozen_batchnorm_layers_stay_in_eval_mode_through_model_train() -> None:
    model = FruitClassifier(num_classes=5, frozen_stages=2).train()
    batchnorms = {
        name: module.training
        for name, module in model.net.named_modules()
        if isinstance(module, torch.nn.BatchNorm2d)
    }
    assert not any(training for name, training in batchnorms.items() if name.startswith(("bn1", "layer1.")))
    assert all(training for name, training in batchnorms.items() if name.startswith(("layer2.", "layer3.")))


def train_with_three_frozen_stages(
    train_config: DictConfig, tmp_path: Path, train_bn: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The state before and after a short real fit of a ResNet-18 whose first 3 stages are frozen."""
    pretrained = torchvision.models.resnet18()
    for module in pretrained.modules():  # statistics unlike those of the data, so any update would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    weights_file = tmp_path / "pretrained.pth"
    torch.save(pretrained.state_dict(), weights_file)
    with open_dict(train_config):
        train_config.model.weights_path = str(weights_file)
        train_config.model.frozen_stages = 3
        train_config.model.train_bn = train_bn
        train_config.trainer.limit_train_batches = 2
        train_config.trainer.limit_val_batches = 1
        train_config.callbacks.model_checkpoint = None  # checkpoints/last.ckpt is enough
        train_config.callbacks.figures = None
        train_config.test = False
    initial = FruitClassifier(num_classes=5, weights_path=str(weights_file)).state_dict()

    train(train_config)

    trained = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return initial, trained["state_dict"]


def batchnorm_prefixes(net: torch.nn.Module) -> tuple[str, ...]:
    """The state-dict prefixes (`net.<path>.`) of the network's BatchNorm layers."""
    return tuple(f"net.{name}." for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_frozen_weights_and_batchnorm_statistics_do_not_change_during_training(
    train_config: DictConfig, tmp_path: Path
) -> None:
    initial, trained = train_with_three_frozen_stages(train_config, tmp_path, train_bn=False)

    for stage in range(3):
        before, after = stage_state(initial, stage), stage_state(trained, stage)
        assert before.keys() == after.keys() and before
        for key in before:
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(trained["net.layer3.0.conv1.weight"], initial["net.layer3.0.conv1.weight"])
    assert not torch.equal(trained["net.layer3.0.bn1.running_mean"], initial["net.layer3.0.bn1.running_mean"])


def test_train_bn_trains_the_batchnorm_of_frozen_stages_and_nothing_else_of_them(
    train_config: DictConfig, tmp_path: Path
) -> None:
    initial, trained = train_with_three_frozen_stages(train_config, tmp_path, train_bn=True)

    batchnorms = batchnorm_prefixes(torchvision.models.resnet18())
    for stage in range(3):
        before, after = stage_state(initial, stage), stage_state(trained, stage)
        assert before.keys() == after.keys() and any(key.startswith(batchnorms) for key in before)
        for key in before:  # BatchNorm weights, biases and running statistics move; convolutions do not
            assert torch.equal(after[key], before[key]) != key.startswith(batchnorms), key


def test_train_bn_puts_frozen_batchnorm_in_train_mode_and_in_no_decay_groups_of_its_own() -> None:
    model = FruitClassifier(num_classes=5, frozen_stages=3, train_bn=True).train()
    frozen = [module for stage in model.stages[:3] for module in stage.modules()]
    batchnorm = [module for module in frozen if isinstance(module, torch.nn.BatchNorm2d)]

    assert model.frozen_prefix() == 3
    assert all(module.training == (module in batchnorm) for module in frozen)
    assert all(p.requires_grad == (m in batchnorm) for m in frozen for p in m.parameters(recurse=False))
    groups = model.configure_optimizers()["optimizer"].param_groups
    bn_groups = [group for group in groups if "/bn" in group["name"]]
    assert [group["name"] for group in bn_groups] == [
        "layer2/bn/no_decay",
        "layer1/bn/no_decay",
        "stem/bn/no_decay",
    ]
    assert all(group["weight_decay"] == 0 for group in bn_groups)
    in_bn_groups = {id(p) for group in bn_groups for p in group["params"]}
    assert in_bn_groups == {id(p) for module in batchnorm for p in module.parameters()}


def test_linear_probe_with_train_bn_runs_the_live_backbone(tiny_dataset: Path, tmp_path: Path) -> None:
    datamodule = set_up_datamodule(tiny_dataset, tmp_path)
    trainer = L.Trainer(
        callbacks=[LinearProbeFeatureCache()],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
    )
    model = FruitClassifier(num_classes=5, frozen_stages=5, train_bn=True)
    running_mean = model.net.bn1.running_mean.clone()

    trainer.fit(model, datamodule=datamodule)

    assert not list((tmp_path / "cache").glob("features-*.npy"))
    assert not torch.equal(model.net.bn1.running_mean, running_mean)


def test_frozen_stages_out_of_range_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"model.frozen_stages=6"):
        FruitClassifier(num_classes=5, frozen_stages=6)
