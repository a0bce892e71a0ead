"""A trained model and its preprocessing, rebuilt from a checkpoint without running pickled code."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fruitres.checkpoints.values import check_checkpoint_values
from fruitres.data.datamodule import Fruits360DataModule
from fruitres.data.images import decoding_rule
from fruitres.errors import CheckpointError, first_line
from fruitres.files import check_checkpoint_file
from fruitres.models.classifier import FruitClassifier

REQUIRED_KEYS = ("state_dict", "hyper_parameters", "datamodule_hyper_parameters")
# Data module arguments of older checkpoints, whose values the resolved preprocessing they also hold replaces
RETIRED_DATA_KEYS = ("backbone", "backbone_weights")


@dataclass
class LoadedCheckpoint:
    """The model in eval mode, its class list, and the datamodule that normalises its input."""

    path: Path
    model: FruitClassifier
    datamodule: Fruits360DataModule

    @property
    def class_names(self) -> list[str]:
        return list(self.model.hparams.class_names)

    @property
    def image_size(self) -> int:
        return int(self.datamodule.hparams.image_size)

    def preprocessing(self) -> dict[str, Any]:
        """How an image file becomes the network's input, for tools outside this package."""
        return {
            "image_size": self.image_size,
            "interpolation": self.datamodule.hparams.interpolation,
            "decoding": decoding_rule(self.datamodule.hparams.interpolation),
            "scale": "RGB uint8 / 255",
            "mean": list(self.datamodule.hparams.mean),
            "std": list(self.datamodule.hparams.std),
            "layout": "NCHW float32, normalised as (x - mean) / std per channel",
        }


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Rebuild model and preprocessing from a `fruitres.train` checkpoint, loading with `weights_only=True`.

    Weights-only unpickling accepts tensors and plain containers only, so a crafted file cannot run code
    here.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"ckpt_path={path} is not a file; pass a .ckpt from a run's checkpoints/ folder"
        )
    check_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        reason = first_line(error)
        raise CheckpointError(
            f"ckpt_path={path} cannot be loaded as weights only ({reason}); fruitres never unpickles "
            "arbitrary objects: use a checkpoint written by fruitres.train"
        ) from None
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"ckpt_path={path} lacks {', '.join(missing)}; use a checkpoint written by fruitres.train"
        )
    check_checkpoint_values(path, checkpoint)
    # The checkpoint holds every weight: fetch no pretrained ones. Run eagerly: a compiled forward cannot
    # be exported, and one pass over a test set does not repay compiling.
    hparams = {**checkpoint["hyper_parameters"], "weights": None, "weights_path": None, "compile": False}
    model = FruitClassifier(**hparams)
    model.load_state_dict(checkpoint["state_dict"])
    datamodule = Fruits360DataModule(**_data_hparams(checkpoint["datamodule_hyper_parameters"]))
    return LoadedCheckpoint(path=path, model=model.eval(), datamodule=datamodule)


def _data_hparams(stored: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in stored.items() if key not in RETIRED_DATA_KEYS}
