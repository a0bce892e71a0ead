"""A test accuracy that near-duplicate frames do not flatter: `test/acc_novel`.

Fruits-360's Test/ frames come from the same videos as Training/'s, and a Test image with a near twin in
Training/ (the perceptual-hash rule of `data.check --near-duplicates`, data/near_duplicates.py) is nearly
a training image. Beside `test/acc`, this callback logs the accuracy on the Test images without one
(`test/acc_novel`), how many there are (`test/novel_images`) and its Wilson 95% interval
(`test/acc_novel_ci95_low`, `_high`): in the run record, TensorBoard and the eval report.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch import Callback

from fruitres.data.folders import list_class_names, list_images
from fruitres.data.near_duplicates import DEFAULT_MAX_DISTANCE, has_near_twin, hashes_of
from fruitres.reports.uncertainty import wilson_interval

log = logging.getLogger(__name__)


def novel_test_images(datamodule: L.LightningDataModule, max_distance: int) -> np.ndarray | None:
    """Per row of the test set, whether no training-folder image of its class is its near twin (the test
    images themselves left out, for a test set held out of that folder); None without a training folder."""
    folders = getattr(datamodule, "folders", None)
    if folders is None or folders.train is None:
        return None
    training = folders.path(Path(datamodule.root), "train")
    test = [(path, path.parent.name) for path in datamodule.image_paths("test")]
    test_files = {path for path, _ in test}
    train = {
        name: [path for path in list_images(training / name) if path not in test_files]
        for name in list_class_names(training)
    }
    every_file = [path for paths in train.values() for path in paths] + [path for path, _ in test]
    hashes = hashes_of(every_file, datamodule.hparams.get("cache_dir"))
    return ~has_near_twin(test, train, hashes, max_distance)


class NovelTestAccuracy(Callback):
    """Counts the correct predictions on the novel Test images of each test pass and logs their share."""

    def __init__(self, max_distance: int = DEFAULT_MAX_DISTANCE) -> None:
        self.max_distance = max_distance
        self._novel: np.ndarray | None = None  # in the order this process sees the test images
        self._seen = self._correct = self._count = 0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._novel, self._seen, self._correct, self._count = None, 0, 0, 0
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "image_paths"):
            return
        novel = novel_test_images(datamodule, self.max_distance)
        if novel is None:
            log.info("No training folder beside the test folder: test/acc_novel is not measured")
            return
        loader = trainer.test_dataloaders
        rows = np.fromiter(iter(loader.sampler), dtype=np.int64) if loader.sampler is not None else None
        self._novel = novel[rows] if rows is not None else novel

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._novel is None:
            return
        labels = batch[1].cpu().numpy()
        novel = self._novel[self._seen : self._seen + len(labels)]
        self._seen += len(labels)
        correct = outputs["logits"].argmax(dim=1).cpu().numpy() == labels
        self._correct += int(np.sum(correct & novel))
        self._count += int(np.sum(novel))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._novel is None:
            return
        counts = torch.tensor([self._correct, self._count], dtype=torch.float64, device=pl_module.device)
        correct, count = (int(value) for value in trainer.strategy.reduce(counts, reduce_op="sum").tolist())
        pl_module.log("test/novel_images", float(count))
        if count:
            low, high = wilson_interval(correct, count)
            pl_module.log("test/acc_novel", correct / count)
            pl_module.log("test/acc_novel_ci95_low", low)
            pl_module.log("test/acc_novel_ci95_high", high)
