"""Checks of the composed config before any work, each failing with one line: key, bad value, what is allowed.

Hydra itself already refuses unknown keys (``data.bogus=1``) and unknown group options (``experiment=nope``,
``model=resnet99``) with a one-line message listing the choices; these rules cover values that compose
fine but cannot run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch
from lightning.fabric.connector import _PRECISION_INPUT_INT, _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
from omegaconf import DictConfig, ListConfig, OmegaConf

from fruitres.callbacks.feature_cache import caches_features
from fruitres.data.datamodule import BAD_IMAGE_POLICIES
from fruitres.data.embedded import MIN_IMAGE_SIZE
from fruitres.data.images import INTERPOLATIONS
from fruitres.errors import ConfigError
from fruitres.models.backbone import check_arch, check_frozen_stages, check_weights, stage_names
from fruitres.models.classifier import backbone_is_fixed

_ABSENT = object()
PRECISIONS = tuple(  # what lightning.Trainer(precision=...) takes
    value
    for kind in (_PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS, _PRECISION_INPUT_INT)
    for value in get_args(kind)
)


@dataclass(frozen=True)
class Rule:
    key: str
    allowed: str  # shown to the user: "use <allowed>"
    check: Callable[[Any], bool]
    applies: Callable[[DictConfig], bool] = lambda cfg: True  # a rule that depends on other keys


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def int_at_least(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and v >= low and (high is None or v <= high)


def number_in(low: float, high: float | None = None, *, low_open: bool = False) -> Callable[[Any], bool]:
    """low ≤ v < high (low < v with low_open); no upper bound when high is None."""
    return lambda v: _is_number(v) and (v > low if low_open else v >= low) and (high is None or v < high)


def one_of(choices: Sequence[Any]) -> Callable[[Any], bool]:
    return lambda v: v in choices


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def per_channel(positive: bool = False) -> Callable[[Any], bool]:
    """Three numbers, one per RGB channel (each > 0 if `positive`)."""
    return lambda v: (
        isinstance(v, ListConfig | list | tuple)
        and len(v) == 3
        and all(_is_number(x) and (x > 0 or not positive) for x in v)
    )


def trains_on_cached_features(cfg: DictConfig) -> bool:
    """Whether callbacks.linear_probe_cache will give the head cached features instead of images, by the
    rules the callback and the model apply (`caches_features`, `backbone_is_fixed`)."""
    arch = OmegaConf.select(cfg, "model.arch", default=None)
    if OmegaConf.select(cfg, "callbacks.linear_probe_cache", default=None) is None or arch is None:
        return False
    augment = OmegaConf.select(cfg, "data.augment", default=None) or {}
    fixed = backbone_is_fixed(
        OmegaConf.select(cfg, "model.frozen_stages", default=0),
        len(stage_names(arch)),
        bool(OmegaConf.select(cfg, "model.train_bn", default=False)),
    )
    augments = any(entry is not None for entry in augment.values())
    return caches_features(
        fixed, augments, str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    )


RULES: tuple[Rule, ...] = (
    Rule("seed", "an integer", _is_int),
    Rule(
        "data.image_size",
        f"an integer ≥ {MIN_IMAGE_SIZE}, or null for the backbone's own input size",
        optional(int_at_least(MIN_IMAGE_SIZE)),
    ),
    Rule(
        "data.mean",
        "null (the backbone's own) or three numbers, one per RGB channel: [0.5,0.5,0.5]",
        optional(per_channel()),
    ),
    Rule(
        "data.std",
        "null (the backbone's own) or three numbers > 0, one per RGB channel: [0.5,0.5,0.5]",
        optional(per_channel(positive=True)),
    ),
    Rule(
        "data.interpolation",
        f"null (the backbone's own) or one of {', '.join(INTERPOLATIONS)}",
        optional(one_of(tuple(INTERPOLATIONS))),
    ),
    Rule(
        "data.val_fraction",
        "a number > 0 and < 1, e.g. 0.1: the best checkpoint and val/acc_best come from that split",
        number_in(0, 1, low_open=True),
    ),
    Rule("data.train_per_class", "null (all) or an integer ≥ 1", optional(int_at_least(1))),
    Rule("data.batch_size", "an integer ≥ 1", int_at_least(1)),
    Rule("data.num_workers", "null (automatic) or an integer ≥ 0", optional(int_at_least(0))),
    Rule("data.on_bad_image", " or ".join(BAD_IMAGE_POLICIES), one_of(BAD_IMAGE_POLICIES)),
    Rule("model.backbone_lr_mult", "a number ≥ 0", number_in(0)),
    Rule("model.label_smoothing", "a number ≥ 0 and < 1", number_in(0, 1)),
    Rule(
        "model.mix",
        "null with callbacks.linear_probe_cache on a linear probe: its head trains on cached features, "
        "which are never mixed; drop model/mix, or set callbacks.linear_probe_cache=null to mix the images",
        lambda v: v is None,
        applies=trains_on_cached_features,
    ),
    Rule("model.optimizer.lr", "a number > 0", number_in(0, low_open=True)),
    Rule(
        "ckpt_path",
        "an existing .ckpt file (train also takes null, or last: the run's newest checkpoint)",
        lambda v: v is None or v == "last" or Path(str(v)).expanduser().is_file(),
    ),
    Rule("format", "onnx or torchscript", one_of(("onnx", "torchscript"))),
    Rule("top_k", "an integer ≥ 1", int_at_least(1)),
    Rule(
        "trainer.accelerator",
        "cpu or auto here: this machine has no CUDA GPU (torch.cuda.is_available() is False); trainer=auto "
        "takes a GPU where there is one",
        lambda v: v not in ("gpu", "cuda") or torch.cuda.is_available(),
    ),
    Rule("trainer.precision", "one of " + ", ".join(dict.fromkeys(map(str, PRECISIONS))), one_of(PRECISIONS)),
    Rule("trainer.max_epochs", "an integer ≥ 1, or -1 for no limit", lambda v: v == -1 or int_at_least(1)(v)),
)


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that cannot run, before any data or model is touched."""
    _check_required(cfg)
    for rule in RULES:
        value = OmegaConf.select(cfg, rule.key, default=_ABSENT)
        if value is not _ABSENT and not rule.check(value) and rule.applies(cfg):
            raise ConfigError(f"{rule.key}={_shown(value)} is not allowed; use {rule.allowed}")
    _check_model(cfg)


