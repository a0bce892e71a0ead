"""Which classes and how many training images per class a run uses (`data.classes`, `data.exclude_classes`,
`data.train_per_class`): a source/target split for transfer, or a few-shot budget."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fruitres.errors import ConfigError

log = logging.getLogger(__name__)

ClassList = Sequence[str] | str | None  # names, a text file with one name per line, or None


def read_class_list(value: ClassList, key: str) -> list[str] | None:
    """The names a `data.classes`-style value stands for; None stands for no restriction."""
    if value is None:
        return None
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{key}={value} is not a file; give a list of class names or a text file with one per line"
            )
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(name) for name in value]


@dataclass(frozen=True)
class ClassSelection:
    """`data.classes` (None: all) minus `data.exclude_classes`; one rule for every split and entry point."""

    kept: list[str] | None
    dropped: list[str]

    @classmethod
    def from_config(cls, classes: ClassList, exclude_classes: ClassList) -> ClassSelection:
        dropped = read_class_list(exclude_classes, "data.exclude_classes") or []
        return cls(read_class_list(classes, "data.classes"), dropped)

    def leaves_out(self, name: str) -> bool:
        return (self.kept is not None and name not in self.kept) or name in self.dropped

    def apply(self, available: Sequence[str]) -> list[str]:
        """The selected classes of `available`, sorted; a name `available` lacks is a one-line error."""
        _check_known("data.classes", self.kept or [], available)
        _check_known("data.exclude_classes", self.dropped, available)
        selected = sorted(name for name in available if not self.leaves_out(name))
        if not selected:
            raise ConfigError("data.classes and data.exclude_classes leave no class; keep at least one")
        return selected


def _check_known(key: str, names: Sequence[str], available: Sequence[str]) -> None:
    unknown = [name for name in names if name not in available]
    if not unknown:
        return
    hints = []
    for name in unknown[:5]:
        close = difflib.get_close_matches(name, available, n=3)
        hints.append(f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    raise ConfigError(
        f"{key} names {len(unknown)} class(es) the data does not have: {', '.join(hints)}{more}; "
        "use the names of the Training/ folders"
    )


def take_per_class(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Positions of at most `per_class` items of every label, chosen by a seeded shuffle (all if None)."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    kept, short = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            short.append(int(label))
        kept.append(rng.permutation(members)[:per_class])
    if short:
        log.warning(
            "data.train_per_class=%d: %d class(es) have fewer training images; all of theirs are kept",
            per_class,
            len(short),
        )
    return np.sort(np.concatenate(kept))
