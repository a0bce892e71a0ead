"""Shared fixtures: real Hydra configs shrunk to run in seconds on generated data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig

from fruitres.data.datamodule import Fruits360DataModule
from fruitres.data.embedded import write_embedded_dataset
from fruitres.run.compose import compose_config
from fruitres.run.devices import fastest_precision
from fruitres.run.installation import CONF_DIR
from fruitres.run.third_party_warnings import UNACTIONABLE_WARNINGS


def pytest_configure(config: pytest.Config) -> None:
    """Tests silence the library warnings every entry point silences (run/third_party_warnings.py)."""
    for message, category, module, _why in UNACTIONABLE_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}:{module}")


TINY_IMAGE_SIZE = 32
CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_tile"}  # as /proc/cpuinfo and lscpu spell them


def cpu_flags() -> set[str] | None:
    """This machine's CPU flags as lscpu shows them; None where /proc/cpuinfo is absent (not Linux)."""
    if not CPUINFO.is_file():
        return None
    for line in CPUINFO.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def expected_cpu_precision() -> str:
    """The precision a CPU run of an experiment asking for the fastest gets on this machine: bf16 autocast
    where the CPU runs bf16 natively (AVX-512 BF16 or AMX), float32 elsewhere."""
    flags = cpu_flags()
    if flags is None:  # no independent reading of the flags: the rule's own probe
        return fastest_precision("cpu")
    return "bf16-mixed" if flags & NATIVE_BF16_FLAGS else "32-true"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Fruits-360-shaped tree: 5 classes, small images, shared by the whole session."""
    root = tmp_path_factory.mktemp("tiny-fruits")
    return write_embedded_dataset(
        root, num_classes=5, train_per_class=40, test_per_class=10, image_size=TINY_IMAGE_SIZE, seed=0
    )


def set_up_datamodule(root: Path, tmp_path: Path, **overrides) -> Fruits360DataModule:
    """A set-up data module of `root` at the tests' image size, caching under `tmp_path`."""
    kwargs = dict(
        data_dir=str(root), cache_dir=str(tmp_path / "cache"), image_size=32, batch_size=8, num_workers=0
    )
    datamodule = Fruits360DataModule(**(kwargs | overrides))
    datamodule.setup()
    return datamodule


def tiny_run_overrides(data_dir: Path) -> list[str]:
    """Overrides that make a real training run fast: tiny images, CPU, no progress bar."""
    return [
        f"data.data_dir={data_dir}",
        f"data.image_size={TINY_IMAGE_SIZE}",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


def tiny_train_overrides(data_dir: Path, run_dir: Path) -> list[str]:
    """The fast overrides for one epoch, writing into `run_dir` (for configs composed in the test)."""
    paths = [f"paths.root_dir={run_dir}", f"paths.output_dir={run_dir}"]
    return [*paths, "trainer.max_epochs=1", *tiny_run_overrides(data_dir)]


@pytest.fixture
def train_config(tiny_dataset: Path, tmp_path: Path) -> DictConfig:
    """The default training config, shrunk, writing into this test's tmp_path."""
    return compose_config("train", tiny_train_overrides(tiny_dataset, tmp_path))


@dataclass(frozen=True)
class TrainedSweep:
    """A finished two-job sweep: its folder, the job run dirs, and the best checkpoint of job 0."""

    sweep_dir: Path
    runs: list[Path]

    @property
    def run_dir(self) -> Path:
        return self.runs[0]

    @property
    def checkpoint(self) -> Path:
        """The checkpoint the run tested: the best one on val/acc (not last.ckpt)."""
        (best,) = (self.run_dir / "checkpoints").glob("epoch_*.ckpt")
        return best


@pytest.fixture(scope="session")
def trained_sweep(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedSweep]:
    """A real `python -m fruitres.train -m` sweep on the tiny dataset (two learning rates, 2 epochs each),
    trained once per session for the eval, predict, export, dashboard and notebook tests."""
    root = tmp_path_factory.mktemp("sweep-root")
    command = [
        sys.executable,
        "-m",
        "fruitres.train",
        "-m",
        f"data.data_dir={tiny_dataset}",
        f"data.image_size={TINY_IMAGE_SIZE}",
        "data.batch_size=16",
        "data.num_workers=0",
        "data.augment=null",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "callbacks.figures.max_images=16",
        "model.optimizer.lr=2e-3,5e-4",
    ]
    env = {**os.environ, "FRUITRES_ROOT": str(root)}
    result = subprocess.run(
        command, cwd=CONF_DIR.parent, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (root / "logs" / "train" / "multiruns").iterdir()
    runs = sorted(path for path in sweep_dir.iterdir() if (path / "checkpoints").is_dir())
    yield TrainedSweep(sweep_dir=sweep_dir, runs=runs)
    shutil.rmtree(root, ignore_errors=True)  # a module's runs hold GBs of checkpoints: free the disk
