"""Every config the project ships composes and instantiates with the real Hydra and Lightning."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from conftest import CONF_DIR, compose_config, tiny_train_overrides
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fruitres.run import devices
from fruitres.run.instantiate import instantiate_callbacks, instantiate_loggers
from fruitres.run.precision_probe import MEASURED, candidates, settle_precision

EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
DEBUG_MODES = sorted(path.stem for path in (CONF_DIR / "debug").glob("*.yaml"))


@pytest.fixture(scope="module")
def resnet_state_dicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Local weights files, standing in for the downloads that pretrained experiments ask for."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for arch in ("resnet18", "resnet34", "resnet50"):
        files[arch] = folder / f"{arch}.pth"
        torch.save(torchvision.models.get_model(arch).state_dict(), files[arch])
    return files


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(
    experiment: str, tiny_dataset: Path, tmp_path: Path, resnet_state_dicts: dict[str, Path]
) -> None:
    cfg = compose_config("train", [f"experiment={experiment}", *tiny_train_overrides(tiny_dataset, tmp_path)])
    assert cfg.model.frozen_stages in range(6)
    datamodule = instantiate(cfg.data)
    weights = {"weights_path": str(resnet_state_dicts[cfg.model.arch])} if cfg.model.weights else {}
    model = instantiate(
        cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names, **weights
    )
    settle_precision(cfg.trainer, model, datamodule)  # as train does: trainer.precision=fastest timed
    trainer = instantiate(cfg.trainer, callbacks=instantiate_callbacks(cfg), logger=instantiate_loggers(cfg))
    assert isinstance(trainer, L.Trainer)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("debug", DEBUG_MODES)
def test_debug_modes_compose(debug: str, tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"debug={debug}", *tiny_train_overrides(tiny_dataset, tmp_path)])
    trainer = instantiate(cfg.trainer, callbacks=instantiate_callbacks(cfg), logger=False)
    assert isinstance(trainer, L.Trainer)


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("model=resnet34", "model.arch", "resnet34"),
        ("model=resnet50", "model.arch", "resnet50"),
        ("trainer=cpu", "trainer.accelerator", "cpu"),
        ("logger=csv", "logger.csv._target_", "lightning.pytorch.loggers.CSVLogger"),
        ("model/optimizer=sgd", "model.optimizer._target_", "torch.optim.SGD"),
        (
            "model/scheduler=cosine",
            "model.scheduler._target_",
            "fruitres.models.schedules.cosine_with_warmup",
        ),
    ],
)
def test_config_groups_swap_on_the_command_line(
    override: str, key: str, expected: str, tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = compose_config("train", [override, *tiny_train_overrides(tiny_dataset, tmp_path)])
    assert OmegaConf.select(cfg, key) == expected


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_no_experiment_asks_for_bf16_on_a_cpu_without_native_bf16(
    experiment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)  # as on a CPU without AVX-512 BF16/AMX
    cfg = compose_config("train", [f"experiment={experiment}", "trainer=cpu", f"paths.output_dir={tmp_path}"])
    precision = OmegaConf.to_container(cfg.trainer, resolve=True)["precision"]
    assert precision == "32-true" or (precision == MEASURED and candidates("cpu") == ("32-true",))
