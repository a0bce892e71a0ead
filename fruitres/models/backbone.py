"""Any backbone from a name: a torchvision classification model or `timm/<name>`, with a new head.

Every family gives the same three things, as timm models do: pooled features (`backbone_features`), the
classification head (`backbone_head`) and an ordered list of stages (`backbone_stages`, the head left out)
that `model.frozen_stages`, gradual unfreezing and layer-wise learning rates count. torchvision families
are described by the table `FAMILIES`; timm models by their own `group_matcher`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import swin_transformer

from fruitres.data.preprocessing import IMAGENET_DATA, DataConfig
from fruitres.errors import ConfigError, FixableError, first_line
from fruitres.files import check_checkpoint_file

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm/"
TIMM_WEIGHTS = "DEFAULT"  # model.weights for a timm model: the pretrained weights its name's tag selects
NETWORK_PREFIX = "net."  # FruitClassifier.net, in a fruitres checkpoint's state_dict
BATCHES_TRACKED = "num_batches_tracked"

Step = str | Callable[[nn.Module, torch.Tensor], torch.Tensor]  # a submodule's path, or a function of the net


class WeightsUnavailableError(FixableError, RuntimeError):
    """Pretrained weights could not be had; the message says where to put the file or what to override."""


class Stage(nn.Module):
    """One stage of a network: the whole submodules it owns and any parameter held outside them.

    A view, never registered inside the network: `parameters()`, `requires_grad_()` and `train()` reach
    the network's own tensors and modules.
    """

    def __init__(self, name: str, modules: Sequence[nn.Module], loose: Sequence[nn.Parameter]) -> None:
        super().__init__()
        self.name = name
        self.blocks = nn.ModuleList(modules)
        self.loose = nn.ParameterList(loose)


# --- torchvision families ----------------------------------------------------------------------------
def _pool(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 1)


def _flatten(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(x, 1)


def _vit_tokens(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Patch tokens, the class token and position embeddings, interpolated for another image size."""
    x = net.conv_proj(x)
    grid = x.shape[-2:]
    x = torch.cat([net.class_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
    position = net.encoder.pos_embedding
    side = int((position.shape[1] - 1) ** 0.5)
    if tuple(grid) != (side, side):  # weights made for another size: resample the patch positions
        patches = position[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False)
        position = torch.cat([position[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)
    return x + position


def _class_token(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x[:, 0]


def _downsamples(module: nn.Module) -> bool:
    """Whether a block starts a new resolution: a strided convolution or a Swin patch merging."""
    return any(
        (isinstance(m, nn.Conv2d) and max(m.stride) > 1)
        or isinstance(m, swin_transformer.PatchMerging | swin_transformer.PatchMergingV2)
        for m in module.modules()
    )


def _stages_by_resolution(net: nn.Module) -> list[tuple[str, list[str]]]:
    """`features.0` is the stem; then a stage per resolution, starting at each downsampling block."""
    stages: list[tuple[str, list[str]]] = [("stem", ["features.0"])]
    for index, block in enumerate(net.features):
        if index == 0:
            continue
        if _downsamples(block) or len(stages) == 1:
            stages.append((f"stage{len(stages)}", []))
        stages[-1][1].append(f"features.{index}")
    return stages


def _resnet_stages(net: nn.Module) -> list[tuple[str, list[str]]]:
    return [("stem", ["conv1", "bn1"])] + [(f"layer{i}", [f"layer{i}"]) for i in range(1, 5)]


def _regnet_stages(net: nn.Module) -> list[tuple[str, list[str]]]:
    blocks = [f"trunk_output.{name}" for name, _ in net.trunk_output.named_children()]
    return [("stem", ["stem"])] + [(path.rsplit(".", 1)[1], [path]) for path in blocks]


def _vit_stages(net: nn.Module) -> list[tuple[str, list[str]]]:
    layers = [f"encoder.layers.{name}" for name, _ in net.encoder.layers.named_children()]
    stem = ["conv_proj", "class_token", "encoder.pos_embedding"]
    return [("stem", stem)] + [(f"block{i}", [path]) for i, path in enumerate(layers)]


@dataclass(frozen=True)
class Family:
    """How one torchvision family computes pooled features, where its head is, and its stages.

    Parameters outside the head and the listed stages (a norm or projection after the last stage)
    belong to the last stage.
    """

    name: str
    arch_prefixes: tuple[str, ...]
    network: type[nn.Module]
    features: tuple[Step, ...]  # from images to pooled features
    head: tuple[str, ...]  # from pooled features to logits; the last is the Linear made for the classes
    stages: Callable[[nn.Module], list[tuple[str, list[str]]]]  # name → submodule or parameter paths
    no_weight_decay: tuple[str, ...] = ()  # as timm's `no_weight_decay()`: names or fnmatch patterns


FAMILIES = (
    Family(
        "resnet",
        ("resnet", "resnext", "wide_resnet"),
        torchvision.models.ResNet,
        ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", _pool, _flatten),
        ("fc",),
        _resnet_stages,
    ),
    Family(
        "regnet",
        ("regnet_",),
        torchvision.models.RegNet,
        ("stem", "trunk_output", _pool, _flatten),
        ("fc",),
        _regnet_stages,
    ),
    Family(
        "mobilenet_v2",
        ("mobilenet_v2",),
        torchvision.models.MobileNetV2,
        ("features", _pool, _flatten),
        ("classifier.0", "classifier.1"),
        _stages_by_resolution,
    ),
    Family(
        "mobilenet_v3",
        ("mobilenet_v3",),
        torchvision.models.MobileNetV3,
        ("features", _pool, _flatten, "classifier.0", "classifier.1"),
        ("classifier.2", "classifier.3"),
        _stages_by_resolution,
    ),
    Family(
        "efficientnet",
        ("efficientnet_",),
        torchvision.models.EfficientNet,
        ("features", _pool, _flatten),
        ("classifier.0", "classifier.1"),
        _stages_by_resolution,
    ),
    Family(
        "convnext",
        ("convnext_",),
        torchvision.models.ConvNeXt,
        ("features", _pool, "classifier.0", _flatten),
        ("classifier.2",),
        _stages_by_resolution,
    ),
    Family(
        "swin",
        ("swin_",),
        torchvision.models.SwinTransformer,
        ("features", "norm", "permute", _pool, _flatten),
        ("head",),
        _stages_by_resolution,
        ("*.relative_position_bias_table", "*.logit_scale", "*.cpb_mlp"),  # timm's Swin (V2) exempts these
    ),
    Family(
        "vit",
        ("vit_",),
        torchvision.models.VisionTransformer,
        (_vit_tokens, "encoder.dropout", "encoder.layers", "encoder.ln", _class_token),
        ("heads.head",),
        _vit_stages,
        ("class_token", "encoder.pos_embedding"),  # timm's ViT: cls_token, pos_embed
    ),
)
FAMILY_NAMES = ", ".join(family.name for family in FAMILIES)


def _torchvision_family(arch: str) -> Family:
    names = torchvision.models.list_models(module=torchvision.models)
    family = next((f for f in FAMILIES if arch.startswith(f.arch_prefixes)), None)
    if arch not in names or family is None:
        known = "a torchvision classification model" if arch not in names else "a model"
        raise ConfigError(
            f"model.arch={arch} is not allowed; use {known} of the families {FAMILY_NAMES} "
            "(torchvision.models.list_models(), e.g. resnet18, efficientnet_b0) or timm/<name>"
        )
    return family


def _family_of(net: nn.Module) -> Family | None:
    """The torchvision family of a built network; None for a timm model."""
    for family in FAMILIES:
        if isinstance(net, family.network):
            return family
    if _is_timm(net):
        return None
    raise TypeError(f"{type(net).__name__} is not a network fruitres builds")


def _is_timm(net: nn.Module) -> bool:
    return type(net).__module__.startswith("timm.")


def _run(net: nn.Module, steps: Sequence[Step], x: torch.Tensor) -> torch.Tensor:
    for step in steps:
        x = net.get_submodule(step)(x) if isinstance(step, str) else step(net, x)
    return x


# --- what every family gives -------------------------------------------------------------------------
def backbone_features(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled features (batch × channels): what the head classifies and a linear probe caches."""
    family = _family_of(net)
    if family is None:
        return net.forward_head(net.forward_features(images), pre_logits=True)
    return _run(net, family.features, images)


def backbone_head(net: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Logits from pooled features."""
    family = _family_of(net)
    if family is None:
        return net.get_classifier()(features)
    return _run(net, family.head, features)


class Logits(nn.Module):
    """A built network as one module from images to logits, at any image size its family takes.

    What TorchScript traces: a torchvision ViT's own forward only takes the size it was built for.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return backbone_head(self.net, backbone_features(self.net, images))


def head_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The head's parameters: new for every class list."""
    family = _family_of(net)
    heads = [net.get_classifier()] if family is None else [net.get_submodule(path) for path in family.head]
    return [p for module in heads for p in module.parameters()]


def head_parameter_names(net: nn.Module) -> list[str]:
    """The names (in `net.state_dict()`) of the head's parameters."""
    head_ids = {id(p) for p in head_parameters(net)}
    return [name for name, p in net.named_parameters() if id(p) in head_ids]


def _stage_parameter_names(net: nn.Module) -> list[tuple[str, list[str]]]:
    """Each stage's name and the names of its parameters, in order; the head's are left out."""
    head = set(head_parameter_names(net))
    names = [name for name, _ in net.named_parameters() if name not in head]
    family = _family_of(net)
    if family is None:
        from timm.models import group_parameters  # only with the timm extra, which built this network

        groups = group_parameters(net, net.group_matcher(coarse=True))
        # the group holding the classifier also holds what timm counts as head (a norm): a neck, below
        groups = [groups[key] for key in sorted(groups) if head.isdisjoint(groups[key])]
        stages = [(f"stage{i}" if i else "stem", list(members)) for i, members in enumerate(groups)]
    else:
        stages = [
            (stage, [n for n in names if any(n == p or n.startswith(f"{p}.") for p in paths)])
            for stage, paths in family.stages(net)
        ]
    assigned = {n for _, members in stages for n in members}
    stages[-1][1].extend(n for n in names if n not in assigned)  # the norm or neck after the last stage
    return stages


def no_weight_decay_patterns(net: nn.Module) -> tuple[str, ...]:
    """What the architecture keeps out of weight decay (position embeddings, class tokens, position biases).

    A timm model's own `no_weight_decay()`: parameter names or fnmatch patterns, as timm's optimizer
    factory reads them (a module's name also covers its parameters). torchvision's models have no such
    method; for its ViT and Swin, `FAMILIES` names the same tensors, so both libraries' copies of an
    architecture train alike.
    """
    family = _family_of(net)
    if family is not None:
        return family.no_weight_decay
    return tuple(getattr(net, "no_weight_decay", tuple)())


def backbone_stages(net: nn.Module) -> list[Stage]:
    """The network's stages in forward order, the head excluded: what `frozen_stages` counts.

    A stage holds the largest submodules all of whose parameters are its own (so freezing it can put
    its BatchNorm layers, dropout and stochastic depth in eval mode), and any parameter left over.
    """
    modules = dict(net.named_modules())
    parameters = dict(net.named_parameters())
    result = []
    for stage, members in _stage_parameter_names(net):
        owned, covered, blocks = set(members), set(), []
        for path, module in modules.items():
            if not path or any(path.startswith(f"{taken}.") for taken in covered):
                continue
            inside = [f"{path}.{name}" for name, _ in module.named_parameters()]
            if inside and owned.issuperset(inside):
                blocks.append(module)
                covered.add(path)
        in_blocks = {id(p) for block in blocks for p in block.parameters()}
        loose = [parameters[name] for name in members if id(parameters[name]) not in in_blocks]
        result.append(Stage(stage, blocks, loose))
    return result


# --- what a backbone expects to see ------------------------------------------------------------------
def backbone_data_config(arch: str, weights: str | None = None) -> DataConfig:
    """The data config of `arch`'s weights, read from metadata only (nothing is downloaded or built).

    timm: the pretrained config of the name's tag (the default tag without one), through timm's own
    `resolve_data_config`. torchvision: the transforms of the weights `weights` names, or of the arch's
    DEFAULT weights (what `model.weights_path` files usually hold). It is the same whether the weights
    are loaded or not, as timm's models carry their pretrained config from random init too; a backbone
    without one gets ImageNet's.
    """
    if arch.startswith(TIMM_PREFIX):
        pretrained_cfg = _timm_pretrained_cfg(arch.removeprefix(TIMM_PREFIX))
        if pretrained_cfg is None:
            return IMAGENET_DATA
        from timm.data import resolve_data_config  # the extra is there: _timm_pretrained_cfg imported it

        config = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict())
        return DataConfig(
            image_size=int(config["input_size"][-1]),
            mean=tuple(float(v) for v in config["mean"]),
            std=tuple(float(v) for v in config["std"]),
            interpolation=str(config["interpolation"]),
        )
    check_weights(arch, weights)
    members = torchvision.models.get_model_weights(arch).__members__
    name = weights if weights is not None else "DEFAULT"
    if name not in members:
        return IMAGENET_DATA
    transforms = members[name].transforms()  # torchvision's ImageClassification preset: metadata only
    return DataConfig(
        image_size=int(transforms.crop_size[0]),
        mean=tuple(float(v) for v in transforms.mean),
        std=tuple(float(v) for v in transforms.std),
        interpolation=transforms.interpolation.value,
    )


# --- building ----------------------------------------------------------------------------------------
def weights_names(arch: str) -> list[str]:
    """The values `model.weights` takes for `arch` (besides null)."""
    if arch.startswith(TIMM_PREFIX):
        return [TIMM_WEIGHTS]
    _torchvision_family(arch)
    return list(torchvision.models.get_model_weights(arch).__members__)


def check_arch(arch: str) -> None:
    """Raise ConfigError, naming what to use, for an arch fruitres cannot build."""
    if arch.startswith(TIMM_PREFIX):
        _timm_pretrained_cfg(arch.removeprefix(TIMM_PREFIX))
    else:
        _torchvision_family(arch)


def check_weights(arch: str, weights: str | None) -> None:
    """Raise ConfigError unless `weights` is null or one of `arch`'s weights names."""
    if weights is not None and weights not in weights_names(arch):
        raise ConfigError(
            f"model.weights={weights} is not allowed for {arch}; use null or one of "
            f"{', '.join(weights_names(arch))}"
        )


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError('model.arch=timm/... needs the timm extra: pip install -e ".[timm]"') from None
    return timm


def _timm_pretrained_cfg(name: str):
    """timm's pretrained config of `name` (its tag's, or the default tag's; None if it has none), once
    timm knows the name and its tag."""
    timm = _timm()
    try:
        if timm.is_model(name):
            return timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an architecture timm has, with a tag it lacks
        pass
    raise ConfigError(
        f"model.arch=timm/{name} is not allowed; use a name timm.list_models() lists, with a tag of "
        "timm.list_pretrained() if any"
    )


def build_backbone(
    arch: str,
    num_classes: int,
    weights: str | None = None,
    weights_path: str | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """A network whose head has `num_classes` outputs, the rest from `weights` or `weights_path` if given.

    `weights` names a torchvision weights enum member (e.g. IMAGENET1K_V1, fetched into the torch hub
    cache) or, for `timm/<name>`, DEFAULT: timm's pretrained weights of that name. `weights_path` is a
    local state-dict file of the same architecture, or a fruitres checkpoint (air-gapped clusters).
    `image_size` is the input size a timm model of a fixed input size (ViT, DeiT, Swin...) is built
    for; None builds it for its own. Other networks take any size their strides and windows allow.
    """
    check_weights(arch, weights)
    if arch.startswith(TIMM_PREFIX):
        net = _create_timm(arch.removeprefix(TIMM_PREFIX), num_classes, weights is not None, image_size)
    else:
        _torchvision_family(arch)
        net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        if weights is not None and weights_path is None:
            _load_backbone(net, _download_weights(arch, weights), weights)
    if weights_path is not None:
        _load_backbone(net, _load_state_dict_file(Path(weights_path).expanduser(), arch), weights_path)
    return net


def _create_timm(name: str, num_classes: int, pretrained: bool, image_size: int | None) -> nn.Module:
    pretrained_cfg = _timm_pretrained_cfg(name)
    sized = {}
    if image_size is not None and pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        sized = {"img_size": image_size}  # its position embeddings for this size (timm resamples weights)
        _check_timm_size(name, image_size, pretrained_cfg.input_size[-1])
    try:
        return _timm().create_model(name, pretrained=pretrained, num_classes=num_classes, **sized)
    except (OSError, RuntimeError) as error:  # no network, or no Hugging Face Hub cache entry
        reason = first_line(error)
        raise WeightsUnavailableError(
            f"cannot fetch timm's weights of {name} ({reason}); put them in the Hugging Face cache "
            "(HF_HOME), or pass model.weights_path=<state dict file>, or train from random init with "
            "model.weights=null"
        ) from None


def _check_timm_size(name: str, image_size: int, own_size: int) -> None:
    """A one-line error when timm's `name` built for `image_size` cannot take images of that size (MaxViT:
    its windows must divide its feature maps), naming the nearest multiples of 32 it can take. The model
    is built and run on the meta device: shapes only, no memory or compute."""

    def refusal(size: int) -> str | None:
        try:
            with torch.device("meta"):
                net = _timm().create_model(name, pretrained=False, num_classes=1, img_size=size)
                net(torch.empty(1, 3, size, size))
        except AssertionError as error:  # timm checks sizes with asserts
            return first_line(error)
        except Exception:  # an op the meta device lacks says nothing of the size: the real build decides
            return None
        return None

    reason = refusal(image_size)
    if reason is None:
        return
    below, above = max(32, image_size // 32 * 32), (image_size // 32 + 1) * 32
    sizes = [size for size in dict.fromkeys((below, above)) if refusal(size) is None]
    allowed = f"e.g. {' or '.join(map(str, sizes))}" if sizes else f"e.g. its own {own_size}"
    raise ConfigError(
        f"data.image_size={image_size} does not fit timm/{name} ({reason}); use a size it takes, "
        f"{allowed}, or data.image_size=null for its own {own_size}"
    )


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load everything but the head, whose shape depends on the classes the weights were trained for.

    Every backbone tensor must be there with its shape; the first one that is not is named in the error.
    """
    head = set(head_parameter_names(model))
    expected = {key: value for key, value in model.state_dict().items() if key not in head}
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


def torchvision_weights_file(arch: str, name: str) -> Path:
    """The file torchvision reads `arch`'s weights `name` from before downloading them (TORCH_HOME as now)."""
    url = torchvision.models.get_model_weights(arch)[name].url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _download_weights(arch: str, name: str) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_model_weights(arch)[name]
    cached = torchvision_weights_file(arch, name)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash is a RuntimeError
        raise WeightsUnavailableError(
            f"cannot fetch {type(weights).__name__}.{name} from {weights.url} ({error}); put that file at "
            f"{cached}, or pass model.weights_path=<state dict file>, or train from random init with "
            "model.weights=null"
        ) from None


def _load_state_dict_file(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """A state dict, or a fruitres checkpoint (its network's weights, `net.` prefix removed)."""
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


def stage_names(arch: str) -> list[str]:
    """The names of `arch`'s stages, from a network built on the meta device where its builder allows."""
    try:
        with torch.device("meta"):  # no memory, no initialisation
            net = build_backbone(arch, num_classes=2)
    except NotImplementedError:  # a builder that reads tensor values (RegNet's block widths)
        net = build_backbone(arch, num_classes=2)
    return [stage.name for stage in backbone_stages(net)]


def check_frozen_stages(arch: str, frozen_stages: object, names: Sequence[str]) -> None:
    """Raise ConfigError, giving this arch's range and stages, unless `frozen_stages` is 0..len(names)."""
    valid = isinstance(frozen_stages, int) and not isinstance(frozen_stages, bool)
    if not (valid and 0 <= frozen_stages <= len(names)):
        raise ConfigError(
            f"model.frozen_stages={frozen_stages} is not allowed; use an integer 0..{len(names)} "
            f"({arch}'s stages: {', '.join(names)}; 0 = train everything, {len(names)} = only the head)"
        )
