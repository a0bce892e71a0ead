"""Pretrained weights on a machine without internet: the file goes where torchvision's loader reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from fruitres.errors import FixableError
from fruitres.models.backbone import build_backbone, torchvision_weights_file
from fruitres.models.weights_cache import install_weights_file


@pytest.fixture
def offline_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME, with downloads refused at once (the discard port)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return tmp_path / "torch-home"


def test_an_installed_file_is_what_model_weights_loads_offline(
    offline_torch_home: Path, tmp_path: Path
) -> None:
    torch.manual_seed(7)
    downloaded = torchvision.models.resnet18()
    torch.save(downloaded.state_dict(), tmp_path / "resnet18.pth")

    installed = install_weights_file("resnet18", "IMAGENET1K_V1", tmp_path / "resnet18.pth")

    url_name = Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
    assert installed == offline_torch_home / "hub" / "checkpoints" / url_name
    net = build_backbone("resnet18", num_classes=3, weights="IMAGENET1K_V1")
    torch.testing.assert_close(net.layer3[0].conv1.weight, downloaded.layer3[0].conv1.weight)


@pytest.mark.parametrize("content", ["another architecture", "not a torch file"])
def test_a_file_that_is_not_the_archs_state_dict_is_refused_and_nothing_installed(
    content: str, offline_torch_home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "weights.pth"
    if content == "another architecture":
        torch.save(torchvision.models.resnet34().state_dict(), source)
    else:
        source.write_text("<html>404</html>")
    with pytest.raises(FixableError, match=str(source)):
        install_weights_file("resnet18", "IMAGENET1K_V1", source)
    assert not torchvision_weights_file("resnet18", "IMAGENET1K_V1").exists()


def test_the_command_line_prints_where_the_file_goes_and_refuses_unknown_weights(
    offline_torch_home: Path,
) -> None:
    command = [sys.executable, "-m", "fruitres.models.weights_cache", "resnet18"]
    shown = subprocess.run([*command, "IMAGENET1K_V1"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == str(torchvision_weights_file("resnet18", "IMAGENET1K_V1"))

    refused = subprocess.run([*command, "IMAGENET9K"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert (
        line.startswith("error: model.weights=IMAGENET9K is not allowed for resnet18")
        and "IMAGENET1K_V1" in line
    )
