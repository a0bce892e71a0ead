"""Hostile input that used to lose work or give silently wrong results: sweeps relaunched into their folder
with other values, runs started over a finished run, file names that are not UTF-8, 16-bit images, sweeps
whose jobs all fail. Real files and real processes throughout."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli import TINY_CLI
from conftest import TrainedSweep, compose_config, set_up_datamodule, tiny_train_overrides
from omegaconf import OmegaConf, open_dict
from PIL import Image

from fruitres.data.cache import build_image_cache
from fruitres.data.check import check_dataset
from fruitres.data.folders import DatasetLayoutError
from fruitres.data.images import decode_image
from fruitres.reports.sweep_report import CSV_FILE
from fruitres.run.resume import expand_resume_argv
from fruitres.train import train

REPO = Path(__file__).resolve().parents[1]
NOT_UTF8 = b"caf\xe9"  # "café" in cp1252, as a Windows archive stores it


def run_module(module: str, args: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRUITRES_ROOT": str(root)}
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="backslashreplace",
        timeout=600,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved_overrides(job_dir: Path) -> list[str]:
    return [str(item) for item in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]


# --- sweeps ---------------------------------------------------------------------------------------------

SWEEP = [*TINY_CLI, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


@pytest.mark.slow
def test_sweep_relaunched_with_other_values_never_overwrites_a_job_of_other_overrides(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    common = [*SWEEP, f"data.data_dir={tiny_dataset}", f"hydra.sweep.dir={sweep_dir}"]
    first = run_module("fruitres.train", ["-m", *common, "model.frozen_stages=1,9"], tmp_path)
    assert first.returncode == 1  # job 1 failed: the sweep says so in its exit status and one line
    assert first.stderr.splitlines()[-1].startswith("1 of 2 jobs of this sweep failed (job 1: ConfigError")
    (checkpoint,) = (sweep_dir / "0" / "checkpoints").glob("epoch_*.ckpt")
    before = digest(checkpoint), sorted((sweep_dir / "0" / "tensorboard").rglob("events.*"))

    second = run_module("fruitres.train", ["-m", *common, "model.frozen_stages=0,1"], tmp_path)

    assert second.returncode == 0, second.stderr[-3000:]
    assert (digest(checkpoint), sorted((sweep_dir / "0" / "tensorboard").rglob("events.*"))) == before
    jobs = {path.name: saved_overrides(path)[-1] for path in sweep_dir.iterdir() if path.is_dir()}
    assert jobs == {"0": "model.frozen_stages=1", "1": "model.frozen_stages=9", "2": "model.frozen_stages=0"}
    assert f"Job {sweep_dir / '0'} already finished" in second.stdout + second.stderr  # the same job, reused
    assert (sweep_dir / CSV_FILE).read_text().count("\n") == 1 + 3  # one table of every job there


def test_sweep_whose_every_job_fails_exits_1_with_one_line_per_job_and_its_table(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "optuna"
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "data.val_fraction=0"]
    result = run_module(
        "fruitres.train",
        [*SWEEP, *args, f"data.data_dir={tiny_dataset}", f"hydra.sweep.dir={sweep_dir}"],
        tmp_path,
    )

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "No trials are completed" not in output
    assert output.count("failed, the sweep goes on: ConfigError: data.val_fraction=0 is not allowed") == 2
    assert result.stderr.splitlines()[-1].startswith("2 of 2 jobs of this sweep failed (job 0: ConfigError")
    table = (sweep_dir / CSV_FILE).read_text()
    assert table.count("failed") == 2


def test_fresh_run_into_the_folder_of_a_finished_run_stops_before_writing(
    trained_sweep: TrainedSweep,
) -> None:
    run_dir = trained_sweep.run_dir
    with pytest.raises(SystemExit, match=rf"hydra.run.dir={run_dir} already holds a run .* resume={run_dir}"):
        expand_resume_argv(["train.py", "model.frozen_stages=2", f"hydra.run.dir={run_dir}"])
    continued = expand_resume_argv(["train.py", f"hydra.run.dir={run_dir}", "ckpt_path=last"])
    assert continued[1:] == [f"hydra.run.dir={run_dir}", "ckpt_path=last"]


# --- file names that are not UTF-8 ---------------------------------------------------------------------


def rename_to_bytes(path: Path, name: bytes) -> Path:
    target = os.fsencode(path.parent) + b"/" + name
    os.rename(os.fsencode(path), target)
    return Path(os.fsdecode(target))


@pytest.fixture
def windows_named_files(tiny_dataset: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """A copy of the tiny dataset where one image per split and class has a cp1252 (not UTF-8) name."""
    root = tmp_path / "fruits"
    shutil.copytree(tiny_dataset, root)
    renamed = [
        rename_to_bytes(sorted(class_dir.iterdir())[0], NOT_UTF8 + b"_%d.jpg" % index)
        for split in ("Training", "Test")
        for index, class_dir in enumerate(sorted((root / split).iterdir()))
    ]
    return root, renamed


def test_files_named_in_another_encoding_train_like_any_other(windows_named_files, tmp_path: Path) -> None:
    root, _ = windows_named_files
    report = check_dataset(root)
    assert report["trainable"] and not report["unreadable"]
    datamodule = set_up_datamodule(root, tmp_path)
    assert len(datamodule.datasets["train"]) + len(datamodule.datasets["val"]) == 5 * 40  # none skipped
    cfg = compose_config("train", tiny_train_overrides(root, tmp_path / "run"))
    with open_dict(cfg):
        cfg.trainer.fast_dev_run = True
    assert "test/acc" in train(cfg)


def test_predict_writes_every_row_of_files_named_in_another_encoding(
    windows_named_files, trained_sweep: TrainedSweep, tmp_path: Path
) -> None:
    root, renamed = windows_named_files
    test_files = [path for path in renamed if "Test" in path.parts]
    args = [f"ckpt_path={trained_sweep.checkpoint}", f"inputs={root / 'Test'}", "data.num_workers=0"]
    result = run_module("fruitres.predict", args, tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "predict" / "runs").iterdir()
    rows = (run_dir / "predictions.csv").read_bytes().splitlines()
    assert len(rows) == 1 + 5 * 10  # the header and every file, whole
    for path in test_files:  # the name as its own bytes: the path column opens the file
        (row,) = [row for row in rows if os.fsencode(path) in row]
        assert row.split(b",")[1] == b""  # no error


def test_class_folder_named_in_another_encoding_is_refused_naming_the_folder_and_the_fix(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    root = tmp_path / "fruits"
    shutil.copytree(tiny_dataset, root)
    rename_to_bytes(sorted((root / "Training").iterdir())[0], b"Pomme " + NOT_UTF8)
    with pytest.raises(
        DatasetLayoutError, match=r"Pomme caf\\xe9: the folder name is not valid UTF-8.*convmv"
    ):
        set_up_datamodule(root, tmp_path)
    report = check_dataset(root)
    assert not report["trainable"] and "convmv" in report["errors"][0]


# --- high bit depth --------------------------------------------------------------------------------------


def test_16_bit_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path: Path) -> None:
    levels = np.array([[0, 257, 32896], [40000, 65278, 65535]], dtype=np.uint16)  # 0, 1, 128, 156, 254, 255
    pixels = np.kron(levels, np.ones((16, 16), dtype=np.uint16))  # 32 x 48, blocks of one level
    path = tmp_path / "sixteen_bit.png"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode.startswith("I")

    expected = np.rint(pixels / 257).astype(np.uint8)
    square = np.kron(levels[:, :2], np.ones((16, 16), dtype=np.uint16))  # 32 x 32: decoded without resizing
    square_path = tmp_path / "square.png"
    Image.fromarray(square).save(square_path)
    decoded = decode_image(square_path, 32)
    assert np.array_equal(decoded, np.repeat(np.rint(square / 257).astype(np.uint8)[..., None], 3, axis=2))
    assert expected.max() == 255 and decoded.mean() < 128  # not all white

    cache_file, unreadable = build_image_cache([square_path], 32, tmp_path / "cache")
    assert unreadable == [] and np.array_equal(np.load(cache_file)[0], decoded)
