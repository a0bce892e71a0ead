"""What a checkpoint carries is a stranger's data: every value is bounded before it is used (one line naming
the file and the field), class names are drawn literally in figures, and a resumed run is refused when its
model or its data is not what the checkpoint recorded. Real checkpoints from a real one-batch training run."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from matplotlib import cbook

from fruitres.checkpoints.loading import load_checkpoint
from fruitres.errors import CheckpointError, ConfigError
from fruitres.reports.figures import confusion_matrix_figure, per_class_bars, to_png
from fruitres.train import train

ONE_BATCH = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false"]


@pytest.fixture(scope="module")
def trained_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the data it trained on, a finished one-batch run's last.ckpt): the data is this module's own copy."""
    root = tmp_path_factory.mktemp("checkpoint-values")
    data = root / "fruits"
    shutil.copytree(tiny_dataset, data)
    run_dir = root / "run"
    train(compose_config("train", [*tiny_train_overrides(data, run_dir), *ONE_BATCH]))
    return data, run_dir / "checkpoints" / "last.ckpt"


def edited(checkpoint: Path, folder: Path, section: str, field: str, value) -> Path:
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    stored[section][field] = value
    path = folder / "edited.ckpt"
    torch.save(stored, path)
    return path


HOSTILE_VALUES = {
    "huge_image_size": ("datamodule_hyper_parameters", "image_size", 10**9),
    "text_image_size": ("datamodule_hyper_parameters", "image_size", "100"),
    "zero_std": ("datamodule_hyper_parameters", "std", [0.0, 0.2, 0.2]),
    "nan_mean": ("datamodule_hyper_parameters", "mean", [math.nan, 0.5, 0.5]),
    "two_channel_std": ("datamodule_hyper_parameters", "std", [0.2, 0.2]),
    "unknown_filter": ("datamodule_hyper_parameters", "interpolation", "os.system"),
    "no_classes": ("hyper_parameters", "class_names", []),
    "empty_class_name": ("hyper_parameters", "class_names", ["", "b", "c", "d", "e"]),
    "number_class_names": ("hyper_parameters", "class_names", [1, 2, 3, 4, 5]),
    "twin_class_names": ("hyper_parameters", "class_names", ["a", "a", "c", "d", "e"]),
    "names_for_other_outputs": ("hyper_parameters", "class_names", ["a", "b"]),
    "unknown_arch": ("hyper_parameters", "arch", "resnet999"),
}


@pytest.mark.parametrize("case", HOSTILE_VALUES)
def test_a_hostile_checkpoint_value_is_refused_in_one_line_naming_the_file_and_the_field(
    case: str, trained_run: tuple[Path, Path], tmp_path: Path
) -> None:
    section, field, value = HOSTILE_VALUES[case]
    path = edited(trained_run[1], tmp_path, section, field, value)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message
    assert f"{section}.{field}" in message


def test_the_checkpoint_a_run_wrote_passes_the_bounds(trained_run: tuple[Path, Path]) -> None:
    loaded = load_checkpoint(trained_run[1])
    assert len(loaded.class_names) == 5 and loaded.image_size == 32


# --- class names drawn literally -------------------------------------------------------------------------

MATH_LOOKING_NAMES = ["a$b$c", "$\\alpha$", "$\\frac$", "cost $5", "plain"]


def test_class_names_with_dollars_render_and_read_as_typed_not_as_math() -> None:
    matrix = torch.eye(len(MATH_LOOKING_NAMES), dtype=torch.long)
    figure = confusion_matrix_figure(matrix, MATH_LOOKING_NAMES, "names")
    labels = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert to_png(figure)  # "$\frac$" as math fails to render: the whole figure would be lost
    for label, name in zip(labels, MATH_LOOKING_NAMES, strict=True):
        assert not cbook.is_math_text(label)  # matplotlib's own test: no math mode
        assert label.replace("\\$", "$") == name  # what matplotlib draws for non-math text
    assert to_png(per_class_bars([0.5] * len(MATH_LOOKING_NAMES), MATH_LOOKING_NAMES, "names", "recall"))


# --- a resumed run is the same run -------------------------------------------------------------------------


def resumed(data: Path, checkpoint: Path, run_dir: Path, *overrides: str) -> None:
    config = [*tiny_train_overrides(data, run_dir), *ONE_BATCH, "trainer.max_epochs=2"]
    train(compose_config("train", [*config, f"ckpt_path={checkpoint}", *overrides]))


def test_resuming_as_another_architecture_is_refused_naming_both(
    trained_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, checkpoint = trained_run
    with pytest.raises(ConfigError, match=r"^model.arch=resnet34 cannot continue .*last.ckpt, a resnet18"):
        resumed(data, checkpoint, tmp_path, "model.arch=resnet34")


def test_resuming_after_images_were_added_to_the_data_is_refused_naming_the_split(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    data = tmp_path / "fruits"
    shutil.copytree(tiny_dataset, data)
    train(compose_config("train", [*tiny_train_overrides(data, tmp_path / "run"), *ONE_BATCH]))
    first_class = min((data / "Training").iterdir())
    shutil.copy(min(first_class.iterdir()), first_class / "added.jpg")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"^the train data in .*fruits differs from what .*last.ckpt was"):
        resumed(data, checkpoint, tmp_path / "run")


def test_resuming_from_another_folder_where_a_relative_data_dir_means_other_files_is_refused(
    trained_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, checkpoint = trained_run
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(data, elsewhere / "fruits")  # same names, sizes and times: only the folder differs
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ConfigError, match=r"^data.data_dir now points at .*elsewhere/fruits, but"):
        resumed(Path("fruits"), checkpoint, tmp_path / "run")


def test_resuming_on_the_same_data_goes_on(trained_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, checkpoint = trained_run
    resumed(data, checkpoint, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
