"""`python -m fruitres.export ckpt_path=<file> format=onnx|torchscript`: a model usable without fruitres."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fruitres.checkpoints.loading import LoadedCheckpoint, load_checkpoint
from fruitres.files import replaced_whole, write_text_whole
from fruitres.models.backbone import Logits
from fruitres.run.task import hydra_main, run_task

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def example_inputs(checkpoint: LoadedCheckpoint) -> torch.Tensor:
    return torch.zeros(2, 3, checkpoint.image_size, checkpoint.image_size)


@contextmanager
def plain_attention() -> Iterator[None]:
    """Without nn.MultiheadAttention's fused inference kernel, which has no ONNX form.

    PyTorch takes it in eval mode when no parameter needs gradients: a ViT linear probe's checkpoint.
    """
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def export_onnx(checkpoint: LoadedCheckpoint, path: Path, opset: int) -> None:
    """ONNX graph with a dynamic batch axis, run by ONNX Runtime or any ONNX consumer."""
    # The TorchScript-based exporter: the torch.export-based default needs the extra onnxscript package.
    with warnings.catch_warnings(), plain_attention():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            checkpoint.model,
            (example_inputs(checkpoint),),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
        )


def export_torchscript(checkpoint: LoadedCheckpoint, path: Path) -> None:
    """A traced TorchScript module, loaded with `torch.jit.load` without this package."""
    # The network from images to logits, as the module computes them; tracing the LightningModule itself
    # trips on its properties that need a Trainer.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        torch.jit.trace(Logits(checkpoint.model.net), example_inputs(checkpoint)).save(str(path))


def metadata(checkpoint: LoadedCheckpoint, model_file: Path, fmt: str) -> dict[str, Any]:
    """What a consumer needs beside the model: class names in output order and the preprocessing."""
    size = checkpoint.image_size
    return {
        "format": fmt,
        "model_file": model_file.name,
        "checkpoint": str(checkpoint.path),
        "arch": checkpoint.model.hparams.arch,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(checkpoint.class_names)], "softmax": False},
        "preprocessing": checkpoint.preprocessing(),
        "class_names": checkpoint.class_names,
    }


def export(cfg: DictConfig) -> Path:
    """Write model.<ext> and model.json into the run directory; return the model file."""
    checkpoint = load_checkpoint(cfg.ckpt_path)
    model_file = Path(cfg.paths.output_dir) / f"model{FORMATS[cfg.format]}"
    with replaced_whole(model_file) as partial:
        if cfg.format == "onnx":
            export_onnx(checkpoint, partial, cfg.opset)
        else:
            export_torchscript(checkpoint, partial)
    meta_file = model_file.with_suffix(".json")
    write_text_whole(meta_file, json.dumps(metadata(checkpoint, model_file, cfg.format), indent=2))
    log.info("Exported %s and %s", model_file, meta_file)
    return model_file


def export_task(cfg: DictConfig) -> dict[str, float]:
    model_file = export(cfg)
    return {"export/model_mib": model_file.stat().st_size / 2**20}


@hydra_main("export")
def main(cfg: DictConfig) -> float | None:
    return run_task(cfg, export_task)


if __name__ == "__main__":
    main()
