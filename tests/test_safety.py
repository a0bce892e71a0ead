"""Stopping safely: a NaN loss names its step and spares the checkpoints; Ctrl-C saves one and exits."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch
from cli import TINY_CLI, only_run_dir, run_train, start_train
from lightning.pytorch import Callback
from omegaconf import DictConfig, open_dict

from fruitres.callbacks.safety import NonFiniteLossError
from fruitres.files import check_checkpoint_file
from fruitres.train import train

STEPS_PER_EPOCH = 2
SHORT = {
    "max_epochs": 3,
    "limit_train_batches": STEPS_PER_EPOCH,
    "limit_val_batches": 1,
    "limit_test_batches": 1,
}


class CtrlCAt(Callback):
    """Delivers a real SIGINT to this process at the start of a training batch of `epoch`."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            signal.raise_signal(signal.SIGINT)


def shorten(cfg: DictConfig, **callbacks: dict) -> None:
    with open_dict(cfg):
        cfg.trainer.update(SHORT)
        cfg.callbacks.update(callbacks)
        cfg.callbacks.figures = None


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def all_finite(checkpoint: dict) -> bool:
    return all(t.isfinite().all() for t in checkpoint["state_dict"].values() if t.is_floating_point())


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    train_config: DictConfig, tmp_path: Path
) -> None:
    shorten(train_config, poison={"_target_": "faults.PoisonWeightsAt", "epoch": 1})
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(NonFiniteLossError) as error:
        train(train_config)

    message = str(error.value)
    assert f"the training loss is nan at step {STEPS_PER_EPOCH} (epoch 1)" in message
    assert f"the last good checkpoint is {last}" in message
    kept = load(last)
    assert kept["global_step"] == STEPS_PER_EPOCH and all_finite(kept)


def test_ctrl_c_finishes_the_batch_saves_a_checkpoint_and_exits(
    train_config: DictConfig, tmp_path: Path
) -> None:
    shorten(train_config, ctrl_c={"_target_": "test_safety.CtrlCAt", "epoch": 1})
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exit_:  # Lightning's clean exit after a KeyboardInterrupt
            train(train_config)
    finally:
        signal.signal(
            signal.SIGINT, handler
        )  # Lightning ignores SIGINT from then on; give pytest its own back

    assert exit_.value.code == 1
    interrupted = load(tmp_path / "checkpoints" / "interrupted.ckpt")
    assert interrupted["global_step"] == STEPS_PER_EPOCH + 1  # the batch running at Ctrl-C was finished
    assert load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == STEPS_PER_EPOCH


# --- real processes ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_nan_loss_in_a_real_run_is_one_line_and_exit_status_1(tiny_dataset: Path, tmp_path: Path) -> None:
    args = [
        *TINY_CLI,
        f"data.data_dir={tiny_dataset}",
        *(f"trainer.{key}={value}" for key, value in SHORT.items()),
        "+callbacks.poison={_target_:faults.PoisonWeightsAt,epoch:1}",
    ]
    status, output = run_train(args, tmp_path)

    assert status == 1, output[-3000:]
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "the training loss is nan" in line]
    assert f"at step {STEPS_PER_EPOCH} (epoch 1)" in line and "last.ckpt" in line
    assert all_finite(load(only_run_dir(tmp_path) / "checkpoints" / "last.ckpt"))


@pytest.mark.slow
def test_ctrl_c_in_a_real_run_saves_exits_cleanly_and_resumes_from_there(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    epochs = 4
    args = [*TINY_CLI, f"data.data_dir={tiny_dataset}"]
    args += [f"trainer.{key}={value}" for key, value in SHORT.items()] + [f"trainer.max_epochs={epochs}"]
    process = start_train(args, tmp_path)
    runs = tmp_path / "logs" / "train" / "runs"
    while not list(runs.glob("*/checkpoints/last.ckpt")) and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # during the second epoch
    output, _ = process.communicate(timeout=600)

    assert process.returncode == 130, output[-3000:]  # 128 + SIGINT, as the shell reports a Ctrl-C
    assert "Traceback" not in output, output[-3000:]
    run_dir = only_run_dir(tmp_path)
    interrupted = run_dir / "checkpoints" / "interrupted.ckpt"
    check_checkpoint_file(interrupted)
    assert f"resume={run_dir}" in output
    step = load(interrupted)["global_step"]
    assert STEPS_PER_EPOCH <= step < epochs * STEPS_PER_EPOCH

    status, output = run_train([f"resume={run_dir}"], tmp_path)
    assert status == 0, output[-3000:]
    assert f"Resuming from {interrupted} (step {step})" in output
    assert only_run_dir(tmp_path) == run_dir
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == epochs * STEPS_PER_EPOCH
