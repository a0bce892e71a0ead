"""`fruitres.data.check --near-duplicates`: Test frames with a near twin in Training/, by perceptual hash."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import set_up_datamodule
from PIL import Image, ImageEnhance

from fruitres.data.check import check_dataset, main
from fruitres.data.embedded import write_embedded_dataset
from fruitres.data.groups import near_twin_groups, stratified_group_split
from fruitres.data.near_duplicates import HASH_CACHE, has_near_twin, hashes_of
from fruitres.errors import ConfigError


def test_a_slightly_changed_copy_of_a_training_frame_is_a_near_twin_and_other_images_are_not(
    tmp_path: Path,
) -> None:
    root = write_embedded_dataset(
        tmp_path / "data", num_classes=3, train_per_class=4, test_per_class=2, image_size=48, seed=0
    )
    baseline = check_dataset(root, near_distance=4)["near_duplicates"]

    class_name = sorted(p.name for p in (root / "Training").iterdir())[0]
    frame = sorted((root / "Training" / class_name).iterdir())[0]
    twin = root / "Test" / class_name / "twin.jpg"  # the next frame: a little brighter, recompressed
    ImageEnhance.Brightness(Image.open(frame)).enhance(1.03).save(twin, quality=70)
    shutil.copy(frame, root / "Test" / class_name / "copy.jpg")  # an exact copy is a twin at 0 bits

    near = check_dataset(root, near_distance=4)["near_duplicates"]
    assert near["test_images"] == baseline["test_images"] + 2
    assert near["with_near_twin"] == baseline["with_near_twin"] + 2
    found = {pair["test"]: pair for pair in near["pairs"]}
    assert found[f"Test/{class_name}/copy.jpg"]["distance"] == 0
    assert found[f"Test/{class_name}/twin.jpg"]["training"] == f"Training/{class_name}/{frame.name}"
    assert sum(near["by_distance"].values()) == near["with_near_twin"]
    assert near["percent"] == round(100 * near["with_near_twin"] / near["test_images"], 2)

    other_class = sorted(p.name for p in (root / "Test").iterdir())[1]  # twins count within a class only
    shutil.move(twin, root / "Test" / other_class / "twin.jpg")
    moved = check_dataset(root, near_distance=4)["near_duplicates"]
    assert f"Test/{other_class}/twin.jpg" not in {pair["test"] for pair in moved["pairs"]}


def test_the_check_command_prints_the_near_duplicate_share(tmp_path: Path, capsys) -> None:
    root = write_embedded_dataset(
        tmp_path / "data", num_classes=2, train_per_class=3, test_per_class=2, image_size=48, seed=0
    )
    assert main([str(root), "--near-duplicates"]) == 0
    assert "near duplicates:" in capsys.readouterr().out
    assert "near_duplicates" not in check_dataset(root)  # only when asked


def test_novel_test_images_follow_the_check_commands_rule_and_hashes_are_cached(tmp_path: Path) -> None:
    root = write_embedded_dataset(
        tmp_path / "data", num_classes=2, train_per_class=4, test_per_class=3, image_size=48, seed=0
    )
    class_name = sorted(p.name for p in (root / "Training").iterdir())[0]
    frame = sorted((root / "Training" / class_name).iterdir())[0]
    shutil.copy(frame, root / "Test" / class_name / "copy.jpg")
    train = {d.name: sorted(d.iterdir()) for d in (root / "Training").iterdir()}
    test = [(path, d.name) for d in sorted((root / "Test").iterdir()) for path in sorted(d.iterdir())]
    every_file = [p for paths in train.values() for p in paths] + [p for p, _ in test]

    cache = tmp_path / "cache"
    hashes = hashes_of(every_file, cache)
    twin = has_near_twin(test, train, hashes, max_distance=4)
    near = check_dataset(root, near_distance=4)["near_duplicates"]
    assert {f"Test/{path.parent.name}/{path.name}" for (path, _), t in zip(test, twin, strict=True) if t} == {
        pair["test"] for pair in near["pairs"]
    }
    assert twin[[path.name for path, _ in test].index("copy.jpg")]

    stat = frame.stat()
    (cache / HASH_CACHE).write_text(json.dumps({str(frame): [stat.st_size, stat.st_mtime_ns, 7]}))
    assert hashes_of([frame], cache)[frame] == 7  # read from the cache, not decoded again
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed file is hashed again
    assert hashes_of([frame], cache)[frame] == hashes[frame]


def test_frames_chain_into_groups_within_a_class_only() -> None:
    base = 0
    hashes = [base, base ^ 0b111, base ^ 0b111111, base ^ (2**64 - 1), base, None]
    labels = np.array([0, 0, 0, 0, 1, 0])
    groups = near_twin_groups(hashes, labels, max_distance=4)
    # 0-1 differ by 3 bits, 1-2 by 3: a chain, though 0-2 differ by 6; 3 is far; 4 is another class
    assert groups[0] == groups[1] == groups[2]
    assert len({groups[0], groups[3], groups[4], groups[5]}) == 4


def test_a_group_split_keeps_every_group_on_one_side_and_holds_out_about_the_fraction() -> None:
    labels = np.repeat([0, 1], 40)
    groups = np.repeat(np.arange(16), 5)  # 8 videos of 5 frames per class
    train, val = stratified_group_split(labels, groups, val_fraction=0.25, seed=3)
    assert not set(groups[train]) & set(groups[val])
    assert sorted([*train, *val]) == list(range(80))
    for label in (0, 1):
        assert (labels[val] == label).sum() == 10  # 2 of its 8 groups
    again = stratified_group_split(labels, groups, val_fraction=0.25, seed=3)
    assert np.array_equal(again[1], val)
    single = stratified_group_split(np.zeros(5, dtype=int), np.zeros(5, dtype=int), 0.5, seed=0)
    assert len(single[1]) == 0  # a class of one group stays in training


def test_by_group_validation_split_in_the_data_module(tiny_dataset: Path, tmp_path: Path) -> None:
    datamodule = set_up_datamodule(tiny_dataset, tmp_path, val_split="by_group")
    train_paths, val_paths = datamodule.image_paths("train"), datamodule.image_paths("val")
    hashes = hashes_of(train_paths + val_paths, tmp_path / "cache")
    labels = np.array([p.parent.name for p in train_paths + val_paths])
    groups = near_twin_groups([hashes[p] for p in train_paths + val_paths], labels)
    assert not set(groups[: len(train_paths)]) & set(groups[len(train_paths) :])
    assert len(val_paths) > 0
    with pytest.raises(ConfigError, match="data.val_split=by_video"):
        set_up_datamodule(tiny_dataset, tmp_path / "other", val_split="by_video")
