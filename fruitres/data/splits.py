"""Which folder of a dataset feeds each split (`data.splits`): given, or found among the usual spellings.

One rule for training, data.check, eval, the transfer study and the benchmarks. Accepted without a setting:
Fruits-360's `Training/ [Validation/] Test/`, torchvision's `train/ val/ test/`, fastai's and Kaggle's
`train/ valid/ test/` (any case), only `train/ val/`, or a single folder of class folders (the data folder
itself is then the training folder). docs/data.md#folder-layouts lists them with their overrides.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruitres.data.folders import DatasetLayoutError
from fruitres.errors import ConfigError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
SPELLINGS = {  # lower-case folder names each split is found under
    "train": ("training", "train"),
    "val": ("validation", "val", "valid"),
    "test": ("test", "testing"),
}
SEARCH_DEPTH = 3  # how many levels below a given folder a dataset is looked for
WHOLE_FOLDER = "."  # data.splits.train=. : data_dir itself holds the class folders


@dataclass(frozen=True)
class SplitFolders:
    """The folder names (relative to the data folder) of the splits that have one; None: no such folder."""

    train: str | None  # None only where the caller needs no training folder (eval)
    val: str | None
    test: str | None

    def path(self, root: Path, split: str) -> Path:
        return root / getattr(self, split)

    def describe(self) -> str:
        shown = {split: getattr(self, split) for split in SPLIT_NAMES}
        return ", ".join(f"{split}={name + '/' if name else 'none'}" for split, name in shown.items())


def resolve_split_folders(
    root: Path, splits: Mapping[str, Any] | None, need_train: bool = True
) -> SplitFolders:
    """Each split's folder under `root`: `splits[split]` when it names one, found when it is null (or the
    whole mapping is), none when it is false. The choice is logged; an ambiguous folder, or a missing
    training folder where `need_train`, is a one-line error naming the `data.splits` key to set."""
    given = dict(splits or {})
    unknown = sorted(set(given) - set(SPLIT_NAMES))
    if unknown:
        raise ConfigError(f"data.splits has unknown key(s) {', '.join(unknown)}; use train, val and test")
    subfolders = _visible_subfolders(root)
    folders = {split: _folder_of(root, split, given.get(split), subfolders) for split in SPLIT_NAMES}
    if folders["train"] is None and need_train:
        if folders["val"] is not None or folders["test"] is not None or given.get("train") is False:
            raise DatasetLayoutError(
                f"{root} has no training folder (Training/ or train/); name it: data.splits.train=<folder>"
            )
        _refuse_a_folder_above_a_dataset(root)
        folders["train"] = WHOLE_FOLDER  # a single folder of class folders
    resolved = SplitFolders(**folders)
    log.info("Split folders of %s: %s", root, resolved.describe())
    return resolved


def _refuse_a_folder_above_a_dataset(root: Path) -> None:
    """A folder without split folders is a folder of classes, unless a dataset lies below it."""
    try:
        below = find_dataset_root(root)
    except DatasetLayoutError:
        return
    raise DatasetLayoutError(f"{root} holds no split folders but {below} does; set data.data_dir={below}")


def _holds_splits(folder: Path, splits: tuple[str, ...]) -> bool:
    """Whether `folder` has a sub-folder spelled as each of `splits` (any case)."""
    names = {name.lower() for name in _subfolder_names(folder)}
    return all(names & set(SPELLINGS[split]) for split in splits)


def _visible_subfolders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DatasetLayoutError(f"data.data_dir={root} is not a folder; pass the folder holding the data")
    return _subfolder_names(root)


def _subfolder_names(folder: Path) -> list[str]:
    return [p.name for p in _subfolder_paths(folder)]


def _folder_of(root: Path, split: str, given: Any, subfolders: list[str]) -> str | None:
    if given is False:
        return None
    if given is not None:
        name = str(given)
        if not (root / name).is_dir():
            raise DatasetLayoutError(
                f"data.splits.{split}={name}: {root / name} is not a folder; name a folder of {root} "
                f"({', '.join(subfolders) or 'it has none'}) or set it to null to find one"
            )
        return name
    found = [name for name in subfolders if name.lower() in SPELLINGS[split]]
    if len(found) > 1:
        raise DatasetLayoutError(
            f"{root} has {len(found)} folders for the {split} split ({', '.join(found)}); choose one with "
            f"data.splits.{split}={found[0]}"
        )
    return found[0] if found else None


def find_dataset_root(path: Path, max_depth: int = SEARCH_DEPTH) -> Path:
    """The shallowest folder at most `max_depth` levels below `path` that holds a training folder and a
    validation or test folder; failing that, one with a training folder alone (any spelling of SPELLINGS)."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetLayoutError(f"{path} is not a folder")
    for wanted in (("train", "val"), ("train", "test"), ("train",)):
        level = [path]
        for _ in range(max_depth + 1):
            for folder in level:
                if _holds_splits(folder, wanted):
                    return folder.resolve()
            level = [sub for folder in level for sub in _subfolder_paths(folder)]
    raise DatasetLayoutError(
        f"no folder holding a training folder (Training/ or train/) within {max_depth} levels of {path}; "
        "set data.data_dir to the folder that holds the split folders"
    )


def _subfolder_paths(folder: Path) -> list[Path]:
    """Sorted visible sub-folders (symlinked ones too: the depth limit stops loops)."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
