"""`fruitres.data.check --near-duplicates`: Test frames with a near twin in Training/, by perceptual hash."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image, ImageEnhance

from fruitres.data.check import check_dataset, main
from fruitres.data.embedded import write_embedded_dataset


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
