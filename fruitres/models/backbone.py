"""Building a torchvision ResNet with a new head, its pretrained weights, and its stages for freezing."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from fruitres.checkpoints.files import check_checkpoint_file
from fruitres.errors import FixableError

log = logging.getLogger(__name__)

ARCHS = ("resnet18", "resnet34", "resnet50")
# The ResNet in the order `frozen_stages` counts: the stem, then the four residual stages.
STAGES: tuple[tuple[str, ...], ...] = (
    ("conv1", "bn1", "relu", "maxpool"),
    ("layer1",),
    ("layer2",),
    ("layer3",),
    ("layer4",),
)


HEAD_PREFIX = "fc."  # the classification head of a torchvision ResNet: new for every class list
NETWORK_PREFIX = "net."  # FruitClassifier.net, in a fruitres checkpoint's state_dict
BATCHES_TRACKED = "num_batches_tracked"


class WeightsUnavailableError(FixableError, RuntimeError):
    """Pretrained weights could not be had; the message says where to put the file or what to override."""


def build_resnet(
    arch: str, num_classes: int, weights: str | None = None, weights_path: str | None = None
) -> torchvision.models.ResNet:
    """A torchvision ResNet whose `fc` head has `num_classes` outputs.

    `weights` names a torchvision weights enum member (e.g. IMAGENET1K_V1, fetched into the torch hub
    cache); `weights_path` is a local state-dict file of the same architecture (air-gapped clusters).
    """
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch} is not supported; choose one of {', '.join(ARCHS)}")
    model = torchvision.models.get_model(arch, weights=None)
    if weights_path is not None:
        _load_backbone(model, _load_state_dict_file(Path(weights_path).expanduser(), arch), weights_path)
    elif weights is not None:
        _load_backbone(model, _download_weights(arch, weights), weights)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load everything but the head, whose shape depends on the classes the weights were trained for.

    Every backbone tensor must be there with its shape; the first one that is not is named in the error.
    """
    expected = {key: value for key, value in model.state_dict().items() if not key.startswith(HEAD_PREFIX)}
    for key, value in expected.items():
        if key.endswith(BATCHES_TRACKED):  # absent from older weights files; BatchNorm fills it in
            continue
        if key not in state:
            raise WeightsUnavailableError(
                f"{source} lacks the backbone tensor {key}; it holds another architecture than model.arch"
            )
        if state[key].shape != value.shape:
            raise WeightsUnavailableError(
                f"{source}: backbone tensor {key} has shape {tuple(state[key].shape)}, this model.arch needs "
                f"{tuple(value.shape)}; pass weights of the same architecture"
            )
    model.load_state_dict({key: state[key] for key in expected if key in state}, strict=False)
    left_out = sorted(set(state) - set(expected))
    log.info(
        "Loaded %d backbone tensors from %s; left out %d: %s",
        len(expected),
        source,
        len(left_out),
        ", ".join(left_out) or "none",
    )


def _download_weights(arch: str, name: str) -> dict[str, torch.Tensor]:
    enum = torchvision.models.get_model_weights(arch)
    if name not in enum.__members__:
        raise ValueError(
            f"model.weights={name} is not a {enum.__name__}; choose one of {', '.join(enum.__members__)}"
        )
    weights = enum[name]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash is a RuntimeError
        raise WeightsUnavailableError(
            f"cannot fetch {enum.__name__}.{name} from {weights.url} ({error}); put that file at {cached}, "
            "or pass model.weights_path=<state dict file>, or train from random init with model.weights=null"
        ) from None


def _load_state_dict_file(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """A torchvision state dict, or a fruitres checkpoint (its network's weights, `net.` prefix removed)."""
    if not path.is_file():
        raise WeightsUnavailableError(
            f"model.weights_path={path} does not exist; give a {arch} state-dict file or a fruitres .ckpt"
        )
    if path.suffix == ".ckpt":
        check_checkpoint_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    if any(key.startswith(NETWORK_PREFIX) for key in state):  # a LightningModule's: the network's only
        state = {k.removeprefix(NETWORK_PREFIX): v for k, v in state.items() if k.startswith(NETWORK_PREFIX)}
    return state


def stage_modules(model: torchvision.models.ResNet, stage: int) -> list[nn.Module]:
    """The modules of stage `stage` (0 = stem, 1..4 = layer1..layer4)."""
    return [getattr(model, name) for name in STAGES[stage]]


def stage_name(stage: int) -> str:
    """Stage `stage`'s name in optimizer groups and learning-rate curves: stem, layer1, ..., layer4."""
    names = STAGES[stage]
    return names[0] if len(names) == 1 else "stem"
