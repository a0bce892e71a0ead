"""Training recipes: weight decay groups, layer-wise lr decay, Mixup/CutMix, weight averaging, TTA,
the learning-rate finder and schedules that fit a time budget."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from cli import REPO, TINY_CLI
from conftest import compose_config, tiny_train_overrides
from lightning.pytorch import Callback
from omegaconf import DictConfig

from fruitres.data.mix import MixupCutmix
from fruitres.models.classifier import FruitClassifier
from fruitres.models.schedules import cosine_with_warmup, one_cycle
from fruitres.run.precision_probe import CPU_CANDIDATES
from fruitres.run_folders import read_record
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
    return recipe_config(data_dir, run_dir, [*AVERAGING["ema"], "data.augment=null", *extra])


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


AVERAGING = {
    "ema": ["callbacks=[default,ema]", "callbacks.ema.decay=0.9"],
    "swa": ["callbacks=[default,swa]", "callbacks.swa.start_epoch=0"],  # the mean of 2 epoch ends
}


@pytest.mark.parametrize("averaging", ["ema", "swa"])
def test_averaged_weights_differ_from_the_raw_ones_and_are_validated_and_checkpointed(
    tiny_dataset: Path, tmp_path: Path, averaging: str
) -> None:
    probe = tmp_path / "validated.pt"
    overrides = [
        *AVERAGING[averaging],
        "data.augment=null",
        "+callbacks.probe._target_=test_recipes.ValidatedWeights",
        f"+callbacks.probe.path={probe}",
    ]
    train(recipe_config(tiny_dataset, tmp_path, overrides))

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


# --- test-time augmentation ---------------------------------------------------------------------------
def test_tta_on_a_flip_invariant_input_equals_no_tta() -> None:
    torch.manual_seed(0)
    model = FruitClassifier(num_classes=5).eval()
    half = torch.rand(2, 3, 32, 16)
    symmetric, lopsided = torch.cat([half, half.flip(-1)], dim=-1), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        plain = {
            name: model.classify(x).softmax(dim=1) for name, x in [("sym", symmetric), ("lop", lopsided)]
        }
        model.tta = "flip"
        assert torch.allclose(model.classify(symmetric).softmax(dim=1), plain["sym"], atol=1e-6)
        assert not torch.allclose(model.classify(lopsided).softmax(dim=1), plain["lop"], atol=1e-6)
        averaged = (model(lopsided).softmax(dim=1) + model(lopsided.flip(-1)).softmax(dim=1)) / 2
        assert torch.allclose(model.predict_step(lopsided, 0), averaged, atol=1e-6)


def test_unknown_tta_is_one_line_naming_the_choices() -> None:
    from fruitres.errors import ConfigError
    from fruitres.models.tta import check_tta

    with pytest.raises(ConfigError, match="tta=rotate .*flip, flips"):
        check_tta("rotate")


# --- learning-rate finder -----------------------------------------------------------------------------
def test_group_ratios_are_kept_while_the_finder_steps_the_schedule() -> None:
    from fruitres.lr_find import group_ratios_kept

    model = FruitClassifier(num_classes=4, optimizer=SGD, backbone_lr_mult=0.1, layer_lr_decay=0.5)
    optimizer = torch.optim.SGD(model.param_groups(), lr=1.0)
    for group in optimizer.param_groups:  # what Lightning's finder does: one rate for every group
        group["lr"] = group["initial_lr"] = 1e-4
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 10.0**step)
    with group_ratios_kept(model):
        optimizer.step()
        model.lr_scheduler_step(scheduler, None)
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs["head"] == pytest.approx(1e-3)
    assert lrs["layer4"] == pytest.approx(1e-3 * 0.1 * 0.5) and lrs["stem"] == pytest.approx(
        1e-3 * 0.1 * 0.5**5
    )
    assert "lr_scheduler_step" not in vars(model)  # the module's own hook is back


def lr_find_overrides(data_dir: Path, run_dir: Path) -> list[str]:
    return [*tiny_train_overrides(data_dir, run_dir), "lr_find.num_training=20", "callbacks.figures=null"]


def test_lr_find_writes_its_plot_and_a_finite_suggestion(tiny_dataset: Path, tmp_path: Path) -> None:
    from fruitres.lr_find import lr_find

    metrics = lr_find(compose_config("lr_find", lr_find_overrides(tiny_dataset, tmp_path)))
    assert (tmp_path / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads((tmp_path / "lr_find.json").read_text())
    assert math.isfinite(result["suggestion"]) and 1e-6 <= result["suggestion"] <= 1.0
    assert metrics["lr_find/suggestion"] == result["suggestion"] and len(result["lr"]) == 20


@pytest.mark.slow
def test_training_with_tune_lr_find_trains_at_the_suggestion(tiny_dataset: Path, tmp_path: Path) -> None:
    overrides = [*lr_find_overrides(tiny_dataset, tmp_path), "tune.lr_find=true", "test=false"]
    train(
        compose_config(
            "train", [*overrides, "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1"]
        )
    )
    suggestion = json.loads((tmp_path / "lr_find.json").read_text())["suggestion"]
    checkpoint = last_checkpoint(tmp_path)
    assert checkpoint["hyper_parameters"]["optimizer"]["lr"] == suggestion
    head = next(g for g in checkpoint["optimizer_states"][0]["param_groups"] if g["name"] == "head")
    assert head["max_lr"] == pytest.approx(suggestion)  # one-cycle peaks at the suggested rate


# --- schedules that fit a time budget -----------------------------------------------------------------
class SlowSteps(Callback):
    """An artificially slow machine: every training step takes `seconds` longer; records each step's lr."""

    def __init__(self, path: str, seconds: float) -> None:
        self.path, self.seconds = Path(path), seconds
        self.steps: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        time.sleep(self.seconds)
        self.steps.append({"epoch": trainer.current_epoch, "lr": trainer.optimizers[0].param_groups[0]["lr"]})
        self.path.write_text(json.dumps(self.steps))


