"""fruitres.data.check on tiny trees with planted problems."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fruitres.data.check import check_dataset, main

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[1]


def jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> Path:
    """Write a small solid-colour JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=90)
    return path


def make_clean_tree(root: Path) -> Path:
    """Training/{Apple,Banana} x 2 and Test/{Apple,Banana} x 1, all distinct 8x8 RGB JPEGs."""
    for c, name in enumerate(("Apple", "Banana")):
        for i in range(2):
            jpeg(root / "Training" / name / f"{i}.jpg", (100 * c, 60 * i, 10))
        jpeg(root / "Test" / name / "0.jpg", (100 * c, 200, 90))
    return root


def make_planted_tree(root: Path) -> Path:
    """A trainable tree with one of each problem the checker should report."""
    make_clean_tree(root)
    shutil.copy(root / "Training/Apple/0.jpg", root / "Test/Apple/dup.jpg")  # Training image copied into Test
    whole = (root / "Training/Apple/1.jpg").read_bytes()
    (root / "Test/Apple/truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "Test/Apple/empty.jpg").write_bytes(b"")
    (root / "Test/Banana/notes.txt").write_text("ignored\n")
    (root / "Test/Banana/.DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "Training/Banana/Thumbs.db").write_bytes(b"\0")
    Image.new("L", (8, 8), 128).save(root / "Training/Banana/gray.png")
    jpeg(root / "Training/Banana/odd.jpg", (1, 2, 3), size=(12, 9))
    jpeg(root / "Training/Kiwi/0.jpg", (0, 255, 0))  # a class only in Training
    return root


def test_report_finds_each_planted_problem(tmp_path: Path) -> None:
    report = check_dataset(make_planted_tree(tmp_path / "fruits"))
    json.dumps(report)  # serialisable

    assert report["trainable"] and report["errors"] == []
    assert report["splits"]["Training"]["classes"] == 3
    assert report["splits"]["Training"]["per_class"] == {"Apple": 2, "Banana": 4, "Kiwi": 1}
    assert report["splits"]["Test"]["per_class"] == {"Apple": 4, "Banana": 1}
    assert report["splits"]["Test"]["readable"] == 3
    assert report["only_in_training"] == ["Kiwi"] and report["only_in_test"] == []
    assert report["empty_files"] == ["Test/Apple/empty.jpg"]
    assert [u["path"] for u in report["unreadable"]] == ["Test/Apple/truncated.jpg"]
    assert sorted(report["ignored"]) == [
        "Test/Banana/.DS_Store",
        "Test/Banana/notes.txt",
        "Training/Banana/Thumbs.db",
    ]
    formats = {(f["width"], f["height"], f["mode"]): f["count"] for f in report["image_formats"]}
    assert formats == {(8, 8, "RGB"): 8, (8, 8, "L"): 1, (12, 9, "RGB"): 1}

    overlap = report["overlap"]
    assert overlap["test_images"] == 4  # the empty file is not counted, the truncated one is
    assert overlap["in_training"] == 1 and overlap["percent"] == 25.0 and overlap["cross_class"] == 0
    assert overlap["pairs"] == [
        {"test": "Test/Apple/dup.jpg", "training": ["Training/Apple/0.jpg"], "same_class": True}
    ]
    warnings = " | ".join(report["warnings"])
    for fragment in (
        "only in Training/, never tested (1): Kiwi",
        "1 image files are empty",
        "cannot be decoded",
        "3 size/mode",
        "25.0%",
        "1 classes have one readable Training image, so none of it validates: Kiwi",
    ):
        assert fragment in warnings
    assert report["single_image_classes"] == ["Kiwi"] and report["relabelled_copies"] == []


def test_identical_training_images_under_two_classes_are_flagged_as_label_noise(tmp_path: Path) -> None:
    root = make_clean_tree(tmp_path / "fruits")
    shutil.copy(root / "Training/Apple/0.jpg", root / "Training/Banana/also_apple.jpg")
    report = check_dataset(root)
    assert report["trainable"]
    assert report["relabelled_copies"] == [["Training/Apple/0.jpg", "Training/Banana/also_apple.jpg"]]
    assert any(
        "identical images sit in several Training classes (label noise)" in w for w in report["warnings"]
    )


def test_same_bytes_under_another_label_is_flagged(tmp_path: Path) -> None:
    root = make_clean_tree(tmp_path / "fruits")
    shutil.copy(root / "Training/Apple/0.jpg", root / "Test/Banana/apple.jpg")
    report = check_dataset(root)
    assert report["trainable"]
    assert report["overlap"]["cross_class"] == 1
    assert any("different labels" in w for w in report["warnings"])


def _empty_class(root: Path) -> None:
    for p in (root / "Test/Banana").iterdir():
        p.unlink()
    (root / "Test/Banana/.DS_Store").write_bytes(b"x")


def _unknown_test_class(root: Path) -> None:
    jpeg(root / "Test/Cherry/0.jpg", (9, 9, 9))


def _no_classes(root: Path) -> None:
    shutil.rmtree(root / "Training")
    (root / "Training").mkdir()


def _one_class(root: Path) -> None:
    for split in ("Training", "Test"):
        shutil.rmtree(root / split / "Banana")


def _all_unreadable(root: Path) -> None:
    for p in root.rglob("*.jpg"):
        p.write_bytes(b"not a jpeg")


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (_empty_class, "Test/Banana holds no images"),
        (lambda root: (root / "test").mkdir(), "(Test, test); choose one with data.splits.test=Test"),
        (_unknown_test_class, "Test/ has classes that Training/ lacks: Cherry"),
        (_no_classes, "Training has no class folders"),
        (_one_class, "has one class folder (Apple); training needs at least two"),
        (_all_unreadable, "none of the 6 images can be opened"),
    ],
    ids=["empty-class", "ambiguous-test", "unknown-test-class", "no-classes", "one-class", "all-unreadable"],
)
def test_untrainable_trees_exit_1(tmp_path: Path, capsys, break_it, message: str) -> None:
    root = make_clean_tree(tmp_path / "fruits")
    break_it(root)
    report = check_dataset(root)
    assert not report["trainable"]
    assert any(message in e for e in report["errors"]), report["errors"]
    assert main([str(root)]) == 1
    assert "NOT trainable" in capsys.readouterr().out


