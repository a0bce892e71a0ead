"""The transfer study as `make transfer` runs it, shrunk to about a minute: a source model on three classes of
the tiny dataset, every recipe × two numbers of images per class on the other two, then the figure, the
tables, TensorBoard and notebook 03 on that study."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, TINY_IMAGE_SIZE, compose_config
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationToMissingValueError
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_notebooks import TRANSFER_NOTEBOOK, execute_notebook

from fruitres.errors import ConfigError
from fruitres.reports import transfer_report
from fruitres.reports.transfer_report import IMAGE_TAG, RECIPES, job_point, transfer_results
from fruitres.run.config_checks import validate_config
from fruitres.run_folders import RECORD_FILE, job_dirs, read_record

REPO = CONF_DIR.parent
PER_CLASS = {"5": 5, "all": None}  # the reduced grid: CSV column → data.train_per_class
SHRINK = [  # both steps: tiny images, small batches, the CPU, no progress bar or figures
    f"data.image_size={TINY_IMAGE_SIZE}",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.figures=null",
]


@dataclass(frozen=True)
class TransferStudy:
    folder: Path
    output: str  # what `make transfer` printed

    @property
    def source_checkpoint(self) -> Path:
        (best,) = (self.folder / "source" / "checkpoints").glob("epoch_*.ckpt")
        return best

    @property
    def target(self) -> Path:
        return self.folder / "target"

    def jobs(self) -> dict[tuple[str, int | None], Path]:
        """(recipe, data.train_per_class) → the job's directory."""
        return {job_point(path): path for path in job_dirs(self.target)}


