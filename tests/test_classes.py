"""Choosing classes and shots: `data.classes`, `data.exclude_classes`, `data.train_per_class`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import set_up_datamodule

from fruitres.data.classes import take_per_class
from fruitres.data.datamodule import Fruits360DataModule
from fruitres.errors import ConfigError

TRAIN_PER_CLASS = 40  # tiny_dataset: 40 Training images per class, 10 of them (val_fraction 0.25) validate


def all_names(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "Training").iterdir())


def split_labels(datamodule: Fruits360DataModule, split: str) -> list[str]:
    return [datamodule.class_names[label] for label in datamodule.datasets[split].labels.tolist()]


def test_a_class_list_labels_every_split_with_the_selected_classes_in_sorted_order(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    names = all_names(tiny_dataset)
    chosen = [names[3], names[1]]
    datamodule = set_up_datamodule(tiny_dataset, tmp_path, classes=chosen)

    assert datamodule.class_names == sorted(chosen)
    for split in ("train", "val", "test"):
        labels = datamodule.datasets[split].labels.tolist()
        assert set(labels) == {0, 1}, split
    test_files = {
        Path(str(path)).parent.name
        for path in (tiny_dataset / "Test").rglob("*.jpg")
        if Path(str(path)).parent.name in chosen
    }
    assert set(split_labels(datamodule, "test")) == test_files


def test_exclude_classes_and_a_class_file_select_the_same_classes(tiny_dataset: Path, tmp_path: Path) -> None:
    names = all_names(tiny_dataset)
    listed = tmp_path / "classes.txt"
    listed.write_text("\n".join(names[:3]) + "\n\n")
    from_file = set_up_datamodule(tiny_dataset, tmp_path, classes=str(listed))
    excluded = set_up_datamodule(tiny_dataset, tmp_path, exclude_classes=names[3:])
    assert from_file.class_names == excluded.class_names == names[:3]
    assert split_labels(from_file, "test") == split_labels(excluded, "test")


def test_unknown_class_names_stop_with_one_line_listing_them_and_close_matches(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    name = all_names(tiny_dataset)[0]
    misspelt = name.lower()
    with pytest.raises(
        ConfigError, match=rf"data.classes names 1 class\(es\).*'{misspelt}' \(did you mean '{name}'"
    ):
        set_up_datamodule(tiny_dataset, tmp_path, classes=[misspelt])
    with pytest.raises(ConfigError, match="data.exclude_classes names 1 class"):
        set_up_datamodule(tiny_dataset, tmp_path, exclude_classes=["Durian"])
    with pytest.raises(ConfigError, match="leave no class"):
        set_up_datamodule(tiny_dataset, tmp_path, exclude_classes=all_names(tiny_dataset))
    with pytest.raises(ConfigError, match="data.classes=.*nowhere.txt is not a file"):
        set_up_datamodule(tiny_dataset, tmp_path, classes=str(tmp_path / "nowhere.txt"))


@pytest.mark.parametrize("shots", [1, 5, 20])
def test_train_per_class_keeps_n_per_class_and_leaves_validation_unchanged(
    shots: int, tiny_dataset: Path, tmp_path: Path
) -> None:
    full = set_up_datamodule(tiny_dataset, tmp_path, val_fraction=0.25)
    few = set_up_datamodule(tiny_dataset, tmp_path, val_fraction=0.25, train_per_class=shots)
    again = set_up_datamodule(tiny_dataset, tmp_path, val_fraction=0.25, train_per_class=shots)

    np.testing.assert_array_equal(few.datasets["val"].rows, full.datasets["val"].rows)
    np.testing.assert_array_equal(few.datasets["train"].rows, again.datasets["train"].rows)
    assert set(few.datasets["train"].rows) <= set(full.datasets["train"].rows)
    counts = np.bincount(few.datasets["train"].labels.numpy(), minlength=5)
    assert counts.tolist() == [shots] * 5


def test_train_per_class_above_what_there_is_keeps_all_and_says_so_once(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = set_up_datamodule(tiny_dataset, tmp_path)
    caplog.clear()
    more = set_up_datamodule(tiny_dataset, tmp_path, train_per_class=10 * TRAIN_PER_CLASS)
    np.testing.assert_array_equal(more.datasets["train"].rows, full.datasets["train"].rows)
    notices = [r for r in caplog.records if "have fewer training images" in r.getMessage()]
    assert len(notices) == 1


def test_take_per_class_is_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(4), [3, 10, 10, 7])
    taken = take_per_class(labels, 5, seed=1)
    assert np.bincount(labels[taken]).tolist() == [3, 5, 5, 5]
    np.testing.assert_array_equal(taken, take_per_class(labels, 5, seed=1))
    assert not np.array_equal(taken, take_per_class(labels, 5, seed=2))
