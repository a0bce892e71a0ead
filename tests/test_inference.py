"""Loading a checkpoint for eval, predict and export: weights only, nothing downloaded, no code run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import TrainedSweep

from fruitres.checkpoints.loading import load_checkpoint
from fruitres.errors import CheckpointError


class _RunsCodeWhenUnpickled:
    """What a malicious checkpoint smuggles in: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_pickled_code_is_refused_without_running_it(
    trained_sweep: TrainedSweep, tmp_path: Path
) -> None:
    marker = tmp_path / "code-was-run"
    checkpoint = torch.load(trained_sweep.checkpoint, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = _RunsCodeWhenUnpickled(marker)
    malicious = tmp_path / "malicious.ckpt"
    torch.save(checkpoint, malicious)

    with pytest.raises(CheckpointError, match="weights only"):
        load_checkpoint(malicious)
    assert not marker.exists()


def test_a_checkpoint_of_a_pretrained_run_loads_its_weights_without_fetching_the_pretrained_ones(
    trained_sweep: TrainedSweep, tiny_dataset: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(trained_sweep.checkpoint, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"] |= {"weights": "IMAGENET1K_V1", "weights_path": str(tmp_path / "gone.pth")}
    moved = tmp_path / "pretrained-run.ckpt"
    torch.save(checkpoint, moved)

    loaded = load_checkpoint(moved)

    assert loaded.class_names == sorted(p.name for p in (tiny_dataset / "Training").iterdir())
    assert loaded.image_size == 32 and not loaded.model.training
    for name, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][name])


def test_a_file_that_is_not_a_checkpoint_gets_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match="nope.ckpt"):
        load_checkpoint(missing)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a torch file")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="lacks hyper_parameters"):
        load_checkpoint(plain)
