"""Crashes and resume: atomic checkpoint writes, cut-off checkpoints detected, `resume=<run dir>` continuing
a SIGKILLed run in its own directory and TensorBoard run to the very metrics of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli import TINY_CLI, only_run_dir, run_train
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fruitres.checkpoints.files import AtomicCheckpointIO
from fruitres.errors import CheckpointError
from fruitres.files import check_checkpoint_file
from fruitres.run.resume import ResumePoint, expand_resume_argv, resume_point


def fake_run_dir(root: Path, overrides: list[str]) -> Path:
    run_dir = root / "logs" / "train" / "runs" / "2024-01-01_00-00-00-000000"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    return run_dir


def test_resume_argument_becomes_the_runs_own_overrides_in_its_own_directory(tmp_path: Path) -> None:
    run_dir = fake_run_dir(tmp_path, ["data.data_dir=/data/fruits 360", "model.frozen_stages=3"])
    argv = expand_resume_argv(["train.py", f"resume={run_dir}", "data.num_workers=8"])
    assert argv == [
        "train.py",
        "data.data_dir=/data/fruits 360",
        "model.frozen_stages=3",
        "ckpt_path=last",
        "data.num_workers=8",  # later than the saved overrides: it wins
        f"hydra.run.dir={run_dir}",
    ]
    assert expand_resume_argv(["train.py", "model.frozen_stages=3"]) == ["train.py", "model.frozen_stages=3"]


def test_resume_of_a_folder_that_is_no_run_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no \.hydra/overrides\.yaml there; pass a run directory"):
        expand_resume_argv(["train.py", f"resume={tmp_path}"])


def save_checkpoint(path: Path, step: int) -> None:
    checkpoint = {"global_step": step, "state_dict": {"w": torch.full((4,), float(step))}}
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def resume_config(run_dir: Path, ckpt_path: str = "last"):
    return OmegaConf.create({"ckpt_path": ckpt_path, "paths": {"output_dir": str(run_dir)}})


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_cut_off_checkpoint_is_detected_naming_the_file_and_the_way_out(tmp_path: Path, damage: str) -> None:
    save_checkpoint(tmp_path / "checkpoints" / "epoch_002.ckpt", 2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    save_checkpoint(last, 3)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")

    with pytest.raises(CheckpointError, match=rf"checkpoint {last} is truncated") as error:
        resume_point(resume_config(tmp_path))
    assert "continue from another checkpoint there (epoch_002.ckpt) with ckpt_path=" in str(error.value)
    with pytest.raises(CheckpointError):
        AtomicCheckpointIO().load_checkpoint(last)


def test_last_without_any_checkpoint_starts_over_in_the_same_run(tmp_path: Path) -> None:
    assert resume_point(resume_config(tmp_path)) == ResumePoint(None, 0)


def test_last_picks_the_newer_of_the_epoch_end_and_the_ctrl_c_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "last.ckpt", 4)
    save_checkpoint(folder / "interrupted.ckpt", 6)
    assert resume_point(resume_config(tmp_path)) == ResumePoint(folder / "interrupted.ckpt", 6)
    save_checkpoint(folder / "last.ckpt", 8)
    assert resume_point(resume_config(tmp_path)) == ResumePoint(folder / "last.ckpt", 8)


def test_last_without_last_ckpt_resumes_from_the_newest_other_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "epoch_001.ckpt", 2)
    save_checkpoint(folder / "epoch_002.ckpt", 3)
    assert resume_point(resume_config(tmp_path)) == ResumePoint(folder / "epoch_002.ckpt", 3)


WRITER = """
import sys, torch
from fruitres.checkpoints.files import AtomicCheckpointIO
io = AtomicCheckpointIO()
for version in range(1, 1000):
    checkpoint = {"global_step": version, "weights": torch.full((2**24,), float(version))}
    io.save_checkpoint(checkpoint, sys.argv[1])
