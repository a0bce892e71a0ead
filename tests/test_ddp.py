"""Multi-process training with Lightning's DDP: one run directory, files written once, exact metrics."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
from conftest import CONF_DIR, TINY_IMAGE_SIZE, compose_config
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fruitres.data.datamodule import Fruits360DataModule
from fruitres.data.embedded import write_embedded_dataset
from fruitres.models.classifier import FruitClassifier
from fruitres.run.launch import check_launch

REPO = CONF_DIR.parent
SLURM_TEMPLATE = REPO / "scripts" / "slurm" / "train_ddp.sbatch"
# What srun sets in the task with global rank 3 of a job with 2 nodes × 2 tasks.
SLURM_TASK_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "fruitres-ddp",
    "SLURM_NTASKS": "4",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "2",
    "SLURM_NODELIST": "gpu[017-018]",
    "SLURM_NODEID": "1",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
}
# srun's stand-in: starts $SLURM_NTASKS copies of the command on this machine with the variables srun sets.
FAKE_SRUN = """#!/usr/bin/env bash
pids=()
for ((rank = 0; rank < SLURM_NTASKS; rank++)); do
  SLURM_PROCID=$rank SLURM_LOCALID=$rank SLURM_NODEID=0 "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""


@dataclass
class DdpRun:
    root: Path
    run_dir: Path
    data_overrides: list[str]


