"""A sweep in MLflow lists every job Hydra started, also one that failed before it trained."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sweeps import launch, only_sweep_dir, tiny_job_overrides

from fruitres.run_folders import RECORD_FILE, read_record


@pytest.mark.slow
def test_a_job_failing_on_its_config_gets_a_failed_child_run_with_its_record(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    result = launch(
        tmp_path,
        "-m",
        *tiny_job_overrides(tiny_dataset),
        "logger=[tensorboard,mlflow]",
        "model.frozen_stages=5,9",
    )
    assert result.returncode == 1, result.stderr[-3000:]  # job 1 (no stage 9) failed
    sweep_dir = only_sweep_dir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/logs/mlflow.db")
    experiment = client.get_experiment_by_name(f"train/{sweep_dir.name}")
    runs = {
        run.data.tags.get("fruitres.job", "parent"): run
        for run in client.search_runs([experiment.experiment_id])
    }
    assert sorted(runs) == ["0", "1", "parent"]
    assert runs["parent"].info.status == "FAILED"  # a job of the sweep failed
    for job, status in (("0", "FINISHED"), ("1", "FAILED")):
        run = runs[job]
        assert run.info.status == status
        assert run.data.tags["mlflow.parentRunId"] == runs["parent"].info.run_id
        assert (
            run.data.tags["model.frozen_stages"]
            == read_record(sweep_dir / job)["overrides"][-1].split("=")[1]
        )
        assert run.info.run_name == f"frozen_stages={run.data.tags['model.frozen_stages']}"
        assert RECORD_FILE in {item.path for item in client.list_artifacts(run.info.run_id)}
