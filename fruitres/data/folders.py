"""What counts as a class folder and an image file in a Fruits-360-style tree."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from fruitres.errors import FixableError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLITS = ("Training", "Test")  # Fruits-360's layout, which the embedded dataset writes; others: splits.py


class DatasetLayoutError(FixableError, ValueError):
    """The folder tree cannot be trained on; the message names the path and the fix."""


def is_image_file(path: Path) -> bool:
    """Visible files with an image extension; `.DS_Store`, `Thumbs.db`, notes and the like are not."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_class_names(split_dir: Path) -> list[str]:
    """Sorted names of the visible sub-folders of a split folder: one class each."""
    if not split_dir.is_dir():
        raise DatasetLayoutError(
            f"{split_dir} is not a folder; a split folder holds <Class>/*.jpg (docs/data.md#folder-layouts)"
        )
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for name in names:
        _check_class_name(split_dir, name)
    return names


def list_training_class_names(train_dir: Path) -> list[str]:
    """The class folders of the training folder: at least two, since a classifier tells classes apart."""
    names = list_class_names(train_dir)
    if not names:
        raise DatasetLayoutError(f"{train_dir} has no class folders; see docs/data.md#folder-layouts")
    if len(names) == 1:
        raise DatasetLayoutError(
            f"{train_dir} has one class folder ({names[0]}); training needs at least two: add a folder of "
            "images per class, or point data.data_dir at the folder that holds them"
        )
    return names


def _check_class_name(split_dir: Path, name: str) -> None:
    """Class names become labels in figures, reports and exported metadata, so they must be text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        shown = raw.decode("utf-8", "backslashreplace")
        if _is_utf8(raw):  # a fine name that an ASCII locale decoded with surrogate escapes
            raise DatasetLayoutError(
                f"{split_dir}/{shown}: the folder name is UTF-8, but this Python reads file names as "
                f"{sys.getfilesystemencoding()} (the locale is C/ASCII); run with PYTHONUTF8=1 or "
                "LC_ALL=C.UTF-8"
            ) from None
        raise DatasetLayoutError(
            f"{split_dir}/{shown}: the folder name is not valid UTF-8 (an archive made on Windows?); "
            f"rename it in UTF-8, e.g. convmv -f cp1252 -t utf-8 -r --notest {split_dir}"
        ) from None


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def list_images(class_dir: Path) -> list[Path]:
    """Sorted image files directly inside one class folder."""
    try:
        return sorted(p for p in class_dir.iterdir() if p.is_file() and is_image_file(p))
    except PermissionError:
        raise DatasetLayoutError(
            f"{class_dir} cannot be listed (Permission denied); make it readable (chmod -R u+rX "
            f"'{class_dir}') or leave it out with data.exclude_classes='[{class_dir.name}]'"
        ) from None


def list_samples(
    split_dir: Path, class_to_idx: dict[str, int], skip: Callable[[str], bool] = lambda name: False
) -> list[tuple[Path, int]]:
    """(image path, label) pairs of a split, labelled by a class map taken from the training folder.

    A class folder the map does not know, or an empty class folder, is an error: silently relabelling
    or dropping it would corrupt the labels. Folders that `skip` names (classes the run leaves out) are
    passed over.
    """
    names = [name for name in list_class_names(split_dir) if not skip(name)]
    unknown = [name for name in names if name not in class_to_idx]
    if unknown:
        raise DatasetLayoutError(
            f"{split_dir} has classes that the training folder lacks: {', '.join(unknown)}; "
            "add them to the training folder or remove them from this split"
        )
    samples: list[tuple[Path, int]] = []
    for name in names:
        images = list_images(split_dir / name)
        if not images:
            raise DatasetLayoutError(
                f"{split_dir / name} holds no images; add images or delete the empty folder"
            )
        samples.extend((path, class_to_idx[name]) for path in images)
    return samples