def data_overrides(data_dir: Path) -> list[str]:
    """45 test and 25 validation images: odd counts, so a sampler padding 2 shards would repeat an image."""
    return [
        f"data.data_dir={data_dir}",
        f"data.image_size={TINY_IMAGE_SIZE}",
        "data.val_fraction=0.25",
        "data.batch_size=8",
        "data.num_workers=0",
    ]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DdpRun]:
    """`python -m fruitres.train trainer=ddp_cpu`: 2 gloo processes started by Lightning, one short epoch."""
    root = tmp_path_factory.mktemp("ddp")
    data_dir = write_embedded_dataset(
        root / "data", num_classes=5, train_per_class=20, test_per_class=9, image_size=TINY_IMAGE_SIZE
    )
    overrides = data_overrides(data_dir)
    command = [
        sys.executable,
        "-m",
        "fruitres.train",
        "trainer=ddp_cpu",
        *overrides,
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]
    env = {**os.environ, "FRUITRES_ROOT": str(root)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (root / "logs" / "train" / "runs").iterdir()
    yield DdpRun(root, run_dir, overrides)
    shutil.rmtree(root, ignore_errors=True)  # a module's runs hold GBs of checkpoints: free the disk


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def logged_scalar(run_dir: Path, tag: str) -> float:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    (event,) = events.Scalars(tag)
    return event.value


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """The run's last checkpoint, or its best one (the only other, with one epoch)."""
    (best,) = [p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    return run_dir / "checkpoints" / "last.ckpt" if which == "last" else best


def single_process_metrics(run: DdpRun, checkpoint: Path, stage: str) -> dict[str, float]:
    """The checkpoint evaluated by one process on the same data, with a fresh datamodule."""
    cfg: DictConfig = compose_config("train", [*run.data_overrides, f"paths.root_dir={run.root}"])
    datamodule: Fruits360DataModule = instantiate(cfg.data)
    model = FruitClassifier.load_from_checkpoint(checkpoint, weights_only=True)
    trainer = L.Trainer(  # the run's own precision: bf16 and float32 logits may rank near-ties differently
        accelerator="cpu",
        devices=1,
        precision=cfg.trainer.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    evaluate = trainer.test if stage == "test" else trainer.validate
    (metrics,) = evaluate(model, datamodule=datamodule, verbose=False)
    datamodule.setup()
    assert len(datamodule.datasets[stage]) % 2 == 1  # padding to 2 equal shards would repeat an image
    return metrics


@pytest.mark.slow
def test_ddp_ranks_share_one_run_directory_and_rank_zero_writes_the_files(ddp_run: DdpRun) -> None:
    assert [p.name for p in (ddp_run.root / "logs" / "train" / "runs").iterdir()] == [ddp_run.run_dir.name]
    assert (ddp_run.run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran, in this same directory
    assert (ddp_run.run_dir / ".hydra" / "config.yaml").is_file()
    assert (
        checkpoint_path(ddp_run.run_dir, "best").is_file()
        and checkpoint_path(ddp_run.run_dir, "last").is_file()
    )
    tensorboard = ddp_run.run_dir / "tensorboard"
    assert all(p.is_file() for p in tensorboard.iterdir())  # one TensorBoard run: no version_*/ folders
    writer_pids = {p.name.split(".")[-2] for p in tensorboard.glob("events.out.tfevents.*")}
    assert len(writer_pids) == 1, writer_pids  # events (scalars and figures) come from rank 0 alone
    events = EventAccumulator(str(tensorboard), size_guidance={"images": 0})
    events.Reload()
    assert {"test/confusion_matrix", "val/confusion_matrix"} <= set(events.Tags()["images"])


@pytest.mark.slow
# train() tests the best checkpoint; the epoch's validation ran on the weights saved as last.ckpt
@pytest.mark.parametrize(("stage", "checkpoint"), [("test", "best"), ("val", "last")])
def test_ddp_logged_accuracy_equals_single_process_evaluation(
    ddp_run: DdpRun, stage: str, checkpoint: str
) -> None:
    expected = single_process_metrics(ddp_run, checkpoint_path(ddp_run.run_dir, checkpoint), stage)
    assert 0 < expected[f"{stage}/acc"] < 1  # so that one repeated image would change the figure
    assert logged_scalar(ddp_run.run_dir, f"{stage}/acc") == pytest.approx(expected[f"{stage}/acc"], abs=1e-6)
    assert logged_scalar(ddp_run.run_dir, f"{stage}/loss") == pytest.approx(
        expected[f"{stage}/loss"], rel=1e-5
    )


@pytest.fixture
def in_process_trainer_state(monkeypatch: pytest.MonkeyPatch):
    """Undo what building a DDP Trainer here changes for the rest of the session: rank, env, Hydra state."""
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    saved_env = dict(os.environ)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved_env)
    HydraConfig.instance().cfg = None


def trainer_from_config(overrides: list[str], tmp_path: Path) -> L.Trainer:
    cfg = compose_config("train", [*overrides, f"paths.output_dir={tmp_path}"])
    return instantiate(cfg.trainer, logger=False, enable_progress_bar=False)


def test_ddp_trainer_under_srun_takes_ranks_and_world_from_slurm(
    in_process_trainer_state: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in SLURM_TASK_ENV.items():
        in_process_trainer_state.setenv(name, value)
    in_process_trainer_state.delenv("MASTER_ADDR", raising=False)
    in_process_trainer_state.delenv("MASTER_PORT", raising=False)
    # The GPUs of the cluster are CPUs here; everything else is the shipped trainer=ddp config.
    trainer = trainer_from_config(
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=2"], tmp_path
    )
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment)
    assert environment.creates_processes_externally  # srun started the ranks: Lightning starts none
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    assert environment.main_address == "gpu017"  # rank 0 of the job runs on the first node of the list


@pytest.mark.slow
def test_slurm_template_starts_one_rank_per_task_in_one_run_directory(tmp_path: Path) -> None:
    """The sbatch template run by bash with an srun stand-in: 2 CPU ranks meet through SLURM's variables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    data_dir = write_embedded_dataset(
        tmp_path / "data", num_classes=5, train_per_class=8, test_per_class=2, image_size=TINY_IMAGE_SIZE
    )
    env = {
        **os.environ,
        **SLURM_TASK_ENV,
        "SLURM_NTASKS": "2",
        "SLURM_NNODES": "1",
        "SLURM_NODELIST": "localhost",
        "MASTER_PORT": str(free_port()),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "FRUITRES_ROOT": str(tmp_path),
    }
    overrides = [
        *data_overrides(data_dir),
        "trainer.accelerator=cpu",
        "++trainer.fast_dev_run=1",
        "callbacks.progress_bar=null",
    ]
    result = subprocess.run(
        ["bash", str(SLURM_TEMPLATE), *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert run_dir.name == "slurm-4242"
    assert {p.name for p in run_dir.iterdir()} >= {".hydra", "train.log", "train_ddp_process_1.log"}
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("overrides", "mode", "slurm", "refused"),
    [
        (["trainer=ddp_cpu"], RunMode.MULTIRUN, False, True),
        (["trainer=ddp_cpu"], RunMode.RUN, False, False),
        (["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"], RunMode.MULTIRUN, False, False),
        (["trainer=ddp_cpu"], RunMode.MULTIRUN, True, False),
        (["trainer=cpu"], RunMode.MULTIRUN, False, False),
    ],
    ids=[
        "ddp-in-local-sweep",
        "ddp-single-run",
        "ddp_spawn-in-sweep",
        "ddp-in-slurm-sweep",
        "one-process-sweep",
    ],
)
def test_ddp_that_would_rerun_a_local_sweep_in_every_rank_is_refused(
    in_process_trainer_state: pytest.MonkeyPatch,
    tmp_path: Path,
    overrides: list[str],
    mode: RunMode,
    slurm: bool,
    refused: bool,
) -> None:
    if slurm:
        for name, value in {**SLURM_TASK_ENV, "SLURM_NTASKS": "2", "SLURM_NNODES": "1"}.items():
            in_process_trainer_state.setenv(name, value)
    hydra_cfg = compose_config("train", [f"hydra.mode={mode.name}"], return_hydra_config=True)
    HydraConfig.instance().set_config(hydra_cfg)
    trainer = trainer_from_config(overrides, tmp_path)
    if refused:
        with pytest.raises(ValueError, match="trainer.strategy=ddp_spawn"):
            check_launch(trainer)
    else:
        check_launch(trainer)