@pytest.fixture(scope="module")
def transfer_study(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransferStudy]:
    """`make transfer` on the tiny dataset: classes A and B are 3 and 2 of its 5 classes, the source trains
    one epoch, each target job 2 steps (validated once)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = tmp_path_factory.mktemp("transfer")
    classes = sorted(path.name for path in (tiny_dataset / "Training").iterdir())
    class_a, class_b = root / "classes_a.txt", root / "classes_b.txt"
    class_a.write_text("\n".join(classes[:3]) + "\n")
    class_b.write_text("\n".join(classes[3:]) + "\n")
    per_class = ",".join("null" if n is None else str(n) for n in PER_CLASS.values())
    command = [
        "make",
        "--no-print-directory",
        "transfer",
        f"PY={sys.executable}",
        "STAMP=",  # the test's interpreter and packages, no .venv install
        f"DATA={tiny_dataset}",
        f"TRANSFER_DIR={root / 'study'}",
        "ARGS=" + " ".join(SHRINK),
        f"CLASSES_A={class_a}",
        f"CLASSES_B={class_b}",
        "SOURCE_ARGS=trainer.max_epochs=1",
        f"TARGET_ARGS=trainer.max_steps=2 trainer.val_check_interval=2 data.train_per_class={per_class}",
    ]
    env = {**os.environ, "FRUITRES_ROOT": str(root)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    yield TransferStudy(root / "study", result.stdout)
    shutil.rmtree(root, ignore_errors=True)  # a module's runs hold GBs of checkpoints: free the disk


def backbone(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.") and ".fc." not in k}


def best_checkpoint(job_dir: Path) -> Path:
    (best,) = (job_dir / "checkpoints").glob("epoch_*.ckpt")
    return best


def test_every_target_job_but_scratch_starts_from_the_source_checkpoint(
    transfer_study: TransferStudy,
) -> None:
    source = transfer_study.source_checkpoint
    assert read_record(source.parents[1])["metrics"]["test/acc"] >= 0
    for (recipe, _), job_dir in transfer_study.jobs().items():
        assert f"source_ckpt={source}" in read_record(job_dir)["overrides"]
        weights_path = OmegaConf.load(job_dir / ".hydra" / "config.yaml").model.weights_path
        assert weights_path == (None if recipe == "scratch" else str(source)), recipe

    jobs, source_weights = transfer_study.jobs(), backbone(source)
    probe = backbone(best_checkpoint(jobs["probe", 5]))  # every stage frozen: the source's, to the bit
    for key, value in source_weights.items():
        torch.testing.assert_close(probe[key], value, rtol=0, atol=0, msg=key)
    frozen3 = backbone(best_checkpoint(jobs["frozen3", 5]))
    torch.testing.assert_close(frozen3["layer2.1.conv2.weight"], source_weights["layer2.1.conv2.weight"])
    assert not torch.equal(frozen3["layer4.1.conv2.weight"], source_weights["layer4.1.conv2.weight"])
    gradual = backbone(best_checkpoint(jobs["gradual", 5]))  # 2 epochs: layer4 unfrozen at the second
    torch.testing.assert_close(gradual["layer3.1.conv2.weight"], source_weights["layer3.1.conv2.weight"])
    assert not torch.equal(gradual["layer4.1.conv2.weight"], source_weights["layer4.1.conv2.weight"])
    scratch = backbone(best_checkpoint(jobs["scratch", 5]))
    assert not torch.allclose(scratch["conv1.weight"], source_weights["conv1.weight"])


def test_every_recipe_and_number_of_images_has_a_test_accuracy(transfer_study: TransferStudy) -> None:
    jobs = transfer_study.jobs()
    assert set(jobs) == {(recipe, n) for recipe in RECIPES for n in PER_CLASS.values()}
    for job_dir in jobs.values():
        record = read_record(job_dir)
        assert record["status"] == "ok" and 0 <= record["metrics"]["test/acc"] <= 1, record
    with open(transfer_study.target / "sweep_results.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == len(jobs)


def test_the_study_ends_with_its_figure_tables_and_tensorboard_image(transfer_study: TransferStudy) -> None:
    target, jobs = transfer_study.target, transfer_study.jobs()
    assert (target / "transfer.png").read_bytes().startswith(b"\x89PNG")
    with open(target / "transfer.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["recipe", "label", *PER_CLASS]
    assert [row["recipe"] for row in rows] == list(RECIPES)
    for row in rows:
        for column, per_class in PER_CLASS.items():
            accuracy = read_record(jobs[row["recipe"], per_class])["metrics"]["test/acc"]
            assert float(row[column]) == pytest.approx(accuracy, abs=5e-5)
    markdown = (target / "transfer.md").read_text()
    assert all(label in markdown for label in RECIPES.values())
    assert "| recipe | 5 | all |" in transfer_study.output
    events = EventAccumulator(str(target / "tensorboard"))
    events.Reload()
    assert IMAGE_TAG in events.Tags()["images"]


def test_the_report_rebuilds_from_the_command_line_replacing_its_event_file(
    transfer_study: TransferStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    target = transfer_study.target
    csv_before = (target / "transfer.csv").read_text()
    (target / "transfer.csv").unlink()
    (target / "transfer.png").unlink()
    transfer_report.main([str(target)])
    assert (target / "transfer.csv").read_text() == csv_before
    assert (target / "transfer.png").is_file()
    assert len(list((target / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert "| recipe | 5 | all |" in capsys.readouterr().out


def test_failed_jobs_are_left_out_and_repeated_points_averaged(
    transfer_study: TransferStudy, tmp_path: Path
) -> None:
    sweep = tmp_path / "target"
    shutil.copytree(transfer_study.target, sweep, ignore=shutil.ignore_patterns("*.ckpt", "tensorboard"))
    jobs = {point: sweep / path.name for point, path in transfer_study.jobs().items()}
    failed = read_record(jobs["full", 5]) | {"status": "failed", "error": "boom", "metrics": {}}
    (jobs["full", 5] / RECORD_FILE).write_text(json.dumps(failed))
    repeat = sweep / "99"  # a second seed of probe at all images per class
    shutil.copytree(jobs["probe", None], repeat)
    record = read_record(repeat)
    record["metrics"]["test/acc"] = 1.0
    (repeat / RECORD_FILE).write_text(json.dumps(record))

    results = transfer_results(sweep)

    assert 5 not in results["full"] and None in results["full"]
    probe_all = read_record(jobs["probe", None])["metrics"]["test/acc"]
    assert results["probe"][None] == pytest.approx((probe_all + 1.0) / 2)


def test_notebook_03_shows_the_study(
    transfer_study: TransferStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"FRUITRES_TRANSFER_DIR": str(transfer_study.folder), "FRUITRES_ROOT": str(tmp_path)}
    execute_notebook(TRANSFER_NOTEBOOK, env, monkeypatch)


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_sweep_takes_every_backbone_but_scratch_from_source_ckpt_which_it_requires(
    recipe: str, tmp_path: Path
) -> None:
    sweep = ["experiment=transfer_target", "hparams_search=transfer", f"recipe={recipe}"]
    cfg = compose_config("train", [*sweep, f"paths.output_dir={tmp_path}", "source_ckpt=/source.ckpt"])
    assert cfg.model.weights_path == (None if recipe == "scratch" else "/source.ckpt")
    with pytest.raises((ConfigError, InterpolationToMissingValueError), match="source_ckpt"):
        validate_config(compose_config("train", [*sweep, f"paths.output_dir={tmp_path}"]))


@pytest.mark.slow
def test_make_fewshot_trains_the_source_in_its_budget_then_three_seeds_of_ten_images(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    classes = sorted(path.name for path in (tiny_dataset / "Training").iterdir())
    class_a, class_b = tmp_path / "classes_a.txt", tmp_path / "classes_b.txt"
    class_a.write_text("\n".join(classes[:3]) + "\n")
    class_b.write_text("\n".join(classes[3:]) + "\n")
    folder = tmp_path / "fewshot"
    command = [
        "make", "--no-print-directory", "fewshot", f"PY={sys.executable}", "STAMP=",
        f"DATA={tiny_dataset}", f"SOURCE_DATA={tiny_dataset}", "SOURCE_BUDGET=00:00:00:20",
        f"FEWSHOT_DIR={folder}", f"CLASSES_A={class_a}", f"CLASSES_B={class_b}", "ARGS=" + " ".join(SHRINK),
        "TARGET_ARGS=trainer.max_steps=2 trainer.val_check_interval=2",
    ]  # fmt: skip
    env = {**os.environ, "FRUITRES_ROOT": str(tmp_path)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    (source,) = (folder / "source" / "checkpoints").glob("epoch_*.ckpt")
    source_overrides = OmegaConf.load(folder / "source" / ".hydra" / "overrides.yaml")
    assert "trainer.max_time=00:00:00:20" in source_overrides  # the source trains within its budget
    jobs = job_dirs(folder / "target")
    seeds = []
    for job in jobs:
        overrides = set(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        assert {"recipe=fewshot", "data.train_per_class=10", f"model.weights_path={source}"} <= overrides
        assert read_record(job)["status"] == "ok"
        seeds += [override for override in overrides if override.startswith("seed=")]
    assert sorted(seeds) == ["seed=0", "seed=1", "seed=2"]
    table = (folder / "target" / "sweep_results.md").read_text()
    assert "| 3 |" in table  # the seeds' row: n = 3, mean ± std