"""


def growing_partial(folder: Path) -> Path | None:
    """A checkpoint file being written, with some bytes in it already."""
    for partial in folder.glob(".*.partial"):
        try:
            if partial.stat().st_size:
                return partial
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return None


def test_kill_during_a_checkpoint_write_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    partial = None
    while partial is None and writer.poll() is None:
        partial = growing_partial(target.parent) if target.exists() else None  # a later write, half done
        time.sleep(0.001)
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    assert partial is not None and partial.exists()  # killed mid-write
    check_checkpoint_file(target)
    checkpoint = torch.load(target, weights_only=True)
    assert torch.equal(checkpoint["weights"], torch.full((2**24,), float(checkpoint["global_step"])))
    resume_point(resume_config(tmp_path))
    assert not partial.exists()  # resuming cleans up what the killed write left


# --- real training processes, killed and resumed --------------------------------------------------------

EPOCHS = 2
RUN = [
    *TINY_CLI,
    "data.num_workers=1",  # persistent workers: their iterators are created at other times when resuming
    f"trainer.max_epochs={EPOCHS}",
    "trainer.deterministic=true",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for the run (it drops what a killed run logged past the resume step)."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("uninterrupted")
    status, output = run_train([*RUN, f"data.data_dir={tiny_dataset}"], root)
    assert status == 0, output[-3000:]
    yield only_run_dir(root)
    shutil.rmtree(root, ignore_errors=True)  # a module's runs hold GBs of checkpoints: free the disk


def copy_of_run(run_dir: Path, tmp_path: Path) -> Path:
    """A finished run's folder copied for a test to damage."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def kill_at(point: str) -> str:
    return f"+callbacks.kill={{_target_:faults.SigkillAt,epoch:1,point:{point}}}"


@pytest.mark.slow
def test_run_killed_at_any_point_resumes_to_the_metrics_of_an_uninterrupted_run(
    uninterrupted: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    status, output = run_train([*RUN, f"data.data_dir={tiny_dataset}", kill_at("train")], tmp_path)
    assert status == -signal.SIGKILL, output[-3000:]
    run_dir = only_run_dir(tmp_path)
    # Each resume is killed again at the next point of the same epoch, then the last one finishes.
    for again in ("validation", "checkpoint_write"):
        status, output = run_train([f"resume={run_dir}", "~callbacks.kill", kill_at(again)], tmp_path)
        assert status == -signal.SIGKILL, output[-3000:]
    assert list((run_dir / "checkpoints").glob(".*.partial"))  # the last kill cut a checkpoint write
    status, output = run_train([f"resume={run_dir}", "~callbacks.kill"], tmp_path)
    assert status == 0, output[-3000:]

    assert only_run_dir(tmp_path) == run_dir
    assert [p.name for p in run_dir.iterdir() if p.name == "tensorboard"] == ["tensorboard"]
    resumed, expected = scalars(run_dir), scalars(uninterrupted)
    assert resumed.keys() == expected.keys()
    for tag, series in resumed.items():  # point for point: TensorBoard hides what the killed runs logged
        if tag == "time/wall_s":  # logged once, at the last step; how long it took differs
            assert [step for step, _ in series] == [step for step, _ in expected[tag]], tag
        else:
            assert Counter(series) == Counter(expected[tag]), tag
    final, reference = weights(run_dir), weights(uninterrupted)
    assert all(torch.equal(final[name], reference[name]) for name in reference)
    assert not list((run_dir / "checkpoints").glob(".*.partial"))


@pytest.mark.slow
def test_resume_from_a_cut_off_last_checkpoint_stops_with_one_line(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = copy_of_run(uninterrupted, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    os.truncate(last, last.stat().st_size // 3)
    status, output = run_train([f"resume={run_dir}"], tmp_path)

    assert status == 1, output[-3000:]
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "is truncated or not a checkpoint" in line]
    assert str(last) in line and "continue from another checkpoint there (epoch_" in line


@pytest.mark.slow
def test_resume_without_last_ckpt_continues_from_the_best_epoch_and_keeps_its_files(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = copy_of_run(uninterrupted, tmp_path)
    (run_dir / "checkpoints" / "last.ckpt").unlink()
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    best_step = torch.load(best, weights_only=True)["global_step"]
    status, output = run_train([f"resume={run_dir}", f"trainer.max_epochs={EPOCHS + 1}"], tmp_path)

    assert status == 0, output[-3000:]
    assert f"resuming from {best.name}, the newest checkpoint there" in output
    assert f"Resuming from {best} (step {best_step})" in output
    assert "training from the start" not in output
    before, after = scalars(uninterrupted)["val/acc"], scalars(run_dir)["val/acc"]  # one point per epoch
    kept = [point for point in after if point[0] < best_step]
    assert kept and kept == [point for point in before if point[0] < best_step]  # not purged from step 0
    assert max(step for step, _ in after) > max(step for step, _ in before)  # and one epoch more
