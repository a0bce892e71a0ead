"""The LightningModule and its backbone: heads, weights, parameter groups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from fruitres.models.backbone import WeightsUnavailableError, build_backbone, no_weight_decay_patterns
from fruitres.models.classifier import FruitClassifier, name_matches
from fruitres.models.schedules import cosine_with_warmup, one_cycle


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_head_has_one_output_per_class(arch: str) -> None:
    model = FruitClassifier(num_classes=7, arch=arch)
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7)


def test_weights_path_loads_the_backbone_and_replaces_the_head(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18(num_classes=1000)
    state_file = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), state_file)

    model = build_backbone("resnet18", num_classes=3, weights_path=str(state_file))
    torch.testing.assert_close(model.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(model.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert model.fc.out_features == 3


def test_weights_path_of_another_architecture_is_refused(tmp_path: Path) -> None:
    state_file = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), state_file)
    with pytest.raises(WeightsUnavailableError, match="model.arch"):
        build_backbone("resnet18", num_classes=3, weights_path=str(state_file))


def test_missing_weights_path_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="model.weights_path"):
        build_backbone("resnet18", num_classes=3, weights_path=str(tmp_path / "absent.pth"))


def test_unreachable_weights_say_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(
            variable, "http://127.0.0.1:9"
        )  # the discard port: refused at once, no network used
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(WeightsUnavailableError) as error:
        build_backbone("resnet18", num_classes=3, weights="IMAGENET1K_V1")
    message = str(error.value)
    expected_file = os.path.join(str(tmp_path / "torch-home"), "hub", "checkpoints", "resnet18-f37072fd.pth")
    assert expected_file in message
    assert "model.weights=null" in message and "model.weights_path" in message


def test_unknown_weights_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_backbone("resnet18", num_classes=3, weights="IMAGENET9K")


@pytest.mark.parametrize("arch", ["resnet99", "vgg11"])  # not in torchvision; no stage table
def test_unknown_arch_lists_the_families(arch: str) -> None:
    with pytest.raises(ValueError, match=f"model.arch={arch} is not allowed; use .* families resnet, regnet"):
        build_backbone(arch, num_classes=3)


def test_backbone_learning_rate_is_a_fraction_of_the_head_rate() -> None:
    model = FruitClassifier(
        num_classes=4, backbone_lr_mult=0.1, optimizer={"_target_": "torch.optim.SGD", "lr": 0.5}
    )
    optimizer = model.configure_optimizers()["optimizer"]
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs.pop("head") == lrs.pop("head/no_decay") == 0.5
    assert len(lrs) == 10 and all(lr == pytest.approx(0.05) for lr in lrs.values())  # 5 stages, 2 groups each
    in_optimizer = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    assert in_optimizer == model.parameter_counts()["params/total"]


# --- weight decay exemptions by name ------------------------------------------------------------------
def decayed_and_exempt(model: FruitClassifier) -> tuple[set[str], set[str]]:
    """The names of the parameters the optimizer decays, and of those it leaves alone."""
    optimizer = model.configure_optimizers()["optimizer"]
    names = {id(p): name for name, p in model.net.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    exempt = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    return decayed, exempt


def tiny_timm_vit(**overrides) -> FruitClassifier:
    pytest.importorskip("timm")  # the timm extra
    return FruitClassifier(num_classes=3, arch="timm/vit_tiny_patch16_224", image_size=32, **overrides)


def exempt_by_name(net: torch.nn.Module) -> set[str]:
    patterns = no_weight_decay_patterns(net)
    return {name for name, _ in net.named_parameters() if name_matches(name, patterns)}


def test_timm_vit_position_embedding_and_class_token_are_not_decayed() -> None:
    decayed, exempt = decayed_and_exempt(tiny_timm_vit())

    assert {"pos_embed", "cls_token"} <= exempt and not {"pos_embed", "cls_token"} & decayed
    assert {"norm.weight", "blocks.0.attn.qkv.bias"} <= exempt  # and the one-dimensional ones, as before
    assert {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "head.weight"} <= decayed


def test_decay_norm_and_bias_decays_norms_and_biases_but_not_what_the_model_exempts() -> None:
    decayed, exempt = decayed_and_exempt(tiny_timm_vit(decay_norm_and_bias=True))

    assert exempt == {"pos_embed", "cls_token"}
    assert {"norm.weight", "blocks.0.norm1.bias", "head.bias"} <= decayed


def test_torchvision_vit_and_swin_exempt_what_timm_exempts_in_its_copies() -> None:
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16
    )
    small_swin = dict(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2])
    swin = torchvision.models.SwinTransformer(**small_swin)
    swin_v2 = torchvision.models.SwinTransformer(
        **small_swin,
        block=torchvision.models.swin_transformer.SwinTransformerBlockV2,
        downsample_layer=torchvision.models.swin_transformer.PatchMergingV2,
    )

    assert exempt_by_name(vit) == {"class_token", "encoder.pos_embedding"}
    assert exempt_by_name(swin) == {f"features.{i}.0.attn.relative_position_bias_table" for i in (1, 3)}
    v2_names = ("logit_scale", "cpb_mlp.0.weight", "cpb_mlp.0.bias", "cpb_mlp.2.weight")
    assert exempt_by_name(swin_v2) == {f"features.{i}.0.attn.{name}" for i in (1, 3) for name in v2_names}
    assert exempt_by_name(torchvision.models.resnet18()) == set()


@pytest.mark.parametrize(
    ("name", "pattern", "exempt"),
    [
        ("pos_embed", "pos_embed", True),
        ("pos_embed.proj.weight", "pos_embed", True),  # a module's name covers its parameters
        ("pos_embed.proj.weight", "pos_embed.*", True),  # fnmatch patterns, as timm's XCiT gives
        ("pos_embedding", "pos_embed", False),  # a whole name, not the start of one
        ("blocks.0.pos_embed", "pos_embed", False),  # names are paths from the model, as timm's
    ],
)
def test_the_models_exemptions_match_whole_names_modules_and_patterns(
    name: str, pattern: str, exempt: bool
) -> None:
    assert name_matches(name, [pattern]) is exempt


@pytest.mark.parametrize("total_steps", [1, 2, 4, 50])
def test_one_cycle_schedule_survives_runs_of_any_length(total_steps: int) -> None:
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = one_cycle(optimizer, total_steps)
    rates = []
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert max(rates) <= 0.1 + 1e-12


def test_cosine_schedule_warms_up_then_decays_to_the_floor() -> None:
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, total_steps=100, warmup_fraction=0.1, min_lr_ratio=0.01)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(99):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(0.1)
    assert max(rates) == pytest.approx(1.0) and rates.index(max(rates)) == 9
    assert rates[-1] == pytest.approx(0.01, abs=1e-3)