def test_schedule_fitted_to_max_time_ends_when_the_time_does(tiny_dataset: Path, tmp_path: Path) -> None:
    probe = tmp_path / "steps.json"
    cfg = recipe_config(
        tiny_dataset,
        tmp_path,
        [
            "model/scheduler=onecycle",
            "model.scheduler.fit_to_max_time=true",
            "model.optimizer.lr=0.01",
            "trainer.max_epochs=100",
            "++trainer.max_time=00:00:00:10",
            "++trainer.limit_train_batches=2",
            "callbacks.time_budget=null",  # the clock alone (the plan: tests/test_budget_plan.py)
            "data.augment=null",
            "+callbacks.slow._target_=test_recipes.SlowSteps",
            f"+callbacks.slow.path={probe}",
            "+callbacks.slow.seconds=0.25",
        ],
    )
    train(cfg)
    steps = json.loads(probe.read_text())
    assert len(steps) < 50  # fewer than the 50 warm-up steps of 200 (max_epochs): by steps, still warming up
    lrs = [step["lr"] for step in steps]
    assert lrs[-1] < max(lrs), steps  # falling already: by the clock the one-cycle is past its peak
    assert last_checkpoint(tmp_path)["epoch"] == steps[-1]["epoch"], steps  # the cut epoch was checkpointed


@pytest.mark.parametrize("schedule", [one_cycle, cosine_with_warmup])
def test_fitted_schedule_reaches_its_end_when_the_clock_does(schedule) -> None:
    clock = {"fraction": 0.0}
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = schedule(optimizer, 1000, fit_to_max_time=True, time_fraction=lambda: clock["fraction"])
    rates = []
    for step in range(1, 21):  # 20 steps of 1000 fill the budget: a machine 50 times too slow
        clock["fraction"] = step / 20
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert max(rates) == pytest.approx(1.0, rel=0.05) and rates[-1] < 0.011
    unfitted = schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 1000)
    for _ in range(20):
        unfitted.optimizer.step()
        unfitted.step()
    assert unfitted.get_last_lr()[0] > 0.05  # by steps alone, 2% into the schedule


@pytest.mark.slow
def test_make_full_trains_the_mobilenet_recipe_within_its_budget_and_prints_the_result(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    command = [
        "make", "--no-print-directory", "full", f"PY={sys.executable}", "STAMP=", f"DATA={tiny_dataset}",
        "BUDGET=00:00:00:20", "ARGS=" + " ".join(TINY_CLI),
    ]  # fmt: skip
    env = {**os.environ, "FRUITRES_ROOT": str(tmp_path)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    record = read_record(run_dir)
    overrides = set(record["overrides"])
    assert {"experiment=mobilenet_v3_small_scratch", "trainer.max_time=00:00:00:20"} <= overrides
    assert record["status"] == "ok"
    assert record["provenance"]["hardware"]["precision"] in CPU_CANDIDATES  # `fastest`, settled
    assert "trainer.precision=fastest: " in output
    assert re.search(r"Result: [\d.]+ epochs in [\d.]+ min; test accuracy with tta=flips 0\.\d+ \[", output)