def _shown(value: Any) -> str:
    """A value as the command line would give it; an object's config by its class (model.mix=MixupCutmix)."""
    if isinstance(value, DictConfig) and "_target_" in value:
        return str(value._target_).rsplit(".", 1)[-1]
    return str(value)


# What to pass for the keys an entry point's config leaves as ??? (required on the command line).
REQUIRED_VALUES = {
    "ckpt_path": "a .ckpt of a training run: ckpt_path=logs/train/runs/<time>/checkpoints/<file>.ckpt",
    "inputs": "an image, a folder or a glob: inputs=photos/",
    "source_ckpt": "the source run's best checkpoint: source_ckpt=<run dir>/checkpoints/<file>.ckpt",
}


def _check_required(cfg: DictConfig) -> None:
    """Top-level ??? keys; read without resolving, since interpolations may need Hydra's runtime."""
    missing = [key for key in cfg if OmegaConf.is_missing(cfg, key)]
    if missing:
        key = missing[0]
        raise ConfigError(f"{key} is required; pass {REQUIRED_VALUES.get(key, f'{key}=<value>')}")


def _check_model(cfg: DictConfig) -> None:
    """model.arch is one fruitres builds, frozen_stages in its range, weights one of its own: no download."""
    arch = OmegaConf.select(cfg, "model.arch", default=None)
    if arch is None:
        return
    check_arch(arch)
    frozen_stages = OmegaConf.select(cfg, "model.frozen_stages", default=_ABSENT)
    if frozen_stages is not _ABSENT:
        check_frozen_stages(arch, frozen_stages, stage_names(arch))
    check_weights(arch, OmegaConf.select(cfg, "model.weights", default=None))
