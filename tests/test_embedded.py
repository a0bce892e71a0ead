"""Tests of the procedurally drawn Fruits-360-shaped data set."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fruitres.data import embedded
from fruitres.data.embedded import MARKER_NAME, MAX_CLASSES, embedded_class_names, write_embedded_dataset

SMALL = {"num_classes": 4, "train_per_class": 6, "test_per_class": 3, "image_size": 32}


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every JPEG under root, keyed by its path relative to root."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.jpg"))
    }


def file_stamps(root: Path) -> dict[Path, tuple[int, int]]:
    """Inode and modification time of root and everything under it: any rewrite changes one of them."""
    return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in [root, *root.rglob("*")]}


def load_split(root: Path, split: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All images of a split as floats in 0..1, with their class indices."""
    images, labels = [], []
    for label, name in enumerate(names):
        for path in sorted((root / split / name).glob("*.jpg")):
            images.append(np.asarray(Image.open(path), dtype=np.float64) / 255)
            labels.append(label)
    return np.stack(images), np.array(labels)


def centroid_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels) -> float:
    """Test accuracy of a nearest-class-centroid classifier on feature vectors."""
    centroids = np.stack([train[train_labels == c].mean(axis=0) for c in np.unique(train_labels)])
    distances = ((test[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    return float((distances.argmin(axis=1) == test_labels).mean())


def object_mean_colours(images: np.ndarray) -> np.ndarray:
    """Mean RGB of each image's non-white pixels: the fruit's average colour, whatever its size."""
    fruit = (images.min(axis=-1) < 0.85)[..., None]
    return (images * fruit).sum(axis=(1, 2)) / fruit.sum(axis=(1, 2))


def colour_histograms(images: np.ndarray) -> np.ndarray:
    """Normalised 4x4x4 RGB histograms of the non-white pixels: colour and texture, whatever the pose."""
    levels = np.minimum((images * 4).astype(int), 3)
    bins = (levels[..., 0] * 16 + levels[..., 1] * 4 + levels[..., 2]).reshape(len(images), -1)
    white = 63
    counts = np.stack([np.bincount(row[row != white], minlength=64) for row in bins]).astype(np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


def look_alike_pairs(num_classes: int) -> list[tuple[str, str]]:
    """Pairs of classes of one colour that differ in shape alone or in texture alone."""
    return [
        (a.name, b.name)
        for a, b in combinations(embedded._class_specs(num_classes), 2)
        if a.colour == b.colour and (a.shape == b.shape) != (a.texture == b.texture)
    ]


def test_every_default_class_has_a_look_alike():
    # the confusion matrix of the default run needs classes to confuse: one colour, one difference
    pairs = look_alike_pairs(10)
    assert {name for pair in pairs for name in pair} == set(embedded_class_names(10))
    differences = {"shape" if a.split()[0] != b.split()[0] else "texture" for a, b in pairs}
    assert differences == {"shape", "texture"}


def test_class_names_are_unique_multi_word_and_stable():
    names = embedded_class_names(60)
    assert len(set(names)) == 60
    assert names == sorted(names)
    assert all(" " in name and name == name.strip() for name in names)
    assert set(embedded_class_names(10)) <= set(names)
    assert len(set(embedded_class_names(MAX_CLASSES))) == MAX_CLASSES


@pytest.mark.parametrize("num_classes", [0, MAX_CLASSES + 1])
def test_class_count_out_of_range_is_refused(tmp_path, num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        write_embedded_dataset(tmp_path / "fruits", num_classes=num_classes)


def test_layout_matches_fruits_360(tmp_path):
    root = write_embedded_dataset(tmp_path / "fruits", num_classes=4, train_per_class=5, test_per_class=2)

    assert root == tmp_path / "fruits"
    names = embedded_class_names(4)
    for split, count in (("Training", 5), ("Test", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == names
        for name in names:
            paths = sorted((root / split / name).iterdir())
            assert len(paths) == count
            for path in paths:
                with Image.open(path) as image:
                    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (100, 100))
                    pixels = np.asarray(image)
                corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
                assert corners.min() > 225, f"{path} corners are not white: {corners}"
                assert pixels.min() < 150, f"{path} shows no object"
    assert json.loads((root / MARKER_NAME).read_text())["num_classes"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["fruits"], "a staging folder was left behind"


def test_same_seed_gives_identical_bytes_and_another_seed_other_images(tmp_path):
    first = file_digests(write_embedded_dataset(tmp_path / "a", seed=3, **SMALL))
    second = file_digests(write_embedded_dataset(tmp_path / "b", seed=3, **SMALL))
    other = file_digests(write_embedded_dataset(tmp_path / "c", seed=4, **SMALL))

    assert first == second
    assert first.keys() == other.keys()
    assert all(first[key] != other[key] for key in first)


def test_test_images_differ_from_training_images(tmp_path):
    root = write_embedded_dataset(tmp_path / "fruits", **SMALL)

    train = {digest for key, digest in file_digests(root).items() if key.startswith("Training")}
    test = {digest for key, digest in file_digests(root).items() if key.startswith("Test")}
    assert len(train) == 4 * 6 and len(test) == 4 * 3
    assert not train & test


def test_second_call_keeps_the_tree(tmp_path):
    root = write_embedded_dataset(tmp_path / "fruits", **SMALL)
    stamps = file_stamps(root)

    assert write_embedded_dataset(tmp_path / "fruits", **SMALL) == root
    assert file_stamps(root) == stamps


def test_changed_parameters_regenerate(tmp_path):
    root = write_embedded_dataset(tmp_path / "fruits", **SMALL)
    write_embedded_dataset(root, **{**SMALL, "num_classes": 3, "train_per_class": 2})

    assert sorted(p.name for p in (root / "Training").iterdir()) == embedded_class_names(3)
    assert all(len(list(d.iterdir())) == 2 for d in (root / "Training").iterdir())
    assert json.loads((root / MARKER_NAME).read_text())["train_per_class"] == 2


def test_incomplete_tree_is_regenerated(tmp_path):
    root = write_embedded_dataset(tmp_path / "fruits", **SMALL)
    expected = file_digests(root)
    next((root / "Test").rglob("*.jpg")).unlink()

    write_embedded_dataset(root, **SMALL)
    assert file_digests(root) == expected


def test_interrupted_writing_leaves_the_old_tree_and_no_debris(tmp_path, monkeypatch):
    root = write_embedded_dataset(tmp_path / "fruits", **SMALL)
    before = file_digests(root)
    render, calls = embedded._render, iter(range(5))

    def render_then_crash(*args):
        if next(calls, None) is None:
            raise KeyboardInterrupt  # as if the run were stopped while writing the sixth image
        return render(*args)

    monkeypatch.setattr(embedded, "_render", render_then_crash)
    with pytest.raises(KeyboardInterrupt):
        write_embedded_dataset(root, **{**SMALL, "seed": 1})

    assert file_digests(root) == before
    assert [p.name for p in tmp_path.iterdir()] == ["fruits"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_killed_writer_leaves_nothing_that_looks_complete(tmp_path):
    root = tmp_path / "fruits"
    script = f"from fruitres.data.embedded import write_embedded_dataset as w; w({str(root)!r}, 4, 500)"
    writer = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.glob(".fruits.*/Training/*/*.jpg")) and writer.poll() is None:
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()

    assert writer.returncode == -signal.SIGKILL, "the writer finished before it could be killed"
    assert not root.exists()
    assert write_embedded_dataset(root, **SMALL) == root
    assert len(file_digests(root)) == 4 * (6 + 3)


def test_folder_not_written_by_the_generator_is_left_alone(tmp_path):
    root = tmp_path / "fruits"
    (root / "Training" / "Apple").mkdir(parents=True)
    (root / "Training" / "Apple" / "mine.jpg").write_bytes(b"precious")

    with pytest.raises(FileExistsError, match=MARKER_NAME):
        write_embedded_dataset(root, **SMALL)
    assert (root / "Training" / "Apple" / "mine.jpg").read_bytes() == b"precious"


def test_racing_writers_both_end_with_a_valid_tree(tmp_path):
    reference = file_digests(write_embedded_dataset(tmp_path / "reference", **SMALL))
    root = tmp_path / "fruits"

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: write_embedded_dataset(root, **SMALL), range(2)))

    assert results == [root, root]
    assert file_digests(root) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fruits", "reference"]


def test_classes_look_different_but_not_by_mean_colour_alone(tmp_path):
    root = write_embedded_dataset(
        tmp_path / "fruits", num_classes=6, train_per_class=8, test_per_class=8, image_size=48
    )
    names = embedded_class_names(6)
    train, train_labels = load_split(root, "Training", names)
    test, test_labels = load_split(root, "Test", names)
    chance = 1 / len(names)

    by_histogram = centroid_accuracy(
        colour_histograms(train), train_labels, colour_histograms(test), test_labels
    )
    by_mean_colour = centroid_accuracy(
        object_mean_colours(train), train_labels, object_mean_colours(test), test_labels
    )
    assert by_histogram > 2.5 * chance, "classes are not told apart even by colour and texture"
    assert by_mean_colour < 0.9, "the fruit's mean colour alone separates the classes"
