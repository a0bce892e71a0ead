"""Checks of the composed config before any work, each failing with one line: key, bad value, what is allowed.

Hydra itself already refuses unknown keys (``data.bogus=1``) and unknown group options (``experiment=nope``,
``model=resnet99``) with a one-line message listing the choices; these rules cover values that compose
fine but cannot run.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import os
import socket
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import torch
from hydra.utils import get_object
from lightning.fabric.connector import _PRECISION_INPUT_INT, _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from fruitres.callbacks.feature_cache import caches_features
from fruitres.data.datamodule import BAD_IMAGE_POLICIES
from fruitres.data.embedded import MIN_IMAGE_SIZE
from fruitres.data.images import INTERPOLATIONS
from fruitres.errors import ConfigError
from fruitres.models.backbone import check_arch, check_frozen_stages, check_weights, stage_names
from fruitres.models.classifier import backbone_is_fixed
from fruitres.run.precision_probe import MEASURED

log = logging.getLogger(__name__)

_ABSENT = object()
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeds are unsigned 32-bit
TRACKING_SERVER_TIMEOUT_S = 5  # a reachable server answers at once; MLflow's own retries take minutes
PRECISIONS = tuple(  # what lightning.Trainer(precision=...) takes
    value
    for kind in (_PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS, _PRECISION_INPUT_INT)
    for value in get_args(kind)
)

PRECISION_NAMES = ", ".join(dict.fromkeys(map(str, PRECISIONS)))


def times_precision(cfg: DictConfig) -> bool:
    """Whether the entry point times trainer.precision=fastest on its model (train, lr_find) before use."""
    return OmegaConf.select(cfg, "task_name", default=None) in ("train", "lr_find")


@dataclass(frozen=True)
class Rule:
    key: str
    allowed: str  # shown to the user: "use <allowed>"
    check: Callable[[Any], bool]
    applies: Callable[[DictConfig], bool] = lambda cfg: True  # a rule that depends on other keys


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float: inf and nan compose fine (YAML .inf, the string "inf" from the command line)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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


def one_cpu_process(cfg: DictConfig) -> bool:
    """Whether the trainer runs on the CPU with no strategy asked for: several `devices` there would silently
    become that many DDP processes sharing this machine's cores."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default=None)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    return on_cpu and OmegaConf.select(cfg, "trainer.strategy", default="auto") == "auto"


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
    Rule("seed", f"an integer 0..{MAX_SEED}", int_at_least(0, MAX_SEED)),
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
    Rule(
        "data.classes",
        "null (every class), a text file, or a list of at least two class names: a classifier needs two",
        lambda v: not (isinstance(v, ListConfig | list) and len(v) < 2),
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
    Rule(
        "trainer.devices",
        "1 on the CPU; several CPU processes are DDP: trainer=ddp_cpu trainer.devices=<n> to mean it",
        lambda v: v in (1, "1", "auto") or (isinstance(v, ListConfig | list) and len(v) == 1),
        applies=one_cpu_process,
    ),
    Rule(
        "trainer.precision",
        f"one of {PRECISION_NAMES}",
        one_of(PRECISIONS),
        applies=lambda cfg: not times_precision(cfg),
    ),
    Rule(
        "trainer.precision",
        f"one of {PRECISION_NAMES}, or {MEASURED} (timed on the model)",
        one_of((*PRECISIONS, MEASURED)),
        applies=times_precision,
    ),
    Rule("trainer.max_epochs", "an integer ≥ 1, or -1 for no limit", lambda v: v == -1 or int_at_least(1)(v)),
)


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that cannot run, before any data or model is touched."""
    _check_required(cfg)
    _check_node_keys(cfg)
    for rule in RULES:
        value = OmegaConf.select(cfg, rule.key, default=_ABSENT)
        if value is not _ABSENT and not rule.check(value) and rule.applies(cfg):
            raise ConfigError(f"{rule.key}={_shown(value)} is not allowed; use {rule.allowed}")
    _check_model(cfg)
    _check_weights_path(cfg)
    _check_tracking_server(cfg)
    _clamp_num_workers(cfg)


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


def _check_weights_path(cfg: DictConfig) -> None:
    """model.weights_path is a file torch.save wrote (a zip archive, or the legacy pickle format), and a
    fruitres checkpoint there is of model.arch: never torch's advice to unpickle a stranger's file."""
    value = OmegaConf.select(cfg, "model.weights_path", default=None)
    path = Path(str(value)).expanduser() if value is not None else None
    if path is None or not path.is_file():  # a missing file: the backbone names it
        return
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            legacy = file.read(1) == b"\x80"  # a pickle stream: torch.save's format before PyTorch 1.6
        if not legacy:
            raise ConfigError(
                f"model.weights_path={path} is not a weights file torch.save wrote; give a state-dict file "
                "(torch.save(model.state_dict(), path)) or a fruitres .ckpt"
            )
        return
    arch = OmegaConf.select(cfg, "model.arch", default=None)
    stored = _checkpoint_arch(path)
    if stored is not None and arch is not None and stored != arch:
        raise ConfigError(
            f"model.weights_path={path} holds {stored} weights, not model.arch={arch}'s; use "
            f"model.arch={stored}, or weights of {arch}"
        )


def _checkpoint_arch(path: Path) -> str | None:
    """The arch a fruitres checkpoint records (None for a plain state dict or an unreadable file)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # the backbone loads it again and reports what is wrong, in one line
        return None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    arch = hparams.get("arch") if isinstance(hparams, dict) else None
    return arch if isinstance(arch, str) else None


def _check_tracking_server(cfg: DictConfig) -> None:
    """An MLflow tracking server that does not answer stops the run at once, not after minutes of retries."""
    uri = OmegaConf.select(cfg, "logger.mlflow.tracking_uri", default=None)
    parts = urlsplit(str(uri)) if uri is not None else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=TRACKING_SERVER_TIMEOUT_S).close()
    except OSError as error:
        raise ConfigError(
            f"logger.mlflow.tracking_uri={uri} does not answer ({error.strerror or error} within "
            f"{TRACKING_SERVER_TIMEOUT_S} s); start the server, fix the address, or drop logger=mlflow"
        ) from None


def usable_cores() -> int:
    """The cores this process may run on (a SLURM or taskset limit included)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _clamp_num_workers(cfg: DictConfig) -> None:
    """More DataLoader workers than cores only add processes and memory: cut to the core count, said once."""
    workers, cores = OmegaConf.select(cfg, "data.num_workers", default=None), usable_cores()
    if _is_int(workers) and workers > cores:
        log.warning("data.num_workers=%d is more than the %d usable cores: using %d", workers, cores, cores)
        with open_dict(cfg):
            cfg.data.num_workers = cores


def _check_node_keys(cfg: DictConfig) -> None:
    """A key added to data or model (`+data.batchsize=8`, as Hydra's hint for a typo suggests) that the class
    does not take: named with the closest key, instead of a TypeError when it is built."""
    for group in ("data", "model"):
        node = OmegaConf.select(cfg, group, default=None)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        parameters = inspect.signature(get_object(node._target_)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            continue
        for key in node:
            if not str(key).startswith("_") and key not in parameters:
                close = difflib.get_close_matches(str(key), [str(k) for k in node if k in parameters], n=1)
                hint = f"did you mean {group}.{close[0]}=...?" if close else f"see conf/{group}/"
                raise ConfigError(f"{group}.{key} is not a setting of {group}; {hint} (without the +)")
