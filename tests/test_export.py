"""`fruitres.export`: ONNX and TorchScript files that give the Lightning module's logits on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import TrainedSweep, compose_config
from PIL import Image, ImageOps

from fruitres.checkpoints.loading import load_checkpoint
from fruitres.data.cache import build_image_cache
from fruitres.data.image_files import ImageFiles
from fruitres.data.images import decoding_rule
from fruitres.export import export

REPO = Path(__file__).resolve().parents[1]


def consumer_pixels(path: Path, size: int, interpolation: str) -> np.ndarray:
    """An RGB JPEG decoded as model.json's `preprocessing.decoding` says, with Pillow alone."""
    with Image.open(path) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
        if rgb.size != (size, size):
            side = min(rgb.size)  # the centred square of side min(width, height)
            left, top = (rgb.width - side) / 2, (rgb.height - side) / 2
            box = (left, top, left + side, top + side)
            rgb = rgb.resize((size, size), Image.Resampling[interpolation.upper()], box=box)
        return np.asarray(rgb)


def consumer_inputs(images: list[Path], meta: dict) -> np.ndarray:
    """What a program without fruitres does with model.json: decode, resize, scale, normalise, NCHW."""
    pre = meta["preprocessing"]
    arrays = [
        consumer_pixels(path, pre["image_size"], pre["interpolation"]).astype(np.float32) for path in images
    ]
    batch = (np.stack(arrays) / 255 - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    return batch.transpose(0, 3, 1, 2).astype(np.float32)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [32, 48, 100])
@pytest.mark.parametrize("shape", [(100, 100), (60, 150)])  # (height, width): square, and wide
def test_documented_decoding_gives_the_pixels_training_and_predict_see(
    tmp_path: Path, size: int, interpolation: str, shape: tuple[int, int]
) -> None:
    """One decoding rule: the training cache, predict and model.json's recipe agree pixel for pixel."""
    photo = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(photo, quality=90)
    rule = decoding_rule(interpolation)
    assert f"Image.Resampling.{interpolation.upper()}" in rule and "exif_transpose" in rule
    (cache_file, unreadable) = build_image_cache([photo], size, tmp_path / "cache", interpolation)
    predicted = ImageFiles([photo], size, interpolation)[0][0].permute(1, 2, 0).numpy()
    expected = consumer_pixels(photo, size, interpolation)
    assert unreadable == []
    assert np.array_equal(np.load(cache_file)[0], expected)
    assert np.array_equal(predicted, expected)


@pytest.fixture(scope="module")
def generated_images(tiny_dataset: Path) -> list[Path]:
    """One generated test image of every class."""
    return [class_dir / "0000.jpg" for class_dir in sorted((tiny_dataset / "Test").iterdir())]


def exported(checkpoint: Path, out: Path, fmt: str) -> tuple[Path, dict]:
    model_file = export(
        compose_config("export", [f"ckpt_path={checkpoint}", f"format={fmt}", f"paths.output_dir={out}"])
    )
    return model_file, json.loads(model_file.with_suffix(".json").read_text())


def lightning_logits(checkpoint: Path, images: list[Path]) -> torch.Tensor:
    """The checkpoint's logits on the files, preprocessed as `fruitres.predict` preprocesses them."""
    loaded = load_checkpoint(checkpoint)
    files = ImageFiles(images, loaded.image_size, loaded.datamodule.hparams.interpolation)
    pixels = torch.stack([files[index][0] for index in range(len(files))])
    with torch.no_grad():
        return loaded.model(loaded.datamodule.normalize(pixels))


def test_onnx_export_gives_the_lightning_modules_logits_from_its_json_alone(
    trained_sweep: TrainedSweep, generated_images: list[Path], tmp_path: Path
) -> None:
    model_file, meta = exported(trained_sweep.checkpoint, tmp_path, "onnx")
    assert meta["preprocessing"]["interpolation"] == "bilinear"  # resnet18's torchvision weights
    assert meta["preprocessing"]["decoding"] == decoding_rule("bilinear")
    assert model_file.name == "model.onnx" and meta["model_file"] == "model.onnx"
    assert meta["class_names"] == sorted(p.parent.name for p in generated_images)

    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    (logits,) = session.run(
        [meta["output"]["name"]], {meta["input"]["name"]: consumer_inputs(generated_images, meta)}
    )

    expected = lightning_logits(trained_sweep.checkpoint, generated_images)
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)


def test_torchscript_export_gives_the_lightning_modules_logits(
    trained_sweep: TrainedSweep, generated_images: list[Path], tmp_path: Path
) -> None:
    model_file, meta = exported(trained_sweep.checkpoint, tmp_path, "torchscript")
    scripted = torch.jit.load(str(model_file))
    with torch.no_grad():
        logits = scripted(torch.from_numpy(consumer_inputs(generated_images, meta)))
    expected = lightning_logits(trained_sweep.checkpoint, generated_images)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert logits.shape == (len(generated_images), len(meta["class_names"]))


@pytest.mark.slow
def test_export_command_writes_model_and_json_in_a_run_dir(
    trained_sweep: TrainedSweep, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "fruitres.export",
        f"ckpt_path={trained_sweep.checkpoint}",
        "format=onnx",
    ]
    env = {**os.environ, "FRUITRES_ROOT": str(tmp_path)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "export" / "runs").iterdir()
    assert (run_dir / "model.onnx").stat().st_size > 1_000_000
    assert json.loads((run_dir / "model.json").read_text())["format"] == "onnx"