def test_missing_split_points_at_a_nested_dataset(tmp_path: Path) -> None:
    make_clean_tree(tmp_path / "fruits-360_dataset_100x100" / "fruits-360")
    report = check_dataset(tmp_path)
    assert not report["trainable"]
    assert (
        f"set data.data_dir={(tmp_path / 'fruits-360_dataset_100x100' / 'fruits-360').resolve()}"
        in report["errors"][0]
    )


def test_table_output(tmp_path: Path, capsys) -> None:
    root = make_planted_tree(tmp_path / "fruits")
    assert main([str(root), "--per-class", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    for fragment in (
        "Kiwi",
        "Test/Apple/truncated.jpg",
        "Test/Apple/empty.jpg",
        "Test/Banana/notes.txt",
        "25.0%",
    ):
        assert fragment in out
    assert "Verdict: trainable" in out


def test_cli_subprocess_json(tmp_path: Path) -> None:
    root = make_planted_tree(tmp_path / "fruits")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "fruitres.data.check"]
    done = subprocess.run(
        [*command, str(root), "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["trainable"] and report["overlap"]["in_training"] == 1

    (root / "test").mkdir()
    done = subprocess.run([*command, str(root)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "data.splits.test=Test" in done.stdout and "Traceback" not in done.stderr
    done = subprocess.run([*command, str(root), "--test", "Test"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout


def test_a_tree_without_a_test_folder_is_trainable_with_a_warning_naming_the_keys(tmp_path: Path) -> None:
    root = make_clean_tree(tmp_path / "fruits")
    shutil.move(root / "Training", root / "train")
    shutil.move(root / "Test", root / "valid")
    report = check_dataset(root)
    assert report["trainable"], report["errors"]
    assert report["split_folders"] == {"train": "train", "val": "valid", "test": None}
    assert list(report["splits"]) == ["train", "valid"]
    assert any("data.test_fraction" in warning and "test=false" in warning for warning in report["warnings"])


def test_report_gives_the_size_distribution_and_the_image_cache_size(tmp_path: Path) -> None:
    root = make_clean_tree(tmp_path / "fruits")  # six 8x8 images
    jpeg(root / "Training/Apple/wide.jpg", (200, 10, 10), size=(40, 20))
    jpeg(root / "Test/Banana/tall.jpg", (10, 10, 200), size=(15, 30))
    report = check_dataset(root, image_size=64)
    assert report["image_sizes"] == {
        "images": 8,
        "width": [8, 8, 40],
        "height": [8, 8, 30],
        "aspect_ratio": [0.5, 2.0],
        "not_square": 2,
    }
    assert report["cache"] == {"image_size": 64, "bytes": 8 * 64 * 64 * 3}
