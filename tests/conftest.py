"""Shared fixtures: real Hydra configs shrunk to run in seconds on generated data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from fruitres.data.synthetic import write_synthetic_fruits

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TINY_IMAGE_SIZE = 32


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Fruits-360-shaped tree: 5 classes, small images, shared by the whole session."""
    root = tmp_path_factory.mktemp("tiny-fruits")
    return write_synthetic_fruits(
        root, num_classes=5, train_per_class=40, test_per_class=10, image_size=TINY_IMAGE_SIZE, seed=0
    )


def compose_config(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])


def tiny_train_overrides(data_dir: Path, run_dir: Path) -> list[str]:
    """Overrides that make the real training config fast: tiny images, CPU, no progress bar."""
    return [
        f"data.data_dir={data_dir}",
        f"data.image_size={TINY_IMAGE_SIZE}",
        f"paths.root_dir={run_dir}",
        f"paths.output_dir={run_dir}",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


@pytest.fixture
def train_config(tiny_dataset: Path, tmp_path: Path) -> DictConfig:
    """The default training config, shrunk, writing into this test's tmp_path."""
    return compose_config("train", tiny_train_overrides(tiny_dataset, tmp_path))
