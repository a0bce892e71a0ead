"""Any backbone: one model of every family through stages, freezing, a training step, the feature cache,
a weights-only checkpoint and an ONNX export (random init, 32-px images)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from omegaconf import open_dict

from fruitres.callbacks.feature_cache import backbone_fingerprint
from fruitres.checkpoints.loading import load_checkpoint
from fruitres.data.images import decode_image
from fruitres.errors import ConfigError
from fruitres.eval import evaluate
from fruitres.export import export
from fruitres.models.backbone import (
    Logits,
    backbone_data_config,
    backbone_features,
    backbone_head,
    backbone_stages,
    build_backbone,
    head_parameter_names,
)
from fruitres.models.classifier import FruitClassifier
from fruitres.predict import predict
from fruitres.run.config_checks import validate_config
from fruitres.train import train

pytest.importorskip("timm")  # the timm extra: `make install` installs it

# One model of each family (the smallest torchvision has) and a timm model; all but the two smallest are
# slow on a 2-core CPU (ResNet-18 has its own tests: test_freezing.py, test_finetuning.py).
slow = pytest.mark.slow
ARCHS = [
    "mobilenet_v3_small",
    "timm/convnext_atto",
    pytest.param("resnet18", marks=slow),
    pytest.param("regnet_x_400mf", marks=slow),
    pytest.param("mobilenet_v2", marks=slow),
    pytest.param("efficientnet_b0", marks=slow),
    pytest.param("resnext50_32x4d", marks=slow),
    pytest.param("efficientnet_v2_s", marks=slow),
    pytest.param("convnext_tiny", marks=slow),
    pytest.param("swin_t", marks=slow),
    pytest.param("vit_b_16", marks=slow),
]
REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32  # below every family's native size: ViT resamples its position embeddings, Swin pads


def frozen_and_trainable(model: FruitClassifier, frozen_stages: int) -> tuple[set[str], set[str]]:
    """Parameter names (in model.net) of the first `frozen_stages` stages, and of everything else."""
    names = {id(p): name for name, p in model.net.named_parameters()}
    frozen = {names[id(p)] for stage in model.stages[:frozen_stages] for p in stage.parameters()}
    return frozen, set(names.values()) - frozen


@pytest.mark.parametrize("arch", ARCHS)
def test_stages_hold_every_backbone_parameter_once_and_the_head_none(arch: str) -> None:
    net = build_backbone(arch, num_classes=3)
    names = {id(p): name for name, p in net.named_parameters()}
    in_stages = [names[id(p)] for stage in backbone_stages(net) for p in stage.parameters()]
    head = head_parameter_names(net)

    assert len(in_stages) == len(set(in_stages))
    assert head and sorted(in_stages + head) == sorted(names.values())
    assert len(backbone_stages(net)) >= 4


@pytest.mark.parametrize("arch", ARCHS)
def test_features_then_head_give_the_networks_own_logits(arch: str) -> None:
    net = build_backbone(arch, num_classes=3).eval()
    size = 224 if arch.startswith("vit_") else IMAGE_SIZE  # torchvision's ViT forward takes only its own size
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = backbone_features(net, images)
        logits = backbone_head(net, features)
        assert features.ndim == 2 and logits.shape == (2, 3)
        torch.testing.assert_close(logits, net(images))


@pytest.mark.parametrize("arch", ARCHS)
def test_freezing_each_number_of_stages_freezes_exactly_those_stages(arch: str) -> None:
    stage_count = len(backbone_stages(build_backbone(arch, num_classes=3)))
    for frozen_stages in range(stage_count + 1):
        model = FruitClassifier(num_classes=3, arch=arch, frozen_stages=frozen_stages).train()
        frozen, trainable = frozen_and_trainable(model, frozen_stages)
        requires_grad = {name for name, p in model.net.named_parameters() if p.requires_grad}

        assert requires_grad == trainable, frozen_stages
        assert (trainable == set(head_parameter_names(model.net))) == (frozen_stages == stage_count)
        assert len(frozen) == sum(len(list(stage.parameters())) for stage in model.stages[:frozen_stages])
        assert model.frozen_prefix() == frozen_stages
        optimized = {id(p) for group in model.param_groups() for p in group["params"]}
        assert optimized == {id(p) for p in model.net.parameters() if p.requires_grad}
        for index, stage in enumerate(model.stages):  # frozen stages: every submodule in eval mode
            assert all(not m.training for m in stage.modules()) == (index < frozen_stages), (
                frozen_stages,
                index,
            )


@pytest.mark.parametrize("arch", ARCHS)
def test_a_training_step_moves_only_the_stages_left_trainable(arch: str) -> None:
    torch.manual_seed(0)
    model = FruitClassifier(num_classes=3, arch=arch, frozen_stages=2, channels_last=True).train()
    before = {name: t.clone() for name, t in model.net.state_dict().items()}
    optimizer = torch.optim.SGD(model.param_groups(), lr=0.1)
    images, labels = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE), torch.tensor([0, 1, 2, 0])

    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()

    frozen, trainable = frozen_and_trainable(model, 2)
    frozen_buffers = {id(b) for stage in model.stages[:2] for b in stage.buffers()}  # BatchNorm statistics
    frozen |= {name for name, b in model.net.named_buffers() if id(b) in frozen_buffers}
    after = model.net.state_dict()
    assert frozen and all(torch.equal(after[name], before[name]) for name in frozen)
    assert any(not torch.equal(after[name], before[name]) for name in trainable)


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_features_fingerprint_leaves_the_head_out(arch: str) -> None:
    net = build_backbone(arch, num_classes=3)
    fingerprint = backbone_fingerprint(net)
    head = dict(net.named_parameters())[head_parameter_names(net)[0]]
    with torch.no_grad():
        head.add_(1.0)
        assert backbone_fingerprint(net) == fingerprint
        next(backbone_stages(net)[-1].parameters()).add_(1.0)
        assert backbone_fingerprint(net) != fingerprint


@pytest.mark.parametrize("arch", ARCHS)
def test_linear_probe_checkpoint_loads_weights_only_and_exports_to_onnx_within_1e_4(
    arch: str, tiny_dataset: Path, tmp_path: Path
) -> None:
    """A real linear-probe fit on cached features, its checkpoint, and the exported model's logits."""
    run_dir = tmp_path / "run"
    overrides = [
        *tiny_train_overrides(tiny_dataset, run_dir),
        f"model.arch={arch}",
        "data.augment=null",  # the features are cached only without augmentation
        "callbacks.figures=null",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
        "++trainer.limit_test_batches=1",
    ]
    cfg = compose_config("train", overrides)
    with open_dict(cfg):
        cfg.model.frozen_stages = len(backbone_stages(build_backbone(arch, num_classes=2)))
    validate_config(cfg)
    train(cfg)
    assert list(Path(cfg.data.cache_dir).glob("features-*.npy"))  # the probe trained on cached features

    (checkpoint_file,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    checkpoint = load_checkpoint(checkpoint_file)  # weights_only=True: what eval, predict and export do
    assert checkpoint.model.hparams.arch == arch
    model_file = export(
        compose_config(
            "export", [f"ckpt_path={checkpoint_file}", "format=onnx", f"paths.output_dir={tmp_path}"]
        )
    )
    meta = json.loads(model_file.with_suffix(".json").read_text())
    images = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    (logits,) = session.run([meta["output"]["name"]], {meta["input"]["name"]: images.numpy()})
    with torch.no_grad():
        expected = checkpoint.model(images)
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", [pytest.param("vit_b_16", marks=slow), "timm/convnext_atto"])
def test_torchscript_traces_the_logits_at_the_training_image_size(arch: str) -> None:
    net = build_backbone(arch, num_classes=3).eval()
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        traced = torch.jit.trace(Logits(net), images)
        torch.testing.assert_close(traced(images), Logits(net)(images))


@slow
def test_timm_data_config_preprocesses_training_the_checkpoint_eval_and_predict(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """timm/test_vit3's pretrained config: mean and std 0.5, bicubic resizing, a fixed input size (160),
    built for the configured 24 px; the 32-px images are resized, so the filter shows in the pixels."""
    run_dir, size = tmp_path / "run", 24
    overrides = [
        *tiny_train_overrides(tiny_dataset, run_dir),
        "model.arch=timm/test_vit3",
        f"data.image_size={size}",
        "callbacks.figures=null",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
    ]
    cfg = compose_config("train", overrides)
    assert cfg.data.mean is None and cfg.data.interpolation is None  # the backbone's own, resolved by the run
    validate_config(cfg)
    trained = train(cfg)

    (checkpoint_file,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    saved = torch.load(checkpoint_file, map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    assert (saved["mean"], saved["std"]) == ([0.5] * 3, [0.5] * 3)
    assert (saved["interpolation"], saved["image_size"]) == ("bicubic", size)

    evaluated = evaluate(
        compose_config(
            "eval",
            [
                f"ckpt_path={checkpoint_file}",
                f"paths.root_dir={tmp_path / 'eval'}",
                f"paths.output_dir={tmp_path / 'eval'}",
                "trainer.accelerator=cpu",
                "data.num_workers=0",
            ],
        )
    )
    assert evaluated["test/loss"] == pytest.approx(trained["test/loss"], abs=1e-5)  # same inputs as training

    image = sorted((tiny_dataset / "Test").glob("*/*.jpg"))[0]
    (predicted,) = predict(
        compose_config(
            "predict",
            [
                f"ckpt_path={checkpoint_file}",
                f"inputs={image}",
                f"paths.output_dir={tmp_path}",
                "trainer=cpu",
                "trainer.precision=32-true",  # the float32 reference below; bf16 would round its output
            ],
        )
    )
    model = load_checkpoint(checkpoint_file).model
    pixels = (
        torch.from_numpy(decode_image(image, size, "bicubic").copy()).permute(2, 0, 1)[None].float() / 255
    )
    with torch.no_grad():
        expected = model((pixels - 0.5) / 0.5).softmax(dim=1)[0].sort(descending=True).values
    torch.testing.assert_close(torch.tensor(predicted.probabilities), expected, atol=1e-5, rtol=1e-5)


def test_torchvision_weights_give_the_data_config_of_their_transforms() -> None:
    swag = backbone_data_config("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")
    assert (swag.image_size, swag.interpolation) == (384, "bicubic")
    assert backbone_data_config("vit_b_16").image_size == 224  # DEFAULT: IMAGENET1K_V1
    assert backbone_data_config("resnet18", "IMAGENET1K_V1").interpolation == "bilinear"
    with pytest.raises(ConfigError, match="model.arch=timm/resnet18.no_such_tag is not allowed"):
        backbone_data_config("timm/resnet18.no_such_tag")


def test_frozen_stages_out_of_range_gives_the_familys_range_and_stages(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = compose_config(
        "train",
        [
            *tiny_train_overrides(tiny_dataset, tmp_path),
            "model.arch=mobilenet_v3_small",
            "model.frozen_stages=6",
        ],
    )
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert str(error.value) == (
        "model.frozen_stages=6 is not allowed; use an integer 0..5 (mobilenet_v3_small's stages: stem, "
        "stage1, stage2, stage3, stage4; 0 = train everything, 5 = only the head)"
    )
    with pytest.raises(
        ConfigError, match=r"use an integer 0\.\.5 \(timm/convnext_atto's stages: stem, stage1, "
    ):
        FruitClassifier(num_classes=3, arch="timm/convnext_atto", frozen_stages=6)


def test_timm_weights_name_and_unknown_timm_model_are_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    base = tiny_train_overrides(tiny_dataset, tmp_path)
    with pytest.raises(
        ConfigError,
        match="model.weights=IMAGENET1K_V1 is not allowed for timm/resnet18; use null or one of DEFAULT",
    ):
        validate_config(
            compose_config("train", [*base, "model.arch=timm/resnet18", "model.weights=IMAGENET1K_V1"])
        )
    with pytest.raises(ConfigError, match="model.arch=timm/no_such_net is not allowed"):
        FruitClassifier(num_classes=3, arch="timm/no_such_net")


def test_timm_size_its_windows_do_not_divide_is_one_line_naming_sizes_that_fit() -> None:
    """MaxViT's windows must divide its feature maps: at 100 px timm would fail at the first forward."""
    with pytest.raises(ConfigError) as error:
        FruitClassifier(num_classes=3, arch="timm/maxvit_pico_rw_256", image_size=100)
    assert str(error.value) == (
        "data.image_size=100 does not fit timm/maxvit_pico_rw_256 (height (25) must be divisible by "
        "window (3)); use a size it takes, e.g. 96 or 128, or data.image_size=null for its own 256"
    )
    model = FruitClassifier(num_classes=3, arch="timm/maxvit_pico_rw_256", image_size=64)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)


def test_timm_model_without_the_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` meets without the extra
    with pytest.raises(ConfigError) as error:
        FruitClassifier(num_classes=3, arch="timm/convnext_atto")
    assert str(error.value) == 'model.arch=timm/... needs the timm extra: pip install -e ".[timm]"'


def test_gradual_unfreezing_trains_the_top_stage_of_another_family(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    overrides = [
        *tiny_train_overrides(tiny_dataset, tmp_path),
        "experiment=resnet18_gradual",
        "model.weights=null",
        "model.arch=timm/convnext_atto",
        "model.frozen_stages=5",
        "callbacks.gradual_unfreezing.unfreeze_epochs=[1]",
        "callbacks.linear_probe_cache=null",
        "callbacks.figures=null",
        "callbacks.model_checkpoint=null",
        "trainer.max_epochs=2",
        "++trainer.limit_train_batches=1",
        "++trainer.limit_val_batches=1",
        "test=false",
    ]
    initial = build_backbone("timm/convnext_atto", num_classes=5).state_dict()
    torch.save(initial, tmp_path / "initial.pth")
    train(compose_config("train", [*overrides, f"model.weights_path={tmp_path / 'initial.pth'}"]))

    trained = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = {k.removeprefix("net."): v for k, v in trained["state_dict"].items() if k.startswith("net.")}
    names = [stage.name for stage in FruitClassifier(num_classes=5, arch="timm/convnext_atto").stages]
    groups = {group["name"] for group in trained["optimizer_states"][0]["param_groups"]}
    assert names[-1] in groups and names[-2] not in groups  # stage4 joined the optimizer, stage3 did not
    assert not torch.equal(
        state["stages.3.blocks.0.conv_dw.weight"], initial["stages.3.blocks.0.conv_dw.weight"]
    )
    assert torch.equal(state["stages.2.blocks.0.conv_dw.weight"], initial["stages.2.blocks.0.conv_dw.weight"])


@slow
def test_make_archs_writes_one_row_per_arch_with_its_measurements(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "archs"
    command = [
        sys.executable, "benchmarks/archs.py", "--data-dir", str(tiny_dataset), "--seconds", "5",
        "--archs", "mobilenet_v3_small", "timm/convnext_atto", "--out", str(out),
        f"data.image_size={IMAGE_SIZE}", "data.batch_size=16", "callbacks.progress_bar=null",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((out / "archs.json").read_text())
    assert [row["arch"] for row in report["rows"]] == ["mobilenet_v3_small", "timm/convnext_atto"]
    for row in report["rows"]:
        assert row["params_m"] > 1 and row["train_img_s"] > 0 and row["eval_img_s"] > 0
        assert row["images_trained"] > 0 and 0 <= row["test_acc"] <= 1
    assert "| timm/convnext_atto |" in (out / "archs.md").read_text()
