"""The test split of a data folder, labelled with the classes a checkpoint was trained on (for eval)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fruitres.data.datamodule import Fruits360DataModule
from fruitres.data.folders import DatasetLayoutError, list_class_names

log = logging.getLogger(__name__)


class CheckpointTestSet(Fruits360DataModule):
    """The test split of a data folder, labelled with the class list a checkpoint was trained on.

    The test folder is found by the training rule (data.splits, fruitres/data/splits.py); where the run
    held out `data.test_fraction` of training instead, the same seeded share of the training folder. A
    test class the checkpoint does not know is an error naming it, never relabelled; a known class without
    test images only leaves its row of the report empty.
    """

    needs_training_folder = False

    def __init__(self, class_names: Sequence[str], **hparams: Any) -> None:
        super().__init__(**hparams)
        self.trained_class_names = list(class_names)

    @property
    def class_names(self) -> list[str]:
        return self.trained_class_names

    def prepare_data(self) -> None:
        if self.embedded:
            super().prepare_data()
        if self.folders.test is None:
            if self.hparams.test_fraction is None or self.folders.train is None:
                raise DatasetLayoutError(
                    f"data.data_dir={self.root} has no test folder (Test/ or test/); pass the folder holding "
                    "one, or name it with +data.splits.test=<folder>"
                )
            return  # the held-out share of the training folder, whose classes trained the checkpoint
        test_dir = self.folders.path(self.root, "test")
        found = list_class_names(test_dir)
        unknown = [n for n in found if n not in self.class_names and not self.selection.leaves_out(n)]
        if unknown:
            raise DatasetLayoutError(
                f"{test_dir} has {len(unknown)} class(es) the checkpoint was not trained on: "
                f"{', '.join(unknown)}; evaluate on a folder holding only the checkpoint's "
                f"{len(self.class_names)} classes (metrics.json of an eval run lists them)"
            )
        absent = [name for name in self.class_names if name not in found]
        if absent:
            log.warning(
                "%s has no images of %d trained class(es): %s", test_dir, len(absent), ", ".join(absent)
            )

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            class_to_idx = {name: index for index, name in enumerate(self.class_names)}
            if self.folders.test is not None:
                self.datasets = {"test": self._cached_split("test", class_to_idx)}
            else:
                self.datasets = {"test": self._training_folder_splits(class_to_idx)[2]}
