"""A sweep as MLflow holds it: one parent run, and each job a child run nested under it.

The parent (tag `fruitres.sweep`: the sweep folder) carries the sweep's table and figure as artifacts. A
child carries MLflow's `mlflow.parentRunId`, its job folder's name (`fruitres.job`), its overrides
(`fruitres.overrides`), one tag per swept key, and its `run_record.json` once the job has ended. Written by
fruitres/run/mlflow_tracking.py; read back here, so the sweep table can be rebuilt from MLflow alone.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fruitres.errors import ConfigError, FixableError
from fruitres.run_folders import RECORD_FILE, job_order

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

MISSING = 'logger=mlflow needs MLflow, an optional extra: pip install -e ".[mlflow]"'
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: what nests a run under another in its UI
SWEEP_TAG = "fruitres.sweep"  # on the parent: the sweep folder
JOB_TAG = "fruitres.job"  # on a child: its job folder's name
OVERRIDES_TAG = "fruitres.overrides"  # on a child: its command-line overrides, as a JSON list

MlflowJob = tuple[str, dict[str, Any] | None, list[str]]  # job name, its record (None: none yet), overrides


def require_mlflow() -> None:
    """A one-line error naming the extra when MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING) from None


def mlflow_client(tracking_uri: str | None) -> MlflowClient:
    """MLflow's client of `tracking_uri` (None: MLflow's default)."""
    require_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def tag_filter(tag: str, value: str) -> str:
    return f"tags.`{tag}` = '{value}'"


def sweep_parent(client: MlflowClient, experiment_id: str) -> Run | None:
    """The experiment's sweep run (the first one made, should a race have made two)."""
    runs = client.search_runs([experiment_id], f"tags.`{SWEEP_TAG}` != ''", order_by=["start_time ASC"])
    return runs[0] if runs else None


def sweep_children(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The parent's child runs, the newest per job (a relaunched job makes a new one), in job order."""
    runs = client.search_runs(
        [experiment_id], tag_filter(PARENT_RUN_TAG, parent_id), order_by=["start_time ASC"]
    )
    newest = {run.data.tags.get(JOB_TAG, run.info.run_id): run for run in runs}
    return [newest[name] for name in sorted(newest, key=job_order)]


def child_record(client: MlflowClient, run: Run) -> dict[str, Any] | None:
    """The job's run_record.json, as the job folder holds it; None before the job has ended."""
    if not any(item.path == RECORD_FILE for item in client.list_artifacts(run.info.run_id)):
        return None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per job on stderr
    with tempfile.TemporaryDirectory() as folder:
        return json.loads(Path(client.download_artifacts(run.info.run_id, RECORD_FILE, folder)).read_text())


def mlflow_sweep_jobs(tracking_uri: str, experiment: str) -> list[MlflowJob]:
    """Each job of the sweep logged to MLflow experiment `experiment`: its name, record and overrides."""
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise FixableError(
            f"{tracking_uri} has no MLflow experiment {experiment!r}; a sweep's is train/<sweep folder name>"
        )
    parent = sweep_parent(client, found.experiment_id)
    if parent is None:
        raise FixableError(
            f"MLflow experiment {experiment!r} has no sweep run (tag {SWEEP_TAG}): not a sweep"
        )
    jobs = []
    for run in sweep_children(client, found.experiment_id, parent.info.run_id):
        record = child_record(client, run)
        overrides = record["overrides"] if record else json.loads(run.data.tags.get(OVERRIDES_TAG, "[]"))
        jobs.append((run.data.tags.get(JOB_TAG, run.info.run_name), record, overrides))
    return jobs
