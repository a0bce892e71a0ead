"""The Fruits-360 folders (or the embedded generated dataset) as a LightningDataModule."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from fruitres.data.cache import CachedImages, build_image_cache, collate_batch
from fruitres.data.classes import ClassList, ClassSelection, take_per_class
from fruitres.data.embedded import write_embedded_dataset
from fruitres.data.folders import DatasetLayoutError, list_samples, list_training_class_names
from fruitres.data.groups import check_val_split, split_by_group
from fruitres.data.loaders import evaluation_sampler, loader_start_method
from fruitres.data.preprocessing import resolve_preprocessing
from fruitres.data.splits import SplitFolders, resolve_split_folders
from fruitres.errors import ConfigError

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("skip", "error")


def default_num_workers() -> int:
    """No worker process when training on the CPU, else one per spare core, at most 4.

    A batch is one read of the memory-mapped image cache: on the CPU the training step needs every core,
    and a worker would only add inter-process copies (docs/performance.md#where-the-speed-comes-from).
    On a GPU, workers let the next batch be read while the device computes.
    """
    if not torch.cuda.is_available():
        return 0
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int | tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): `val_fraction` of every class held out, chosen by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class Fruits360DataModule(LightningDataModule):
    """Class folders under the split folders that `data.splits` names or finds (fruitres/data/splits.py).

    Validation is the validation folder, else a stratified split of the training folder; the test set is
    the test folder, else (`data.test_fraction`) a stratified split of the training folder. The class list
    comes from the training folder and labels every split, so a class missing elsewhere cannot shift
    labels. Images are decoded once into a uint8 cache; batches travel as uint8 and are
    augmented (training only) and normalised on the device, in `on_after_batch_transfer`. A null
    image_size, mean, std or interpolation is the backbone's own (`backbone_data`), and the
    hyperparameters hold the resolved values.
    """

    needs_training_folder = True

    def __init__(
        self,
        data_dir: str | None = None,
        embedded_dir: str = "data/embedded",
        embedded: Mapping | None = None,
        cache_dir: str = "data/cache",
        image_size: int | None = 100,
        classes: ClassList = None,
        exclude_classes: ClassList = None,
        val_fraction: float = 0.1,
        val_split: str = "by_image",
        splits: Mapping[str, Any] | None = None,
        test_fraction: float | None = None,
        test_required: bool = True,
        train_per_class: int | None = None,
        split_seed: int = 42,
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        on_bad_image: str = "skip",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
        backbone_data: Mapping[str, Any] | None = None,
        augment: Mapping[str, nn.Module | None] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augment"], logger=False)
        self.hparams.update(resolve_preprocessing(self.hparams, backbone_data))
        mean, std = self.hparams.mean, self.hparams.std
        self.root = Path(data_dir if data_dir is not None else embedded_dir).expanduser()
        self.embedded = data_dir is None
        self.selection = ClassSelection.from_config(classes, exclude_classes)
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.augment = nn.Sequential(*[t for t in (augment or {}).values() if t is not None])
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.datasets: dict[str, CachedImages] = {}
        self.split_paths: dict[str, list[Path]] = {}  # by split; a dataset's rows index into it
        self.split_sources: dict[str, str] = {}  # each split's source, for the run record
        self._folders: SplitFolders | None = None

    @property
    def folders(self) -> SplitFolders:
        """The folder of each split: data.splits, or found among the usual spellings (logged once)."""
        if self._folders is None:
            self._folders = resolve_split_folders(self.root, self.hparams.splits, self.needs_training_folder)
            if self._folders.val is not None and self.hparams.val_fraction:
                log.warning(
                    "data.val_fraction=%s is ignored: %s/ is the validation set (data.splits.val=false "
                    "splits the training folder instead)",
                    self.hparams.val_fraction,
                    self._folders.val,
                )
        return self._folders

    @property
    def class_names(self) -> list[str]:
        """The classes this run uses: the training folders that data.classes / exclude_classes select."""
        train_dir = self.folders.path(self.root, "train")
        return self.selection.apply(list_training_class_names(train_dir))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        """Write the embedded dataset if it is the one in use; check that a real one is there."""
        if self.embedded:
            write_embedded_dataset(
                self.root, image_size=self.hparams.image_size, **(self.hparams.embedded or {})
            )
        elif not self.root.is_dir():
            raise DatasetLayoutError(
                f"data.data_dir={self.root} is not a folder; pass the folder that holds the split folders "
                "(python -m fruitres.data.download prints it), or drop data.data_dir to use the embedded data"
            )
        self.check_split_settings()

    def check_split_settings(self) -> None:
        """A test set must come from somewhere if the run tests, and from one place only."""
        folders, hparams = self.folders, self.hparams
        if hparams.test_fraction is not None and not 0 < hparams.test_fraction < 1:
            raise ConfigError(
                f"data.test_fraction={hparams.test_fraction} is not between 0 and 1; e.g. 0.1, or null"
            )
        if folders.test is None and hparams.test_fraction is None and hparams.test_required:
            raise DatasetLayoutError(
                f"{self.root} has no test folder (Test/ or test/); set data.test_fraction=0.1 to hold out "
                "a seeded share of training, data.splits.test=<folder>, or test=false"
            )
        if folders.test is not None and hparams.test_fraction is not None:
            raise ConfigError(
                f"data.test_fraction={hparams.test_fraction} and the test folder {folders.test}/ both give a "
                "test set; drop data.test_fraction or set data.splits.test=false"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        class_to_idx = {name: index for index, name in enumerate(self.class_names)}
        train_all, rest, test = self._training_folder_splits(class_to_idx)
        labels = train_all.labels.numpy()
        seed = self.hparams.split_seed
        if self.folders.val is None:
            if check_val_split(self.hparams.val_split) == "by_group":  # near twins on one side
                paths = [self.split_paths["train"][row] for row in train_all.rows[rest].tolist()]
                kept, val_rows = split_by_group(
                    paths, labels[rest], self.hparams.val_fraction, seed, self.hparams.cache_dir
                )
            else:
                kept, val_rows = stratified_split(labels[rest], self.hparams.val_fraction, seed)
            train_idx, val = rest[kept], _subset(train_all, rest[val_rows])
            self._note_source("val", "train", f"data.val_fraction={self.hparams.val_fraction}")
        else:
            train_idx, val = rest, self._cached_split("val", class_to_idx)
        # after the validation split: runs with any train_per_class validate on the same images
        train_idx = train_idx[take_per_class(labels[train_idx], self.hparams.train_per_class, seed)]
        self.datasets = {"train": _subset(train_all, train_idx), "val": val}
        if test is not None:
            self.datasets["test"] = test

    def _training_folder_splits(
        self, class_to_idx: dict[str, int]
    ) -> tuple[CachedImages, np.ndarray, CachedImages | None]:
        """The training folder's images, the rows left for training and validation, and the test set: the
        test folder's, a seeded stratified `data.test_fraction` of training, or None (test=false)."""
        train_all = self._cached_split("train", class_to_idx)
        rows = np.arange(len(train_all))
        if self.folders.test is not None:
            return train_all, rows, self._cached_split("test", class_to_idx)
        if self.hparams.test_fraction is None:
            return train_all, rows, None
        # a seed of its own: the validation split of what is left must not mirror this draw
        rest, test_rows = stratified_split(
            train_all.labels.numpy(), self.hparams.test_fraction, (self.hparams.split_seed, 1)
        )
        self._note_source("test", "train", f"data.test_fraction={self.hparams.test_fraction}")
        return train_all, rest, _subset(train_all, test_rows)

    def _note_source(self, split: str, folder_split: str, share: str | None = None) -> None:
        folder = getattr(self.folders, folder_split)
        self.split_sources[split] = f"{folder}/" + (f" ({share})" if share else "")
        self.split_paths.setdefault(split, self.split_paths[folder_split])

    def image_paths(self, split: str) -> list[Path]:
        """The files of `split` (train, val or test), in the order of its dataset's rows."""
        folder_paths = self.split_paths[split]
        return [folder_paths[row] for row in self.datasets[split].rows.tolist()]

    def swap_datasets(self, datasets: dict[str, CachedImages]) -> dict[str, CachedImages]:
        """Serve `datasets` for their splits instead (the linear probe's cached features); returns the
        ones they replace."""
        replaced = {split: self.datasets[split] for split in datasets}
        self.datasets.update(datasets)
        return replaced

    def _cached_split(self, split: str, class_to_idx: dict[str, int]) -> CachedImages:
        """The images of `split`'s own folder (train, val or test), decoded into the image cache."""
        split_dir = self.folders.path(self.root, split)
        samples = list_samples(split_dir, class_to_idx, skip=self.selection.leaves_out)
        paths = [path for path, _ in samples]
        self.split_paths[split] = paths
        self.split_sources[split] = f"{getattr(self.folders, split)}/"
        array_path, unreadable = build_image_cache(
            paths,
            self.hparams.image_size,
            Path(self.hparams.cache_dir).expanduser(),
            self.hparams.interpolation,
        )
        if unreadable:
            names = ", ".join(str(paths[i]) for i in unreadable[:10])
            more = f" and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""
            if self.hparams.on_bad_image == "error":
                raise DatasetLayoutError(
                    f"{len(unreadable)} unreadable image(s) in {split_dir}: {names}{more}; "
                    "remove them or set data.on_bad_image=skip"
                )
            log.warning("Skipping %d unreadable image(s) in %s: %s%s", len(unreadable), split, names, more)
        keep = np.setdiff1d(np.arange(len(samples)), np.asarray(unreadable, dtype=np.int64))
        return CachedImages(array_path, keep, [samples[i][1] for i in keep])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.hparams.batch_size,
            # The shuffle draws from the global RNG, which checkpoints restore (callbacks/rng.py); worker
            # seeds come from a generator of their own, so that persistent workers, started at another
            # moment in a resumed run, do not shift the draws: it shuffles and augments as the original.
            sampler=RandomSampler(self.datasets[split])
            if shuffle
            else evaluation_sampler(self.datasets[split], self.trainer),
            generator=torch.Generator().manual_seed(self.hparams.split_seed),
            drop_last=shuffle and len(self.datasets[split]) > self.hparams.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.hparams.persistent_workers and self.num_workers > 0,
            multiprocessing_context=loader_start_method(self.num_workers),
            collate_fn=collate_batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images → the normalised float input of the network."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        return (images - self.mean.to(images.device)) / self.std.to(images.device)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, *extra = batch  # extra: cached backbone features (linear probe), passed through
        images = images.float().div_(255)
        if self.trainer is not None and self.trainer.training and len(self.augment):
            images = self.augment(images)
        return self.normalize(images), labels, *extra


def _subset(dataset: CachedImages, indices: np.ndarray) -> CachedImages:
    return CachedImages(dataset.array_path, dataset.rows[indices], dataset.labels[indices].tolist())
