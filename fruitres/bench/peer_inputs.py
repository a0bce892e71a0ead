"""What every peer of `python -m fruitres.bench peers` shares: one weights file (and the proof each run
loaded it) and one split of the data, as a JSON file of image lists.

The file goes into a temporary torch cache (`TORCH_HOME`) under the name torchvision reads ImageNet's
ResNet-18 from, so that `experiment=resnet18` (model.weights=IMAGENET1K_V1), fastai's
`vision_learner(dls, resnet18)` and the tutorial's `resnet18(weights=...)` load it through their own code,
offline. Each run then records the SHA-256 of the file it read and how many of its network's backbone
tensors equal that file's before the first step (`loaded_weights`): a run that silently downloaded or
initialised its own weights shows it.

The split file names the project's own train, validation and test files (paths relative to the data
folder, with their class names), so that every peer trains, selects and tests on the same images.
This module stays light (no Lightning, no fastai): the peers' runners import it inside their timed runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torchvision
from torch import nn

from fruitres.errors import FixableError
from fruitres.files import write_text_whole
from fruitres.models.backbone import build_backbone, torchvision_weights_file
from fruitres.models.weights_cache import install_weights_file

ARCH, WEIGHTS = "resnet18", "IMAGENET1K_V1"  # what every peer asks for, by its own name for it
IMAGENET_CLASSES = 1000  # the head of the file torchvision expects; every peer replaces it


@contextmanager
def torch_home(folder: Path) -> Iterator[None]:
    """TORCH_HOME set to `folder` for the block (torch.hub reads it at each call)."""
    before = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = before


def install_as_imagenet(source: Path, folder: Path, seed: int = 0) -> Path:
    """`source` (a ResNet-18 state dict or fruitres checkpoint) as torchvision's ImageNet ResNet-18 file
    under the torch cache `folder`; its path there.

    Its backbone is `source`'s; its 1000-class head is a seeded random one, which no peer uses.
    """
    torch.manual_seed(seed)
    try:
        net = build_backbone(ARCH, IMAGENET_CLASSES, weights_path=str(source))
    except FixableError:
        raise
    except Exception as error:  # a stranger's file: any unpickling failure is "not a state dict"
        raise FixableError(
            f"{source}: not a readable {ARCH} state dict or fruitres checkpoint ({type(error).__name__}); "
            "pass a file of torch.save(net.state_dict()) or a fruitres .ckpt"
        ) from None
    state_file = folder / f"{ARCH}-state-dict.pth"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), state_file)
    with torch_home(folder):
        installed = install_weights_file(ARCH, WEIGHTS, state_file)
    state_file.unlink()
    return installed


def cached_weights_file() -> Path:
    """Where torchvision reads the file in this process (TORCH_HOME as now)."""
    return torchvision_weights_file(ARCH, WEIGHTS)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def loaded_weights(net: nn.Module) -> dict[str, object]:
    """The weights file in this process's torch cache, and how many of its backbone tensors `net` holds
    unchanged. Compared in order, not by name: fastai renames the ResNet's layers (its body is a
    Sequential of them), and every peer's state dict lists the backbone first, the head last."""
    path = cached_weights_file()
    if not path.is_file():
        return {"weights_file": str(path), "weights_sha256": "", "matching_tensors": 0, "backbone_tensors": 0}
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = [value for key, value in state.items() if not key.startswith("fc.")]
    held = list(net.state_dict().values())
    matching = sum(
        mine.shape == theirs.shape and torch.equal(mine.detach().cpu().float(), theirs.float())
        for mine, theirs in zip(held, backbone, strict=False)
    )
    return {
        "weights_file": str(path),
        "weights_sha256": sha256(path),
        "matching_tensors": matching,
        "backbone_tensors": len(backbone),
    }


def tutorial_net(num_classes: int) -> nn.Module:
    """The tutorial's network: `resnet18(weights=IMAGENET1K_V1)` from the torch cache, a new linear head."""
    net = torchvision.models.resnet18(weights=WEIGHTS)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


# --- the split -------------------------------------------------------------------------------------------
SPLITS = ("train", "val", "test")


def write_split(
    path: Path, data_dir: Path, image_size: int, classes: list[str], files: dict[str, list[tuple[Path, str]]]
) -> None:
    """`files`: for each of SPLITS, (image file under `data_dir`, its class name) in the project's order;
    `classes` in the project's order of labels."""
    lists = {
        split: [[str(file.relative_to(data_dir)), name] for file, name in files[split]] for split in SPLITS
    }
    record = {"data_dir": str(data_dir), "image_size": image_size, "classes": classes, **lists}
    write_text_whole(path, json.dumps(record))


def read_split(path: Path) -> dict:
    """The split file of `write_split`: data_dir, image_size, classes, and the three lists."""
    return json.loads(Path(path).read_text())


def write_result(path: Path, result: dict) -> None:
    """What a peer's run reports back to the benchmark (epochs, fit seconds, test accuracy, weights)."""
    write_text_whole(Path(path), json.dumps(result))
