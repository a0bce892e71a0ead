"""Hostile input that used to lose work or give silently wrong results: sweeps relaunched into their folder
with other values, runs started over a finished run, file names that are not UTF-8, 16-bit images, sweeps
whose jobs all fail. Real files and real processes throughout."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from cli import TINY_CLI, run_train
from conftest import TrainedSweep, compose_config, set_up_datamodule, tiny_train_overrides
from omegaconf import OmegaConf, open_dict
from PIL import Image

from fruitres.data.cache import build_image_cache
from fruitres.data.check import check_dataset
from fruitres.data.folders import DatasetLayoutError
from fruitres.data.images import ImageTooLarge, decode_image
from fruitres.reports.sweep_report import CSV_FILE
from fruitres.run.resume import expand_resume_argv
from fruitres.run_folders import job_dirs
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
    jobs = {path.name: saved_overrides(path)[-1] for path in job_dirs(sweep_dir)}
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


# --- a stranger's dataset: what data.check and training make of it ----------------------------------------


def copied(tiny_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "fruits"
    shutil.copytree(tiny_dataset, root)
    return root


def test_decompression_bomb_image_is_refused_before_decoding_naming_the_file(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    root = copied(tiny_dataset, tmp_path)
    bomb = min((root / "Training").iterdir()) / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb, optimize=True)  # a small file, 144 M pixels
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(ImageTooLarge, match=r"bomb.png is 12000×12000 = 144,000,000 pixels, more than"):
        decode_image(bomb, 32)
    (entry,) = check_dataset(root)["unreadable"]
    assert entry["path"].endswith("bomb.png") and "ImageTooLarge" in entry["error"]
    datamodule = set_up_datamodule(root, tmp_path)  # skipped with the other unreadable files
    assert len(datamodule.datasets["train"]) + len(datamodule.datasets["val"]) == 5 * 40


def test_jfif_images_are_trained_on_and_images_in_sub_folders_are_named_by_data_check(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    root = copied(tiny_dataset, tmp_path)
    class_dir = min((root / "Training").iterdir())
    first = min(class_dir.iterdir())
    shutil.copy(first, class_dir / "saved by a browser.jfif")
    (class_dir / "more").mkdir()
    shutil.copy(first, class_dir / "more" / "deeper.jpg")
    report = check_dataset(root)
    assert report["splits"]["Training"]["per_class"][class_dir.name] == 41  # the .jfif counts
    (warning,) = [w for w in report["warnings"] if "sub-folders of class folders" in w]
    assert f"Training/{class_dir.name}/more/deeper.jpg; move them up" in warning
    datamodule = set_up_datamodule(root, tmp_path)
    assert len(datamodule.datasets["train"]) + len(datamodule.datasets["val"]) == 5 * 40 + 1


def test_class_names_that_differ_only_in_unicode_form_are_named_by_data_check(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    root = copied(tiny_dataset, tmp_path)
    classes = sorted((root / "Training").iterdir())
    classes[0].rename(root / "Training" / unicodedata.normalize("NFC", "Pomme é"))
    classes[1].rename(root / "Training" / unicodedata.normalize("NFD", "Pomme é"))
    (warning,) = [w for w in check_dataset(root)["warnings"] if "Unicode form" in w]
    assert "'Pomme e\\u0301' and 'Pomme \\xe9'; rename them to one form" in warning


def test_data_check_lists_a_class_folder_it_cannot_read_instead_of_a_traceback(tiny_dataset: Path) -> None:
    as_another_user = another_user_prefix()
    holder = Path(tempfile.mkdtemp(prefix="fruitres-unreadable-"))  # a folder another user can reach
    holder.chmod(0o755)
    root = holder / "fruits"
    shutil.copytree(tiny_dataset, root)
    locked = min((root / "Test").iterdir())
    locked.chmod(0o000)
    try:
        command = [*as_another_user, sys.executable, "-m", "fruitres.data.check", str(root)]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(holder)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert f"{locked} cannot be listed (Permission denied); make it readable" in done.stdout


def test_empty_fruitres_root_is_refused_in_one_line_before_anything_is_written(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fruitres.train"],
        cwd=tmp_path,
        env={**os.environ, "FRUITRES_ROOT": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "FRUITRES_ROOT is set but empty, which would write /data and /logs at the file-system root; unset it "
        "(unset FRUITRES_ROOT) to write under the launch folder, or set it to a folder"
    ]
    assert list(tmp_path.iterdir()) == []


def test_fruitres_root_with_a_tilde_means_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FRUITRES_ROOT", "~/fr")
    cfg = compose_config("train", [])
    assert (cfg.paths.log_dir, cfg.data.cache_dir) == (f"{tmp_path}/fr/logs", f"{tmp_path}/fr/data/cache")


def another_user_prefix() -> list[str]:
    """The command prefix that runs a process as a user whom file permissions bind: root reads every
    folder, so as root the process runs as nobody."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root reads every folder, and setpriv is missing to run as another user")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    package = Path(__file__).resolve().parents[1] / "fruitres" / "__init__.py"
    if subprocess.run([*prefix, "test", "-r", str(package)]).returncode != 0:
        pytest.skip(f"user nobody cannot read this checkout ({package.parent.parent} is private to root)")
    return prefix


