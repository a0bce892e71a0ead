"""Hydra sweeps as a user runs them: real multirun processes, one directory per job, one table per sweep."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fruitres.reports.sweep_report import CSV_FILE, FIGURE_FILE, MARKDOWN_FILE, SUMMARY_RUN
from fruitres.reports.uncertainty import wilson_interval
from fruitres.run.hparams import PROVENANCE_TAG
from fruitres.run_folders import RECORD_FILE, read_record, tensorboard_events_dir

REPO = Path(__file__).resolve().parents[1]
RESNET18_TRAINABLE = {3: 2_099_712 + 8_393_728 + 512 * 5 + 5, 5: 512 * 5 + 5}  # by frozen_stages, 5 classes


def tiny_job_overrides(data_dir: Path) -> list[str]:
    """Each job: one short epoch on the tiny generated dataset, keeping its checkpoint, events and config."""
    return [
        f"data.data_dir={data_dir}",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "callbacks.progress_bar=null",
        "callbacks.figures=null",
        "callbacks.model_checkpoint=null",  # last.ckpt is each job's checkpoint here
    ]


def launch(root: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fruitres.train", *args]
    env = {**os.environ, "FRUITRES_ROOT": str(root)}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def only_sweep_dir(root: Path) -> Path:
    (sweep_dir,) = (root / "logs" / "train" / "multiruns").iterdir()
    return sweep_dir


def table_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / CSV_FILE, newline="") as file:
        return list(csv.DictReader(file))


def logged_hparams(job_dir: Path) -> dict[str, Any]:
    """The hyperparameters TensorBoard's HParams tab shows for a job."""
    events = EventAccumulator(str(tensorboard_events_dir(job_dir)))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in info.hparams.items()}


def swept_columns(job_dir: Path) -> list[str]:
    """The HParams columns the job's experiment marks as differing: those the tab lists first."""
    events = EventAccumulator(str(tensorboard_events_dir(job_dir)))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    return [info.name for info in experiment.hparam_infos if info.differs]


