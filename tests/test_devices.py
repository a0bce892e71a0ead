"""Which device and precision a run gets: each branch of the rule with its probes simulated, and the rule
checked against the machine the suite runs on (its CPU flags read independently of torch's probes)."""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_flags, expected_cpu_precision

from fruitres.run import devices


def simulate(
    monkeypatch: pytest.MonkeyPatch,
    *,
    cuda: bool = False,
    cuda_bf16: bool = False,
    avx512_bf16: bool = False,
    amx: bool = False,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: cuda_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


@pytest.mark.parametrize(
    ("machine", "accelerator", "expected"),
    [
        ({"cuda": True, "cuda_bf16": True}, "auto", "bf16-mixed"),  # Ampere and later
        ({"cuda": True, "cuda_bf16": False}, "gpu", "16-mixed"),  # Volta, Turing
        ({"cuda": True, "cuda_bf16": True}, "cpu", "32-true"),  # a GPU on the machine, a CPU run asked
        ({"avx512_bf16": True}, "cpu", "bf16-mixed"),  # Zen 4 and later, Cooper Lake
        ({"amx": True}, "auto", "bf16-mixed"),  # Sapphire Rapids and later
        ({}, "auto", "32-true"),  # AVX2-only CPUs emulate bf16 many times slower than float32
    ],
)
def test_fastest_precision_follows_the_hardware_rule(
    machine: dict, accelerator: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate(monkeypatch, **machine)
    assert devices.fastest_precision(accelerator) == expected


def test_a_torch_without_the_cpu_probes_reads_as_float32_only(monkeypatch: pytest.MonkeyPatch) -> None:
    simulate(monkeypatch)
    for probe in devices.CPU_BF16_PROBES.values():
        monkeypatch.delattr(torch.cpu, probe)
    assert devices.cpu_bf16_features() == {"avx512_bf16": False, "amx": False}
    assert devices.fastest_precision("cpu") == "32-true"


@pytest.mark.parametrize(
    ("accelerator", "cuda_available", "expected"),
    [
        ("gpu", False, True),
        ("cuda", False, True),
        ("cpu", True, False),
        ("auto", True, True),
        ("auto", False, False),
    ],
)
def test_uses_cuda_when_asked_or_when_auto_finds_a_gpu(
    accelerator: str, cuda_available: bool, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate(monkeypatch, cuda=cuda_available)
    assert devices.uses_cuda(accelerator) is expected


def test_sweep_jobs_take_the_visible_gpus_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert [devices.sweep_job_gpu(job) for job in (0, 1, 2, "3")] == ["2", "5", "2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.sweep_job_gpu(0) == ""


@pytest.mark.skipif(cpu_flags() is None, reason="CPU flags are read from /proc/cpuinfo (Linux)")
def test_this_machines_cpu_precision_is_what_its_flags_call_for() -> None:
    flags = cpu_flags()
    assert devices.cpu_bf16_features() == {"avx512_bf16": "avx512_bf16" in flags, "amx": "amx_tile" in flags}
    assert devices.fastest_precision("cpu") == expected_cpu_precision()


def test_the_machine_summary_names_the_cpu_its_bf16_features_and_the_precision() -> None:
    summary = devices.machine_summary()
    assert devices.cpu_model() in summary
    for name, present in devices.cpu_bf16_features().items():
        assert f"{name} {'yes' if present else 'no'}" in summary
    assert f"cpu {devices.fastest_precision('cpu')}" in summary
