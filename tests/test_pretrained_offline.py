"""The mission's command, `python -m fruitres.train experiment=resnet18`, through the real pretrained-weights
code with no network: torchvision's loader reads `$TORCH_HOME/hub/checkpoints/<file of the weights' URL>`
and timm's reads the Hugging Face cache, as on any machine whose cache is filled (after a first run, or
copied there on a cluster). The files hold seeded random weights, so a run that did not read them is seen."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import CONF_DIR, tiny_run_overrides

from fruitres.models.backbone import torchvision_weights_file
from fruitres.models.weights_cache import install_weights_file
from fruitres.run_folders import read_record

pytestmark = pytest.mark.slow  # real training processes: about a minute each on 2 cores

WEIGHTS = "IMAGENET1K_V1"
TIMM_NAME = "resnet18.a1_in1k"
NO_NETWORK = {  # the discard port: any download is refused at once
    **{proxy: "http://127.0.0.1:9" for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")},
    "no_proxy": "",
    "NO_PROXY": "",
    "HF_HUB_OFFLINE": "1",
}


def seeded_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`net`'s state from a seed no run uses, BatchNorm statistics included: what the cache file holds."""
    torch.manual_seed(1234)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return net.state_dict()


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME whose weights cache holds resnet18's IMAGENET1K_V1 file, under torchvision's own name."""
    home = tmp_path_factory.mktemp("torch-home")
    source = home / "downloaded.pth"
    torch.save(seeded_state(torchvision.models.resnet18()), source)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        installed = install_weights_file("resnet18", WEIGHTS, source)
    assert (
        installed
        == home / "hub" / "checkpoints" / Path(torchvision.models.ResNet18_Weights[WEIGHTS].url).name
    )
    return home


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME laid out as huggingface_hub's cache: timm/<name>'s main revision holds model.safetensors."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    home = tmp_path_factory.mktemp("hf-home")
    repo_id = timm.models.get_pretrained_cfg(TIMM_NAME).hf_hub_id
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    revision = hashlib.sha1(repo_id.encode()).hexdigest()  # any commit hash: refs/main points to it
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    state = seeded_state(timm.create_model(TIMM_NAME, pretrained=False))
    save_file(state, repo / "snapshots" / revision / "model.safetensors")
    return home


def train(overrides: list[str], run_dir: Path, dataset: Path, **env: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        *("-m", "fruitres.train", *overrides, *tiny_run_overrides(dataset), f"hydra.run.dir={run_dir}"),
    ]
    environment = {**os.environ, **NO_NETWORK, "FRUITRES_ROOT": str(run_dir.parent), **env}
    return subprocess.run(
        command, cwd=CONF_DIR.parent, env=environment, capture_output=True, text=True, timeout=900
    )


def trained_checkpoint(run_dir: Path) -> dict:
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    return torch.load(best, map_location="cpu", weights_only=True)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0))


def assert_trained_and_tested(result: subprocess.CompletedProcess, run_dir: Path) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "ok" and 0.0 <= record["metrics"]["test/acc"] <= 1.0
    return trained_checkpoint(run_dir)


def preprocessing(checkpoint: dict) -> tuple:
    data = checkpoint["datamodule_hyper_parameters"]
    return tuple(data["mean"]), tuple(data["std"]), data["interpolation"]


def torchvision_weights_file_in(torch_home: Path) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        return torchvision_weights_file("resnet18", WEIGHTS)


def test_resnet18_reads_torchvision_weights_from_the_cache_and_uses_their_preprocessing(
    torch_home: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = train(
        ["experiment=resnet18", "trainer.max_epochs=1"], run_dir, tiny_dataset, TORCH_HOME=str(torch_home)
    )
    checkpoint = assert_trained_and_tested(result, run_dir)

    cached = torch.load(torchvision_weights_file_in(torch_home), weights_only=True)
    trained = checkpoint["state_dict"]
    for name in (
        "conv1.weight",
        "layer2.0.conv1.weight",
        "layer4.1.conv2.weight",
    ):  # fine-tuned from the file
        assert cosine(trained[f"net.{name}"], cached[name]) > 0.99, name
    assert checkpoint["hyper_parameters"]["weights"] == WEIGHTS
    transforms = torchvision.models.ResNet18_Weights[WEIGHTS].transforms()
    assert preprocessing(checkpoint) == (
        tuple(transforms.mean),
        tuple(transforms.std),
        transforms.interpolation.value,
    )


def test_resnet18_without_the_cache_file_fails_offline_naming_where_to_put_it(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    empty_home = tmp_path / "torch-home"
    result = train(["experiment=resnet18"], tmp_path / "run", tiny_dataset, TORCH_HOME=str(empty_home))
    assert result.returncode != 0
    assert str(torchvision_weights_file_in(empty_home)) in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_linear_probe_keeps_the_cached_backbone_exactly(
    torch_home: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = ["experiment=resnet18_linear_probe", "trainer.max_epochs=1"]
    checkpoint = assert_trained_and_tested(
        train(overrides, run_dir, tiny_dataset, TORCH_HOME=str(torch_home)), run_dir
    )

    cached = torch.load(torchvision_weights_file_in(torch_home), weights_only=True)
    trained = checkpoint["state_dict"]
    for name in ("conv1.weight", "layer3.1.conv2.weight", "layer4.1.bn2.running_var"):
        torch.testing.assert_close(trained[f"net.{name}"], cached[name], msg=name)


def test_gradual_unfreezing_starts_from_the_cached_backbone(
    torch_home: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = ["experiment=resnet18_gradual", "trainer.max_epochs=2"]  # layer4 joins at epoch 1
    checkpoint = assert_trained_and_tested(
        train(overrides, run_dir, tiny_dataset, TORCH_HOME=str(torch_home)), run_dir
    )

    cached = torch.load(torchvision_weights_file_in(torch_home), weights_only=True)
    trained = checkpoint["state_dict"]
    torch.testing.assert_close(
        trained["net.layer1.0.conv1.weight"], cached["layer1.0.conv1.weight"]
    )  # frozen
    assert cosine(trained["net.layer4.1.conv2.weight"], cached["layer4.1.conv2.weight"]) > 0.99


def test_a_timm_model_reads_its_weights_from_the_hugging_face_cache_offline(
    hf_home: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    import timm
    from safetensors.torch import load_file

    run_dir = tmp_path / "run"
    overrides = [
        "experiment=resnet18",
        f"model.arch=timm/{TIMM_NAME}",
        "model.weights=DEFAULT",
        "trainer.max_epochs=1",
    ]
    checkpoint = assert_trained_and_tested(
        train(overrides, run_dir, tiny_dataset, HF_HOME=str(hf_home)), run_dir
    )

    (cached_file,) = hf_home.glob("hub/models--*/snapshots/*/model.safetensors")
    cached = load_file(cached_file)
    assert (
        cosine(checkpoint["state_dict"]["net.layer3.0.conv1.weight"], cached["layer3.0.conv1.weight"]) > 0.99
    )
    config = timm.models.get_pretrained_cfg(TIMM_NAME)
    assert preprocessing(checkpoint) == (tuple(config.mean), tuple(config.std), config.interpolation)