def test_training_on_a_class_folder_it_cannot_read_is_one_line_naming_it_and_the_fix(
    tiny_dataset: Path,
) -> None:
    as_another_user = another_user_prefix()
    holder = Path(tempfile.mkdtemp(prefix="fruitres-unreadable-"))  # a folder another user can reach
    holder.chmod(0o755)
    root, out = holder / "fruits", holder / "out"
    shutil.copytree(tiny_dataset, root)
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    locked = min((root / "Training").iterdir())
    locked.chmod(0o000)
    try:
        command = [*as_another_user, sys.executable, "-m", "fruitres.train", *TINY_CLI]
        command += [f"data.data_dir={root}", "trainer.max_epochs=1"]
        env = {**os.environ, "FRUITRES_ROOT": str(out), "HOME": str(out)}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(holder)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-2000:]
    assert "Traceback" not in output
    assert f"{locked} cannot be listed (Permission denied); make it readable (chmod -R u+rX" in output
    assert f"or leave it out with data.exclude_classes='[{locked.name}]'" in output


def test_a_utf8_class_name_under_an_ascii_locale_blames_the_locale_not_the_name(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    root = copied(tiny_dataset, tmp_path)
    min((root / "Training").iterdir()).rename(root / "Training" / "Pomme é")
    args = [*TINY_CLI, f"data.data_dir={root}", "trainer.max_epochs=1"]
    status, output = run_train(args, tmp_path / "out", LC_ALL="C", PYTHONUTF8="0")
    assert status == 1, output[-2000:]
    assert "Traceback" not in output and "rename" not in output
    assert "the folder name is UTF-8, but this Python reads file names as ascii" in output
    assert "run with PYTHONUTF8=1 or LC_ALL=C.UTF-8" in output


def test_a_data_folder_with_one_class_is_one_line_naming_it(tiny_dataset: Path, tmp_path: Path) -> None:
    root = copied(tiny_dataset, tmp_path)
    kept = min((root / "Training").iterdir()).name
    for split in ("Training", "Test"):
        for class_dir in (root / split).iterdir():
            if class_dir.name != kept:
                shutil.rmtree(class_dir)
    args = [*TINY_CLI, f"data.data_dir={root}", "trainer.max_epochs=1"]
    status, output = run_train(args, tmp_path / "out")
    assert status == 1, output[-2000:]
    assert "Traceback" not in output and "Expected argument" not in output  # torchmetrics' words
    assert f"{root / 'Training'} has one class folder ({kept}); training needs at least two" in output


def test_an_unquoted_non_ascii_override_says_to_quote_it(tmp_path: Path) -> None:
    status, output = run_train(["data.data_dir=/tmp/frü", "its"], tmp_path)
    assert status == 1
    assert output.strip().splitlines() == [
        "data.data_dir=/tmp/frü: Hydra's override grammar takes non-ASCII characters only in quotes; quote "
        "the value, e.g. 'data.data_dir=\"/tmp/frü\"' (spaces included, inside the shell's quotes)"
    ]
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []
