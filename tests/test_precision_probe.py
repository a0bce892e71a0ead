"""`trainer.precision=fastest`: the precision timed on the run's own model, with the machine's bf16 probes
simulated where a branch needs it, and a real training run that records the precision it was given."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from torch import nn

from fruitres.models.classifier import FruitClassifier
from fruitres.run import devices
from fruitres.run.precision_probe import CPU_CANDIDATES, MEASURED, measured_precision
from fruitres.run.provenance import current_provenance
from fruitres.train import train


class SlowIn(nn.Module):
    """A linear layer that sleeps in one precision: the timing must pick the other."""

    def __init__(self, slow_under_autocast: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 4)
        self.slow_under_autocast = slow_under_autocast

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled("cpu") == self.slow_under_autocast:
            time.sleep(0.05)
        return self.linear(images.flatten(1))


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with AVX-512 BF16 or AMX, whatever this one has."""
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)


@pytest.mark.usefixtures("native_bf16")
@pytest.mark.parametrize(("slow_under_autocast", "expected"), [(True, "32-true"), (False, "bf16-mixed")])
def test_the_faster_precision_is_kept(
    slow_under_autocast: bool, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fruitres.run.precision_probe"):
        assert measured_precision(SlowIn(slow_under_autocast), (2, 3, 8, 8), "cpu") == expected
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"trainer.precision=fastest: {expected} (a training step of SlowIn on 2×3×8×8")
    assert all(f"{option} 0." in line for option in CPU_CANDIDATES)  # both timings, in seconds


def test_without_native_bf16_float32_is_the_only_candidate(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.INFO, logger="fruitres.run.precision_probe"):
        assert measured_precision(SlowIn(slow_under_autocast=False), (2, 3, 8, 8), "cpu") == "32-true"
    assert caplog.messages == ["trainer.precision=fastest: 32-true, the only fast precision on this cpu"]


@pytest.mark.usefixtures("native_bf16")
def test_timing_leaves_the_weights_statistics_and_random_stream_as_they_were() -> None:
    model = FruitClassifier(num_classes=3, arch="mobilenet_v3_small", channels_last=True)  # dropout, BN
    before = {name: value.clone() for name, value in model.net.state_dict().items()}
    torch.manual_seed(7)
    measured_precision(model.net, (4, 3, 32, 32), "cpu", channels_last=True)
    after_timing = torch.rand(5)
    torch.manual_seed(7)
    assert torch.equal(after_timing, torch.rand(5))
    assert all(torch.equal(value, before[name]) for name, value in model.net.state_dict().items())
    assert all(p.grad is None for p in model.net.parameters())


@pytest.mark.usefixtures("native_bf16")
def test_a_run_asking_for_fastest_trains_in_a_timed_precision_and_records_it(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_config(
        "train",
        [
            *tiny_train_overrides(tiny_dataset, tmp_path),
            "model.arch=mobilenet_v3_small",
            f"trainer.precision={MEASURED}",
        ],
    )
    with caplog.at_level(logging.INFO, logger="fruitres.run.precision_probe"):
        metrics = train(cfg)
    (line,) = [message for message in caplog.messages if message.startswith("trainer.precision=fastest")]
    chosen = line.split()[1]
    assert chosen in CPU_CANDIDATES
    assert current_provenance()["hardware"]["precision"] == chosen  # what the run record is written from
    assert cfg.trainer.precision == chosen  # what the hyperparameters and any later trainer see
    assert 0.0 <= metrics["test/acc"] <= 1.0
