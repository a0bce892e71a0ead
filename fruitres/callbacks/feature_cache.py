"""Linear probing at the speed of the head: the frozen backbone's features computed once and reused.

With every stage frozen (`model.frozen_stages=5` on a ResNet), their BatchNorm layers too
(`model.train_bn=false`), and no training augmentation, the backbone maps each training image to the same
feature vector in every epoch. `LinearProbeFeatureCache` computes those vectors once, under the trainer's
precision, into a float32 .npy file next to the image cache, keyed by the image cache (files, sizes), the
backbone's weights and BatchNorm statistics, the normalisation and the precision; any change to one of them
makes a new file. During fitting the train and val batches then carry the cached features as a third item,
and the module runs only its head on them. Batches keep their images, so callbacks that look at them
(figures) work as before. Testing runs the live backbone.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch import Callback
from torch.utils.data import Dataset

from fruitres.data.cache import Batch, CachedImages
from fruitres.files import replaced_whole
from fruitres.models.backbone import head_parameter_names

log = logging.getLogger(__name__)

FEATURE_FORMAT = 1
EXTRACT_BATCH_SIZE = 256
FIT_SPLITS = ("train", "val")
# the precisions whose weights stay float32; `fastest` (the config checks' view) becomes 32-true or bf16-mixed
FLOAT32_WEIGHTS = ("32-true", "32", "bf16-mixed", "16-mixed", "fastest")


def caches_features(backbone_fixed: bool, augments: bool, precision: str) -> bool:
    """Whether LinearProbeFeatureCache gives the head cached features instead of images: a backbone that
    training leaves as it is, no training augmentation, float32 weights (the config checks ask it too)."""
    return backbone_fixed and not augments and str(precision) in FLOAT32_WEIGHTS


def backbone_fingerprint(net: torch.nn.Module) -> str:
    """Changes whenever a backbone weight or BatchNorm statistic changes; the head is left out."""
    digest = hashlib.sha256()
    head = set(head_parameter_names(net))
    for name, tensor in net.state_dict().items():
        if name not in head:
            digest.update(f"\0{name}\0{tensor.dtype}\0".encode())
            digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_cache_path(
    images: CachedImages, model: L.LightningModule, normalisation: str, precision: str
) -> Path:
    """The features file of an image cache for this backbone, normalisation and precision."""
    digest = hashlib.sha256(
        f"v{FEATURE_FORMAT}\0{images.array_path.name}\0{normalisation}\0{precision}".encode()
    )
    digest.update(backbone_fingerprint(model.net).encode())
    return images.array_path.with_name(f"features-{digest.hexdigest()[:24]}.npy")


@torch.no_grad()
def extract_features(
    model: L.LightningModule, images: CachedImages, datamodule: L.LightningDataModule, trainer: L.Trainer
) -> np.ndarray:
    """Pooled backbone features of every row of the image cache, as the live forward pass computes them."""
    array = images.array()
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(array), EXTRACT_BATCH_SIZE):
            pixels = torch.from_numpy(np.array(array[start : start + EXTRACT_BATCH_SIZE])).permute(0, 3, 1, 2)
            batch = datamodule.normalize(pixels.to(model.device))
            with trainer.precision_plugin.forward_context():
                chunks.append(model.forward_features(batch).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy()


def features_file(
    model: L.LightningModule, images: CachedImages, datamodule: L.LightningDataModule, trainer: L.Trainer
) -> Path:
    """Where the features of `images` for this model, normalisation and precision are (or go)."""
    normalisation = f"{datamodule.mean.flatten().tolist()}{datamodule.std.flatten().tolist()}"
    return feature_cache_path(images, model, normalisation, str(trainer.precision))


def build_feature_cache(
    model: L.LightningModule, images: CachedImages, datamodule: L.LightningDataModule, trainer: L.Trainer
) -> Path:
    """Return the features file of `images` for this model (computed if missing, once across DDP ranks)."""
    path = features_file(model, images, datamodule, trainer)
    if trainer.is_global_zero and not path.exists():
        log.info("Computing the frozen backbone's features once into %s", path)
        features = extract_features(model, images, datamodule, trainer)
        with replaced_whole(path) as partial, open(partial, "wb") as file:  # np.save on a name adds .npy
            np.save(file, features)
    trainer.strategy.barrier("feature_cache")
    return path


class ImagesWithFeatures(Dataset):
    """The batches of a `CachedImages` with the cached features of the same rows as a third item."""

    def __init__(self, images: CachedImages, features_path: Path) -> None:
        self.images = images
        self.features_path = features_path
        self._features: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def features(self) -> np.ndarray:
        if self._features is None:
            self._features = np.load(self.features_path, mmap_mode="r")
        return self._features

    def __getitem__(self, index: int) -> Batch:
        image, label = self.images[index]
        return image, label, torch.from_numpy(np.array(self.features()[self.images.rows[index]]))

    def __getitems__(self, indices: list[int]) -> Batch:
        images, labels = self.images.__getitems__(indices)
        return images, labels, torch.from_numpy(self.features()[self.images.rows[indices]])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_features": None}


class LinearProbeFeatureCache(Callback):
    """Feeds the fit's train and val batches the backbone features computed once, when that is exact.

    It applies when the backbone is fixed as fitting is set up (`backbone_is_fixed`: every stage frozen,
    BatchNorm included), the datamodule augments nothing and the weights stay in float32 (32-true or a mixed
    precision); otherwise the features are computed live each step, as usual. Everything happens in `setup`,
    before Lightning builds (and may start the workers of) any loader; `on_fit_start` checks that a restored
    checkpoint did not change the backbone. A callback that unfreezes the backbone during such a fit is
    stopped with an error, since the cached features would then be stale.
    """

    def __init__(self) -> None:
        self.originals: dict[str, CachedImages] = {}
        self.wrapped: dict[str, ImagesWithFeatures] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None:
            return
        augments = len(getattr(datamodule, "augment", ())) > 0
        if pl_module.backbone_is_fixed() and augments:
            log.info(
                "Linear probe with training augmentation (data.augment): backbone features are computed "
                "each step; set data.augment=null to compute them once and cache them"
            )
        datasets = getattr(datamodule, "datasets", {})
        cacheable = all(isinstance(datasets.get(split), CachedImages) for split in FIT_SPLITS)
        if not (cacheable and caches_features(pl_module.backbone_is_fixed(), augments, trainer.precision)):
            return
        pl_module.to(trainer.strategy.root_device)  # where Lightning is about to move it anyway
        paths: dict[Path, Path] = {}
        for split in FIT_SPLITS:
            images = datasets[split]
            if images.array_path not in paths:
                paths[images.array_path] = build_feature_cache(pl_module, images, datamodule, trainer)
            self.wrapped[split] = ImagesWithFeatures(images, paths[images.array_path])
        self.originals = datamodule.swap_datasets(self.wrapped)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for dataset in self.wrapped.values():
            if features_file(pl_module, dataset.images, trainer.datamodule, trainer) != dataset.features_path:
                raise RuntimeError(
                    "The checkpoint being resumed holds another backbone than the one whose features were "
                    "cached for this linear probe; set callbacks.linear_probe_cache=null to resume it"
                )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if self.wrapped and not pl_module.backbone_is_fixed():
            raise RuntimeError(
                "A callback unfroze the backbone during a linear probe fed with cached features "
                "(callbacks.linear_probe_cache); set callbacks.linear_probe_cache=null to fine-tune it"
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Give the datamodule its image datasets back (testing runs the live backbone)."""
        if self.originals:
            trainer.datamodule.swap_datasets(self.originals)
            self.originals, self.wrapped = {}, {}
