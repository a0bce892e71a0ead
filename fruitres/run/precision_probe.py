"""`trainer.precision=fastest`: the precision that trains this model fastest here, timed before fitting.

The hardware rule (`devices.fastest_precision`, the default) gives bf16-mixed wherever the CPU runs bf16
natively. That is right for dense convolutions (ResNet-18 on AVX-512 BF16: 1.5× float32) and wrong for
depthwise ones (MobileNetV3-small on the same CPU: float32 1.9× bf16-mixed), so a recipe whose backbone may
be either asks for `fastest`: where the CPU has native bf16 both are timed on the run's own model and batch
shape and the faster kept; elsewhere the rule has only one candidate and nothing is timed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from omegaconf import DictConfig
from torch import nn

from fruitres.run import devices

log = logging.getLogger(__name__)

MEASURED = "fastest"  # the trainer.precision value that asks for the timing
CPU_CANDIDATES = ("bf16-mixed", "32-true")


def candidates(accelerator: str) -> tuple[str, ...]:
    """The precisions worth timing on `accelerator`: two on a CPU with native bf16, else the rule's one."""
    if not devices.uses_cuda(accelerator) and devices.cpu_has_native_bf16():
        return CPU_CANDIDATES
    return (devices.fastest_precision(accelerator),)


def forward_context(precision: str) -> contextlib.AbstractContextManager:
    """What Lightning's CPU precision plugin for `precision` enters around each forward pass."""
    plugin = MixedPrecision(precision, "cpu") if precision.endswith("-mixed") else Precision()
    return plugin.forward_context()


def step_seconds(net: nn.Module, images: torch.Tensor, precision: str, steps: int, warmup: int) -> float:
    """The median seconds of one forward and backward pass of `net` on `images` in `precision`."""
    times = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        with forward_context(precision):
            logits = net(images)
        logits.float().logsumexp(dim=1).mean().backward()
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def measured_precision(
    net: nn.Module,
    batch_shape: Sequence[int],
    accelerator: str,
    *,
    channels_last: bool = False,
    steps: int = 3,
    warmup: int = 1,
) -> str:
    """The candidate precision with the fastest training step of `net` on a batch of `batch_shape`.

    The timing runs on a copy of `net` inside a forked random stream, so the run's weights, BatchNorm
    statistics and random numbers are those it would have had without it.
    """
    options = candidates(accelerator)
    if len(options) == 1:
        log.info("trainer.precision=fastest: %s, the only fast precision on this %s", options[0], accelerator)
        return options[0]
    probe = copy.deepcopy(net).train()
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global stream; the run's stays as it was
        images = torch.randn(*batch_shape)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        seconds = {option: step_seconds(probe, images, option, steps, warmup) for option in options}
    fastest = min(seconds, key=seconds.get)
    timings = ", ".join(f"{option} {seconds[option]:.3f} s" for option in options)
    log.info(
        "trainer.precision=fastest: %s (a training step of %s on %s: %s)",
        fastest,
        type(net).__name__,
        "×".join(map(str, batch_shape)),
        timings,
    )
    return fastest


def settle_precision(
    trainer_config: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule
) -> None:
    """Replace `trainer.precision=fastest` in `trainer_config` by the timed winner, for every later use."""
    if trainer_config.precision == MEASURED:
        size, batch_size = datamodule.hparams.image_size, datamodule.hparams.batch_size
        trainer_config.precision = measured_precision(
            model.net,
            (batch_size, 3, size, size),
            trainer_config.accelerator,
            channels_last=model.hparams.channels_last,
        )
