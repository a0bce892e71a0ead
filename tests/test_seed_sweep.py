"""A 2×2 sweep over two seeds, tracked by TensorBoard and MLflow: the table per configuration over seeds; in
MLflow one parent run with a child per job, read through MLflow's own client, and the table read back."""

from __future__ import annotations

import csv
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import expected_cpu_precision
from test_sweeps import launch, only_sweep_dir

from fruitres.errors import ConfigError
from fruitres.reports.sweep_report import CSV_FILE, FIGURE_FILE, GROUPS_CSV_FILE, MARKDOWN_FILE
from fruitres.reports.uncertainty import wilson_interval
from fruitres.run.hparams import CURATED_KEYS
from fruitres.run.mlflow_tracking import MISSING, mlflow_logger
from fruitres.run_folders import RECORD_FILE, read_record

LEARNING_RATES = ("0.001", "0.003")


@dataclass(frozen=True)
class SeedSweep:
    root: Path
    sweep_dir: Path


@pytest.fixture(scope="module")
def seed_sweep(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeedSweep]:
    root = tmp_path_factory.mktemp("seed-sweep")
    result = launch(
        root,
        "-m",
        "seed=0,1",
        f"model.optimizer.lr={','.join(LEARNING_RATES)}",
        "logger=[tensorboard,mlflow]",
        f"data.data_dir={tiny_dataset}",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
        "callbacks.progress_bar=null",
        "callbacks.figures=null",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    yield SeedSweep(root, only_sweep_dir(root))
    shutil.rmtree(root, ignore_errors=True)  # a module's runs hold GBs of checkpoints: free the disk


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_seeds_are_grouped_per_configuration_with_mean_std_and_interval(seed_sweep: SeedSweep) -> None:
    jobs = read_rows(seed_sweep.sweep_dir / CSV_FILE)
    groups = read_rows(seed_sweep.sweep_dir / GROUPS_CSV_FILE)
    assert len(jobs) == 4 and {job["status"] for job in jobs} == {"ok"}
    assert sorted(group["model.optimizer.lr"] for group in groups) == sorted(LEARNING_RATES)

    for group in groups:
        members = [job for job in jobs if job["model.optimizer.lr"] == group["model.optimizer.lr"]]
        assert {job["seed"] for job in members} == {"0", "1"} and group["n"] == "2"
        for metric in ("val/acc_best", "test/acc"):
            values = [float(job[metric]) for job in members]
            assert float(group[f"{metric} mean"]) == pytest.approx(statistics.fmean(values))
            assert float(group[f"{metric} std"]) == pytest.approx(statistics.stdev(values))
            assert float(group[f"{metric} min"]) == pytest.approx(min(values))
            assert float(group[f"{metric} max"]) == pytest.approx(max(values))
        assert group["test images"] == "50"
        low, high = wilson_interval(round(float(group["test/acc mean"]) * 50), 50)
        assert group["test/acc 95% CI (one run)"] == f"[{low:.4f}, {high:.4f}]"
    for job in jobs:  # every job's test accuracy carries its own interval
        low, high = wilson_interval(round(float(job["test/acc"]) * 50), 50)
        assert job["test/acc 95% CI"] == f"[{low:.4f}, {high:.4f}]"
    assert "By configuration, over seeds" in (seed_sweep.sweep_dir / MARKDOWN_FILE).read_text()


def tracking_uri(seed_sweep: SeedSweep) -> str:
    return f"sqlite:///{seed_sweep.root}/logs/mlflow.db"


@pytest.mark.slow
def test_a_sweep_is_one_mlflow_parent_run_with_a_child_run_per_job(seed_sweep: SeedSweep) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri(seed_sweep))
    experiment = client.get_experiment_by_name(f"train/{seed_sweep.sweep_dir.name}")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 5 and len(children) == 4
    assert parent.data.tags["fruitres.sweep"] == str(seed_sweep.sweep_dir)
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {
        f"sweep/{name}" for name in (CSV_FILE, MARKDOWN_FILE, GROUPS_CSV_FILE, FIGURE_FILE)
    } <= parent_files

    for run in children:
        tags, params = run.data.tags, run.data.params
        record = read_record(seed_sweep.sweep_dir / tags["fruitres.job"])
        assert (
            run.info.run_name == f"seed={tags['seed']},lr={tags['model.optimizer.lr']}"
        )  # as in TensorBoard
        assert {f"seed={tags['seed']}", f"model.optimizer.lr={tags['model.optimizer.lr']}"} <= set(
            record["overrides"]
        )
        assert set(params) == {*CURATED_KEYS, "params/trainable", "params/total", "params/frozen"}
        assert float(params["model.optimizer.lr"]) == float(tags["model.optimizer.lr"])
        assert params["seed"] == tags["seed"]
        assert run.data.metrics["test/acc"] == pytest.approx(record["metrics"]["test/acc"])
        assert len(client.get_metric_history(run.info.run_id, "train/loss_step")) == 3  # every step
        assert tags["provenance.git.commit"] == str(record["provenance"]["git"]["commit"])
        assert tags["provenance.data.splits.test.images"] == "50"
        assert tags["provenance.hardware.precision"] == expected_cpu_precision()
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        files |= {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
        assert {"checkpoints/epoch_000.ckpt", RECORD_FILE} <= files


@pytest.mark.slow
def test_the_sweep_table_is_read_back_from_mlflow_alone(seed_sweep: SeedSweep) -> None:
    command = [sys.executable, "-m", "fruitres.reports.sweep_report", "--mlflow", tracking_uri(seed_sweep)]
    table = (seed_sweep.sweep_dir / MARKDOWN_FILE).read_text()
    moved = seed_sweep.sweep_dir.with_name("moved away")  # the table must come from MLflow, not the folder
    seed_sweep.sweep_dir.rename(moved)
    try:
        read = subprocess.run(
            [*command, f"train/{seed_sweep.sweep_dir.name}"], capture_output=True, text=True, timeout=300
        )
    finally:
        moved.rename(seed_sweep.sweep_dir)
    assert read.returncode == 0, read.stderr[-3000:]
    assert read.stdout == table + "\n"

    missing = subprocess.run([*command, "train/nope"], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == (
        f"{tracking_uri(seed_sweep)} has no MLflow experiment 'train/nope'; "
        "a sweep's is train/<sweep folder name>"
    )


def test_logger_mlflow_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is not installed
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[mlflow\]"') as raised:
        mlflow_logger(task_name="train", tracking_uri="sqlite:///unused.db")
    assert str(raised.value) == MISSING and "\n" not in MISSING
