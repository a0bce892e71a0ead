"""How images become a network's input: size, normalisation, resizing filter; each given or the backbone's.

The backbone's own values are looked up where data and model meet (the `backbone_data` resolver of
conf/data/, from `fruitres.models.backbone.backbone_data_config`), so the data layer never imports models.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the statistics torchvision's ImageNet weights were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING_KEYS = ("image_size", "mean", "std", "interpolation")  # null: the backbone's own


@dataclass(frozen=True)
class DataConfig:
    """The input a backbone's weights were trained on: its size, normalisation and resizing filter."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # a name of fruitres.data.images.INTERPOLATIONS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"mean": list(self.mean), "std": list(self.std)}


IMAGENET_DATA = DataConfig(224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")  # for a backbone without its own


def resolve_preprocessing(
    given: Mapping[str, Any], backbone_data: Mapping[str, Any] | None
) -> dict[str, Any]:
    """data.image_size, mean, std and interpolation: each as given, or from `backbone_data` where null.

    The one place where null becomes a value: the data module stores the result in its hyperparameters,
    so checkpoints, eval, predict and export use exactly what training used. Without `backbone_data`,
    ImageNet's (bilinear resizing), as in checkpoints written before these keys existed.
    """
    missing = [key for key in PREPROCESSING_KEYS if given.get(key) is None]
    own = {}
    if missing:
        defaults = dict(backbone_data) if backbone_data is not None else IMAGENET_DATA.as_dict()
        own = {key: defaults[key] for key in missing}
        log.info(
            "Preprocessing from the backbone's data config: %s",
            ", ".join(f"data.{key}={value}" for key, value in own.items()),
        )
    resolved = {key: given.get(key) for key in PREPROCESSING_KEYS} | own
    return resolved | {"mean": list(resolved["mean"]), "std": list(resolved["std"])}
