"""Sweeps through Hydra's launcher plugins: submitit's local executor, joblib; one GPU per job."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, TINY_IMAGE_SIZE, compose_config, tiny_train_overrides
from hydra.core.utils import env_override
from hydra.utils import instantiate
from joblib import Parallel, delayed
from omegaconf import DictConfig, OmegaConf

from fruitres.reports.sweep_report import CSV_FILE

REPO = CONF_DIR.parent
GRID = "model.optimizer.lr=1e-3,1e-2"


def sweep_command(launcher: list[str], data_dir: Path) -> list[str]:
    """`python -m fruitres.train -m`: a two-job grid of two-batch runs, evaluated on all val/test images."""
    return [
        sys.executable,
        "-m",
        "fruitres.train",
        "-m",
        *launcher,
        GRID,
        f"data.data_dir={data_dir}",
        f"data.image_size={TINY_IMAGE_SIZE}",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "callbacks.figures=null",
    ]


def run_sweeps(data_dir: Path, launchers: dict[Path, list[str]]) -> list[Path]:
    """Run one sweep per launcher, side by side, each under its own FRUITRES_ROOT; returns the sweep dirs."""
    processes = {}
    for root, launcher in launchers.items():
        root.mkdir(parents=True)
        with open(root / "output.txt", "w") as output:
            env = {**os.environ, "FRUITRES_ROOT": str(root)}
            command = sweep_command(launcher, data_dir)
            processes[root] = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=output)
    for root, process in processes.items():
        assert process.wait(timeout=600) == 0, (root / "output.txt").read_text()[-3000:]
    return [next((root / "logs" / "train" / "multiruns").iterdir()) for root in launchers]


def sweep_table(sweep_dir: Path) -> list[dict[str, str]]:
    """The sweep's summary rows, without the wall time (which no two runs share)."""
    with open(sweep_dir / CSV_FILE, newline="") as file:
        rows = [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(file)]
    assert [row["status"] for row in rows] == ["ok", "ok"], rows
    return rows


@pytest.mark.slow
def test_submitit_local_sweep_gives_the_basic_launchers_table_with_one_gpu_per_job(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # local_gpus = Hydra's submitit_local launcher (the real submitit local executor, one process per job)
    # spreading the jobs over 2 GPUs; without GPUs here, the jobs train on the CPU all the same.
    basic, submitit = run_sweeps(
        tiny_dataset,
        {
            tmp_path / "basic": [],
            tmp_path / "submitit": ["hydra/launcher=local_gpus", "hydra.launcher.gpus_per_node=2"],
        },
    )
    assert (submitit / ".submitit").is_dir()
    table = sweep_table(submitit)
    assert table == sweep_table(basic)
    for job in ("0", "1"):
        assert f"CUDA_VISIBLE_DEVICES={job}\n" in (submitit / job / "train.log").read_text()


def hydra_config(overrides: list[str]) -> DictConfig:
    return compose_config("train", overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    ("visible", "job_num", "expected"), [("0,1", 0, "0"), ("0,1", 3, "1"), ("4,6,7", 4, "6")]
)
def test_local_gpus_launcher_shows_each_job_one_gpu_round_robin(
    monkeypatch: pytest.MonkeyPatch, visible: str, job_num: int, expected: str
) -> None:
    cfg = hydra_config(["hydra/launcher=local_gpus", f"hydra.job.num={job_num}"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)  # what submitit's gpus_per_node sets for every job
    with env_override(OmegaConf.masked_copy(cfg, "hydra").hydra.job.env_set):  # what Hydra does around a job
        assert os.environ["CUDA_VISIBLE_DEVICES"] == expected


@pytest.mark.parametrize("launcher", ["submitit_local", "submitit_slurm", "joblib", "local_gpus", "slurm"])
def test_launcher_configs_compose_and_instantiate(launcher: str) -> None:
    cfg = hydra_config([f"hydra/launcher={launcher}", "hydra.sweep.dir=sweep"])
    assert instantiate(cfg.hydra.launcher) is not None


def first_batch_shape(data: dict) -> tuple[int, ...]:
    datamodule = instantiate(data)
    datamodule.setup("fit")
    return tuple(next(iter(datamodule.train_dataloader()))[0].shape)


def test_dataloader_workers_start_inside_a_joblib_sweep_job(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = compose_config("train", [*tiny_train_overrides(tiny_dataset, tmp_path), "data.num_workers=1"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    # hydra/launcher=joblib runs each job in a loky worker process, as here
    (shape,) = Parallel(n_jobs=2)(delayed(first_batch_shape)(data) for _ in range(1))
    assert shape == (16, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
