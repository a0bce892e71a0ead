"""Gradual unfreezing through the real training job: which stages train when, and surviving a resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from lightning.pytorch import Callback
from omegaconf import DictConfig

from fruitres.callbacks.finetuning import GradualUnfreezing
from fruitres.train import train

LR = 1e-3
BACKBONE_LR_MULT = 0.1


class StateProbe(Callback):
    """Writes, at every training step, what trains, the optimizer groups and lrs, and the BatchNorm modes."""

    def __init__(self, path: str, stop_after_epoch: int | None = None) -> None:
        self.path = Path(path)
        self.steps: list[dict[str, Any]] = []
        self.stop_after_epoch = stop_after_epoch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        optimizer = trainer.optimizers[0]
        stages = {stage.name: [stage] for stage in pl_module.stages}
        self.steps.append(
            {
                "epoch": trainer.current_epoch,
                "trainable": [
                    n for n, ms in stages.items() if any(p.requires_grad for m in ms for p in m.parameters())
                ],
                "bn_training": [
                    n
                    for n, ms in stages.items()
                    if any(b.training for m in ms for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))
                ],
                "lrs": {group["name"]: group["lr"] for group in optimizer.param_groups},
                "params_with_state": len(optimizer.state),
            }
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.write_text(json.dumps(self.steps))
        if trainer.current_epoch == self.stop_after_epoch:
            trainer.should_stop = True  # an interruption at a clean epoch boundary


def gradual_config(
    data_dir: Path, run_dir: Path, unfreeze_epochs: list[int], scheduler: str, extra: list[str] = ()
) -> DictConfig:
    overrides = [
        *tiny_train_overrides(data_dir, run_dir),
        "experiment=resnet18_gradual",
        "model.weights=null",
        f"model/scheduler={scheduler}",
        f"model.optimizer.lr={LR}",
        f"model.backbone_lr_mult={BACKBONE_LR_MULT}",
        f"callbacks.gradual_unfreezing.unfreeze_epochs=[{','.join(map(str, unfreeze_epochs))}]",
        "callbacks.figures=null",
        "callbacks.model_checkpoint=null",  # last.ckpt is enough here
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
        "test=false",
        "+callbacks.probe._target_=test_finetuning.StateProbe",
        f"+callbacks.probe.path={run_dir / 'probe.json'}",
        *extra,
    ]
    return compose_config("train", overrides)


def probe_steps(run_dir: Path) -> list[dict[str, Any]]:
    return json.loads((run_dir / "probe.json").read_text())


def first_step_of_each_epoch(steps: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    firsts: dict[int, dict[str, Any]] = {}
    for step in steps:
        firsts.setdefault(step["epoch"], step)
    return firsts


def test_gradual_unfreezing_trains_each_stage_from_its_configured_epoch(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = gradual_config(tiny_dataset, tmp_path, [1, 2], "onecycle", ["trainer.max_epochs=3"])
    train(cfg)

    epochs = first_step_of_each_epoch(probe_steps(tmp_path))
    assert {e: s["trainable"] for e, s in epochs.items()} == {0: [], 1: ["layer4"], 2: ["layer3", "layer4"]}
    assert {e: list(s["lrs"]) for e, s in epochs.items()} == {
        0: ["head", "head/no_decay"],
        1: ["head", "head/no_decay", "layer4", "layer4/no_decay"],
        2: ["head", "head/no_decay", "layer4", "layer4/no_decay", "layer3", "layer3/no_decay"],
    }
    assert {e: s["bn_training"] for e, s in epochs.items()} == {e: s["trainable"] for e, s in epochs.items()}
    for step in probe_steps(
        tmp_path
    ):  # every unfrozen stage follows the schedule at its fraction of the head
        head_lr = step["lrs"]["head"]
        for name, lr in step["lrs"].items():
            if not name.startswith("head"):
                assert lr == pytest.approx(head_lr * BACKBONE_LR_MULT, rel=1e-6), (step, name)


def test_gradual_unfreezing_with_train_bn_adds_each_stage_without_its_already_training_batchnorm(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = gradual_config(
        tiny_dataset, tmp_path, [1], "cosine", ["trainer.max_epochs=2", "model.train_bn=true"]
    )
    train(cfg)

    epochs = first_step_of_each_epoch(probe_steps(tmp_path))
    batchnorm_groups = [f"{stage}/bn/no_decay" for stage in ("layer4", "layer3", "layer2", "layer1", "stem")]
    assert list(epochs[0]["lrs"]) == ["head", "head/no_decay", *batchnorm_groups]
    assert list(epochs[1]["lrs"]) == ["head", "head/no_decay", *batchnorm_groups, "layer4"]
    all_stages = ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert epochs[0]["bn_training"] == epochs[1]["bn_training"] == all_stages
    for step in probe_steps(tmp_path):  # the BatchNorm groups follow the schedule from the first step
        head_lr = step["lrs"]["head"]
        for name, lr in step["lrs"].items():
            if not name.startswith("head"):
                assert lr == pytest.approx(head_lr * BACKBONE_LR_MULT, rel=1e-6), (step, name)


def test_gradual_unfreezing_rejects_more_epochs_than_frozen_stages(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = gradual_config(tiny_dataset, tmp_path, [1, 2, 3], "cosine", ["model.frozen_stages=2"])
    with pytest.raises(ValueError, match="model.frozen_stages=2"):
        train(cfg)


def test_unfreeze_epochs_must_increase() -> None:
    with pytest.raises(ValueError, match="unfreeze_epochs"):
        GradualUnfreezing(unfreeze_epochs=[3, 1])


@pytest.mark.slow
def test_resumed_run_restores_unfrozen_stages_optimizer_groups_and_schedule(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    schedule = ["trainer.max_epochs=4"]
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    train(gradual_config(tiny_dataset, uninterrupted, [1, 3], "cosine", schedule))
    train(
        gradual_config(
            tiny_dataset, interrupted, [1, 3], "cosine", [*schedule, "+callbacks.probe.stop_after_epoch=1"]
        )
    )
    assert {s["epoch"] for s in probe_steps(interrupted)} == {0, 1}
    resumed = tmp_path / "resumed"
    checkpoint = interrupted / "checkpoints" / "last.ckpt"
    train(gradual_config(tiny_dataset, resumed, [1, 3], "cosine", [*schedule, f"ckpt_path={checkpoint}"]))

    expected = [s for s in probe_steps(uninterrupted) if s["epoch"] >= 2]
    actual = probe_steps(resumed)
    assert [s["epoch"] for s in actual] == [2, 2, 3, 3]
    for got, want in zip(actual, expected, strict=True):
        assert got["trainable"] == want["trainable"]
        assert got["bn_training"] == want["bn_training"]
        assert got["params_with_state"] == want["params_with_state"]
        assert list(got["lrs"]) == list(want["lrs"])
        assert got["lrs"] == pytest.approx(want["lrs"], rel=1e-6)
    assert actual[0]["trainable"] == ["layer4"] and actual[-1]["trainable"] == ["layer3", "layer4"]