def logged_provenance(job_dir: Path) -> str:
    """The provenance table TensorBoard's Text tab shows for a job."""
    events = EventAccumulator(str(tensorboard_events_dir(job_dir)), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors(f"{PROVENANCE_TAG}/text_summary")
    return text.tensor_proto.string_val[0].decode()


def scalar_tags(job_dir: Path) -> set[str]:
    events = EventAccumulator(str(tensorboard_events_dir(job_dir)), size_guidance={"scalars": 0})
    events.Reload()
    return set(events.Tags()["scalars"])


@pytest.mark.slow
def test_grid_sweep_gives_each_job_its_directory_and_the_sweep_one_table(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    result = launch(
        tmp_path,
        "-m",
        *tiny_job_overrides(tiny_dataset),
        "model.optimizer.lr=1e-3,1e-2",
        "model.frozen_stages=3,5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    job_dirs = sorted(path for path in sweep_dir.iterdir() if path.is_dir() and path.name != SUMMARY_RUN)
    assert [path.name for path in job_dirs] == ["0", "1", "2", "3"]

    grid = set()
    for job_dir in job_dirs:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
        lr, frozen = (float(o.split("=")[1]) for o in overrides[-2:])
        grid.add((lr, int(frozen)))
        assert (job_dir / ".hydra" / "config.yaml").is_file()
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        record = read_record(job_dir)
        assert record["status"] == "ok" and record["epochs"] == 1 and record["wall_time_s"] > 0
        hparams = logged_hparams(job_dir)
        assert hparams["model.optimizer.lr"] == pytest.approx(lr)
        assert hparams["model.frozen_stages"] == frozen
        assert hparams["params/trainable"] == RESNET18_TRAINABLE[int(frozen)]
        assert swept_columns(job_dir) == ["model.optimizer.lr", "model.frozen_stages"]  # listed first
        run_name = f"lr={overrides[-2].split('=')[1]},frozen_stages={int(frozen)}"
        assert tensorboard_events_dir(job_dir).name == run_name
        assert {"test/acc_ci_low", "test/acc_ci_high", "time/wall_s"} <= scalar_tags(job_dir)
    assert grid == {(1e-3, 3), (1e-3, 5), (1e-2, 3), (1e-2, 5)}

    rows = table_rows(sweep_dir)
    assert len(rows) == 4
    assert list(rows[0]) == [
        "job",
        "model.optimizer.lr",
        "model.frozen_stages",
        "val/acc_best",
        "test/acc",
        "test/acc 95% CI",  # Wilson, from the 16 test images of limit_test_batches=1
        "epochs",
        "wall_time_s",
        "status",
        "error",
    ]
    assert sorted(row["job"] for row in rows) == ["0", "1", "2", "3"]
    for row in rows:
        low, high = wilson_interval(round(float(row["test/acc"]) * 16), 16)
        assert row["test/acc 95% CI"] == f"[{low:.4f}, {high:.4f}]"
    accuracies = [float(row["val/acc_best"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert {row["status"] for row in rows} == {"ok"}
    markdown = (sweep_dir / MARKDOWN_FILE).read_text()
    assert markdown.splitlines()[0] in result.stdout
    assert (sweep_dir / FIGURE_FILE).is_file() and list(
        (sweep_dir / SUMMARY_RUN).glob("events.out.tfevents.*")
    )

    (sweep_dir / CSV_FILE).unlink()
    (sweep_dir / MARKDOWN_FILE).unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "fruitres.reports.sweep_report", str(sweep_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert table_rows(sweep_dir) == rows
    assert (sweep_dir / MARKDOWN_FILE).read_text() == markdown
    assert markdown in rebuilt.stdout


@pytest.fixture(scope="module")
def sweep_with_a_failing_job(
    tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, list[str]]]:
    """A sweep whose second job asks for a stage that does not exist."""
    root = tmp_path_factory.mktemp("failing-sweep")
    args = ["-m", *tiny_job_overrides(tiny_dataset), "model.frozen_stages=5,9"]
    result = launch(root, *args)
    assert result.returncode == 1, result.stderr[-3000:]  # a job failed: the sweep says so, after its table
    assert result.stderr.splitlines()[-1].startswith("1 of 2 jobs of this sweep failed (job 1: ConfigError")
    yield root, args
    shutil.rmtree(root, ignore_errors=True)  # a module's runs hold GBs of checkpoints: free the disk


def test_failing_job_is_reported_with_its_error_and_the_other_jobs_complete(
    sweep_with_a_failing_job: tuple[Path, list[str]],
) -> None:
    sweep_dir = only_sweep_dir(sweep_with_a_failing_job[0])
    rows = table_rows(sweep_dir)
    assert [(row["model.frozen_stages"], row["status"]) for row in rows] == [("5", "ok"), ("9", "failed")]
    assert float(rows[0]["test/acc"]) >= 0 and rows[0]["error"] == ""
    assert "model.frozen_stages=9" in rows[1]["error"] and rows[1]["val/acc_best"] == ""
    assert (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_relaunched_sweep_skips_finished_jobs_and_reruns_the_others(
    sweep_with_a_failing_job: tuple[Path, list[str]],
) -> None:
    root, args = sweep_with_a_failing_job
    sweep_dir = only_sweep_dir(root)
    finished, failed = sweep_dir / "0" / RECORD_FILE, sweep_dir / "1" / RECORD_FILE
    finished_before, failed_before = finished.stat().st_mtime_ns, json.loads(failed.read_text())
    failed.write_text(json.dumps({**failed_before, "started_at": "before the relaunch"}))

    result = launch(root, *args, f"hydra.sweep.dir={sweep_dir}")

    assert result.returncode == 1, result.stderr[-3000:]  # job 1 ran again, and failed again
    assert finished.stat().st_mtime_ns == finished_before
    assert "already finished" in result.stdout + result.stderr
    assert read_record(failed.parent)["started_at"] != "before the relaunch"
    assert [row["status"] for row in table_rows(sweep_dir)] == ["ok", "failed"]


def test_failing_single_run_exits_nonzero_and_records_its_error(tiny_dataset: Path, tmp_path: Path) -> None:
    result = launch(tmp_path, *tiny_job_overrides(tiny_dataset), "model.frozen_stages=9")
    assert result.returncode != 0
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    record = read_record(run_dir)
    assert record["status"] == "failed" and "model.frozen_stages=9" in record["error"]


@pytest.mark.slow
def test_optuna_search_runs_its_trials_and_writes_the_table(tiny_dataset: Path, tmp_path: Path) -> None:
    fixed = [o for o in tiny_job_overrides(tiny_dataset) if not o.startswith("data.batch_size=")]  # searched
    result = launch(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", *fixed)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    searched = {
        "model.optimizer.lr",
        "model.frozen_stages",
        "model.optimizer.weight_decay",
        "data.batch_size",
    }
    assert set(best["best_params"]) == searched
    for job_dir in (sweep_dir / "0", sweep_dir / "1"):
        record = read_record(job_dir)
        assert record["status"] == "ok"
        assert searched <= {override.split("=")[0] for override in record["overrides"]}
    rows = table_rows(sweep_dir)
    assert len(rows) == 2
    assert float(rows[0]["val/acc_best"]) == pytest.approx(best["best_value"])
