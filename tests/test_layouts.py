"""Split folders in every usual layout (data.splits): found, given, ambiguous or missing; and the counts a
real training run records for each split's folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from cli import TINY_CLI, only_run_dir, run_train
from conftest import set_up_datamodule
from PIL import Image

from fruitres.data.folders import DatasetLayoutError
from fruitres.data.splits import SplitFolders, resolve_split_folders
from fruitres.data.test_set import CheckpointTestSet
from fruitres.errors import ConfigError

CLASSES = ("Apple", "Banana")


def write_tree(root: Path, images_per_class: dict[str, int]) -> Path:
    """Class folders of small distinct images under each named split folder ('.' = `root` itself)."""
    for folder, count in images_per_class.items():
        for c, name in enumerate(CLASSES):
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                colour = (120 * c, (37 * i) % 256, (11 * len(folder) + 5 * i) % 256)
                Image.new("RGB", (16, 16), colour).save(root / folder / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("folders", "expected"),
    [
        (("train", "val", "test"), SplitFolders("train", "val", "test")),
        (("train", "valid", "test"), SplitFolders("train", "valid", "test")),
        (("Training", "Test"), SplitFolders("Training", None, "Test")),
        (("Training", "Validation", "Test"), SplitFolders("Training", "Validation", "Test")),
        (("TRAIN", "Val"), SplitFolders("TRAIN", "Val", None)),
        (("Training", "Test", "test-multiple_fruits"), SplitFolders("Training", None, "Test")),
        (CLASSES, SplitFolders(".", None, None)),  # a single folder of class folders
    ],
)
def test_split_folders_are_found_among_the_usual_spellings(
    tmp_path: Path, folders: tuple[str, ...], expected: SplitFolders
) -> None:
    for name in folders:
        (tmp_path / name).mkdir()
    assert resolve_split_folders(tmp_path, None) == expected


def test_given_split_folders_win_and_false_drops_one(tmp_path: Path) -> None:
    for name in ("fit", "holdout", "Validation"):
        (tmp_path / name).mkdir()
    given = {"train": "fit", "val": False, "test": "holdout"}
    assert resolve_split_folders(tmp_path, given) == SplitFolders("fit", None, "holdout")


def test_ambiguous_folders_are_one_line_naming_the_choice(tmp_path: Path) -> None:
    for name in ("Training", "Test", "test"):
        (tmp_path / name).mkdir()
    with pytest.raises(DatasetLayoutError, match=r"\(Test, test\); choose one with data\.splits\.test=Test$"):
        resolve_split_folders(tmp_path, None)


def test_split_folders_without_a_training_one_name_the_key(tmp_path: Path) -> None:
    for name in ("val", "test"):
        (tmp_path / name).mkdir()
    with pytest.raises(DatasetLayoutError, match=r"no training folder .*data\.splits\.train=<folder>"):
        resolve_split_folders(tmp_path, None)


def test_a_given_folder_that_is_missing_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"data\.splits\.test=Tset: .* is not a folder"):
        resolve_split_folders(tmp_path, {"test": "Tset"})
    with pytest.raises(ConfigError, match=r"data\.splits has unknown key\(s\) validation"):
        resolve_split_folders(tmp_path, {"validation": "val"})


def test_no_test_folder_and_no_test_fraction_is_one_line_naming_both(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "data", {"train": 4, "val": 2})
    with pytest.raises(DatasetLayoutError, match=r"no test folder .*data\.test_fraction=0\.1.*test=false$"):
        set_up_datamodule(root, tmp_path).prepare_data()


def test_without_a_test_folder_and_test_false_there_is_no_test_set(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "data", {"train": 4, "val": 2})
    datamodule = set_up_datamodule(root, tmp_path, test_required=False)
    assert set(datamodule.datasets) == {"train", "val"}


def test_a_validation_folder_is_the_validation_set_and_val_fraction_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_tree(tmp_path / "data", {"train": 6, "valid": 3, "test": 2})
    with caplog.at_level(logging.WARNING):
        datamodule = set_up_datamodule(root, tmp_path, val_fraction=0.5)
        datamodule.prepare_data()
    assert {split: len(d) for split, d in datamodule.datasets.items()} == {"train": 12, "val": 6, "test": 4}
    assert datamodule.split_sources == {"train": "train/", "val": "valid/", "test": "test/"}
    assert "data.val_fraction=0.5 is ignored: valid/ is the validation set" in caplog.text


def test_a_single_folder_gives_seeded_stratified_test_and_validation_shares(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "data", {".": 10})
    datamodule = set_up_datamodule(root, tmp_path, test_fraction=0.2, val_fraction=0.25)
    counts = {split: len(d) for split, d in datamodule.datasets.items()}
    assert counts == {"train": 12, "val": 4, "test": 4}  # per class: 2 test, then 2 of the 8 left for val
    rows = [set(datamodule.datasets[split].rows.tolist()) for split in ("train", "val", "test")]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    again = set_up_datamodule(root, tmp_path, test_fraction=0.2, val_fraction=0.25)
    assert set(again.datasets["test"].rows.tolist()) == rows[2]
    assert datamodule.split_sources["test"] == "./ (data.test_fraction=0.2)"


def test_a_test_fraction_beside_a_test_folder_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "data", {"Training": 4, "Test": 2})
    with pytest.raises(ConfigError, match=r"data\.test_fraction=0\.2 and the test folder Test/ both"):
        set_up_datamodule(root, tmp_path, test_fraction=0.2).prepare_data()


def recorded_splits(root: Path, data_dir: Path, *overrides: str) -> dict[str, dict]:
    """The data splits a real one-epoch training run on `data_dir` records in its run_record.json."""
    status, output = run_train(
        [f"data.data_dir={data_dir}", "trainer.max_epochs=1", *TINY_CLI, "data.batch_size=4", *overrides],
        root,
    )
    assert status == 0, output[-3000:]
    record = json.loads((only_run_dir(root) / "run_record.json").read_text())
    return {
        split: {"folder": s["folder"], "images": s["images"]}
        for split, s in record["provenance"]["data"]["splits"].items()
    }


@pytest.mark.slow
def test_real_runs_record_which_folder_fed_each_split(tmp_path: Path) -> None:
    three = write_tree(tmp_path / "three", {"train": 6, "valid": 3, "test": 2})
    assert recorded_splits(tmp_path / "run1", three) == {
        "train": {"folder": "train/", "images": 12},
        "val": {"folder": "valid/", "images": 6},
        "test": {"folder": "test/", "images": 4},
    }
    two = write_tree(tmp_path / "two", {"Training": 10, "Validation": 3})
    assert recorded_splits(tmp_path / "run2", two, "data.test_fraction=0.2") == {
        "train": {"folder": "Training/", "images": 16},
        "val": {"folder": "Validation/", "images": 6},
        "test": {"folder": "Training/ (data.test_fraction=0.2)", "images": 4},
    }


def test_eval_of_a_test_fraction_checkpoint_tests_the_same_held_out_images(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "data", {"train": 10, "val": 2})
    trained = set_up_datamodule(root, tmp_path, test_fraction=0.2)
    test_set = CheckpointTestSet(trained.class_names, **dict(trained.hparams))
    test_set.prepare_data()
    test_set.setup()
    assert test_set.image_paths("test") == trained.image_paths("test")
    assert len(test_set.image_paths("test")) == 4


def test_eval_finds_a_test_folder_without_a_training_folder(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "data", {"train": 4, "valid": 2, "test": 2})
    trained = set_up_datamodule(root, tmp_path)
    only_test = write_tree(tmp_path / "elsewhere", {"test": 3})
    hparams = dict(trained.hparams) | {"data_dir": str(only_test)}
    test_set = CheckpointTestSet(trained.class_names, **hparams)
    test_set.prepare_data()
    test_set.setup()
    assert len(test_set.datasets["test"]) == 6 and test_set.split_sources == {"test": "test/"}
