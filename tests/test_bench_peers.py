"""`python -m fruitres.bench peers`: fruitres, fastai's fine_tune (with and without to_bf16) and the
tutorial's loop run on generated data from one weights file, and the table, CSV, JSON and figure say what
each did (shape and consistency, never speed)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from fruitres.bench import cli, peer_inputs, peers
from fruitres.errors import FixableError

REPO = Path(__file__).resolve().parents[1]


def random_resnet18(path: Path) -> Path:
    """A ResNet-18 state dict no peer could have found elsewhere (seeded random weights)."""
    torch.manual_seed(3)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_the_bench_help_lists_the_peers_mode() -> None:
    assert "peers" in cli.parser().format_help()


def test_a_state_dict_installed_as_imagenet_is_what_torchvision_loads_by_that_name(tmp_path: Path) -> None:
    source = random_resnet18(tmp_path / "source.pth")
    installed = peer_inputs.install_as_imagenet(source, tmp_path / "torch_home")
    with peer_inputs.torch_home(tmp_path / "torch_home"):
        assert peer_inputs.cached_weights_file() == installed
        net = peer_inputs.tutorial_net(num_classes=3)  # resnet18(weights=IMAGENET1K_V1), offline
        loaded = peer_inputs.loaded_weights(net)
    assert loaded["weights_sha256"] == peer_inputs.sha256(installed)
    assert loaded["matching_tensors"] == loaded["backbone_tensors"] > 100


def test_a_weights_file_that_holds_no_state_dict_is_named_in_one_line(tmp_path: Path) -> None:
    text = tmp_path / "classes.txt"
    text.write_text("Apple Braeburn\n")
    with pytest.raises(FixableError, match=r"classes.txt: not a readable resnet18 state dict"):
        peer_inputs.install_as_imagenet(text, tmp_path / "torch_home")


def test_epoch_based_peers_run_the_epochs_their_measured_pace_fits_in_the_budget() -> None:
    assert peers.epochs_that_fit(2.0, None) == 1  # no pace yet: one epoch, which measures it
    assert peers.epochs_that_fit(2.0, 25.0) == 4
    assert peers.epochs_that_fit(0.1, 25.0) == 1
    tools = [peers.Peer(tool) for tool in peers.TOOLS]
    assert [peers.turns(tools, shift)[0] for shift in range(4)] == tools


@pytest.mark.slow
def test_peers_runs_every_tool_from_the_same_weights_file_and_writes_table_csv_json_and_figure(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("fastai", reason='the peers extra: pip install -e ".[peers]"')
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(sorted(p.name for p in (tiny_dataset / "Training").iterdir())) + "\n")
    out = tmp_path / "peers"
    command = [
        sys.executable, "-m", "fruitres.bench", "peers", "--data-dir", str(tiny_dataset),
        "--weights", str(random_resnet18(tmp_path / "w.pth")), "--classes-b", str(classes),
        "--budgets-minutes", "0.05", "--image-size", "32", "--out", str(out),
        "data.batch_size=16", "data.num_workers=0", "trainer.accelerator=cpu",
    ]  # fmt: skip
    env = {**os.environ, "FRUITRES_ROOT": str(tmp_path)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    with open(out / "peers.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    labels = {row["tool"] for row in rows}
    assert labels == {peers.Peer(tool, "resnet18").label for tool in peers.TOOLS}
    installed = out / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    for row in rows:  # every tool read that one file and started from all of its backbone
        assert row["weights_sha256"] == peer_inputs.sha256(installed), row["tool"]
        assert row["matching_tensors"] == row["backbone_tensors"], row["tool"]
        assert 0.0 <= float(row["test_acc"]) <= 1.0
    if not torch.cuda.is_available():  # to_bf16() only switches CUDA autocast: nothing on a CPU
        (bf16,) = [row for row in rows if row["tool"] == peers.Peer(peers.FASTAI_BF16).label]
        assert bf16["arithmetic"] == "cpu, output float32"
    record = json.loads((out / "peers.json").read_text())
    assert record["settings"]["weights_sha256"] == peer_inputs.sha256(installed)
    assert len(record["points"]) == len(labels)
    assert "| fastai fine_tune |" in (out / "peers.md").read_text()
    assert (out / "peers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
