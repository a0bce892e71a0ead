"""The values a checkpoint carries, bounded before anything is built from them.

A checkpoint may come from a stranger: its image size decides how much memory every image takes, its class
list becomes labels in files and figures, its architecture picks the code that runs, its normalisation
divides every pixel. Each is checked here, and a bad one stops with one line naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fruitres.data.embedded import MIN_IMAGE_SIZE
from fruitres.data.images import INTERPOLATIONS
from fruitres.errors import CheckpointError, ConfigError
from fruitres.models.backbone import check_arch

MAX_IMAGE_SIZE = 4096  # 4096² RGB is 48 MiB per image: beyond it a batch would not fit any machine
MAX_CLASSES = 1_000_000  # far above any image classification set; a bigger list is not a class list
MAX_CLASS_NAME = 1000  # characters; a longer one is not a folder name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _three_finite(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value)
    )


def _three_positive(value: Any) -> bool:
    return _three_finite(value) and all(x > 0 for x in value)


def _or_none(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """None is the backbone's own value, resolved by fruitres as at training, not read from the file."""
    return lambda v: v is None or check(v)


def _class_names(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and 2 <= len(value) <= MAX_CLASSES
        and all(isinstance(name, str) and 0 < len(name) <= MAX_CLASS_NAME for name in value)
        and len(set(value)) == len(value)
    )


# (section of the checkpoint, field, what is allowed, check)
FIELDS: tuple[tuple[str, str, str, Callable[[Any], bool]], ...] = (
    ("hyper_parameters", "arch", "a model name fruitres builds", lambda v: isinstance(v, str) and bool(v)),
    ("hyper_parameters", "num_classes", f"an integer 2..{MAX_CLASSES:,}", lambda v: _is_int(v) and v >= 2),
    (
        "hyper_parameters",
        "class_names",
        f"a list of 2..{MAX_CLASSES:,} distinct non-empty names of at most {MAX_CLASS_NAME} characters",
        _class_names,
    ),
    (
        "datamodule_hyper_parameters",
        "image_size",
        f"an integer {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}",
        _or_none(lambda v: _is_int(v) and MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE),
    ),
    ("datamodule_hyper_parameters", "mean", "three finite numbers", _or_none(_three_finite)),
    ("datamodule_hyper_parameters", "std", "three finite numbers > 0", _or_none(_three_positive)),
    (
        "datamodule_hyper_parameters",
        "interpolation",
        f"one of {', '.join(INTERPOLATIONS)}",
        _or_none(lambda v: v in INTERPOLATIONS),
    ),
)


def check_checkpoint_values(path: Path, checkpoint: dict[str, Any]) -> None:
    """Raise CheckpointError naming `path` and the field for the first value that is missing or out of
    bounds; the class list must also match the number of outputs."""
    for section, field, allowed, check in FIELDS:
        stored = checkpoint.get(section)
        value = stored.get(field) if isinstance(stored, dict) else None
        if not check(value):
            raise CheckpointError(
                f"checkpoint {path}: {section}.{field}={_shown(value)} is not usable; it must be {allowed}. "
                "The file was not written by fruitres.train or was edited: use a checkpoint of a training run"
            )
    hparams = checkpoint["hyper_parameters"]
    if len(hparams["class_names"]) != hparams["num_classes"]:
        raise CheckpointError(
            f"checkpoint {path}: hyper_parameters.class_names has {len(hparams['class_names'])} names for "
            f"num_classes={hparams['num_classes']} outputs; use a checkpoint of a training run"
        )
    try:
        check_arch(hparams["arch"])
    except ConfigError as error:
        raise CheckpointError(
            f"checkpoint {path}: hyper_parameters.arch is not one fruitres builds ({error})"
        ) from None


def _shown(value: Any, limit: int = 80) -> str:
    """A value as repr, cut short: a hostile field may be huge."""
    text = repr(value)
    size = f" of {len(value)}" if hasattr(value, "__len__") else ""
    return text if len(text) <= limit else f"{text[:limit]}… ({type(value).__name__}{size})"
