"""`python -m fruitres.predict ckpt_path=<file> inputs=<image|folder|glob>`: top-k classes per image."""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from fruitres.checkpoints.loading import load_checkpoint
from fruitres.data.folders import IMAGE_EXTENSIONS, is_image_file
from fruitres.data.image_files import ImageFilesDataModule
from fruitres.errors import ConfigError
from fruitres.files import write_bytes_whole
from fruitres.models.tta import check_tta
from fruitres.reports.figures import to_png
from fruitres.reports.multi_fruit import multi_fruit_figure, summary_line
from fruitres.reports.predictions import Prediction, TopKPredictions, print_predictions, write_predictions
from fruitres.run.provenance import note_trainer
from fruitres.run.task import hydra_main, run_task

log = logging.getLogger(__name__)


def expand_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """Files named by paths, folders (their image files, recursively) and globs, in order, without repeats.

    A file named explicitly or matched by a glob is kept whatever it holds, so a non-image is reported.
    """
    patterns = [inputs] if isinstance(inputs, str) else list(inputs)
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not images:
                raise ConfigError(
                    f"inputs={pattern} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                    "give a folder of images, an image or a glob"
                )
            files.extend(images)
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            if not matches:
                raise ConfigError(f"inputs={pattern} matches no file; give an image, a folder or a glob")
            files.extend(m for m in matches if m.is_file())
    return list(dict.fromkeys(files))


def predict(cfg: DictConfig) -> list[Prediction]:
    """Inputs → checkpoint → trainer.predict → top-k per file → table, predictions.json and .csv."""
    paths = expand_inputs(list(cfg.inputs) if isinstance(cfg.inputs, ListConfig) else str(cfg.inputs))
    checkpoint = load_checkpoint(cfg.ckpt_path)
    checkpoint.model.tta = check_tta(cfg.get("tta"))  # test-time augmentation: softmax averaged over flips
    files = ImageFilesDataModule(paths, checkpoint.datamodule, cfg.data.batch_size, cfg.data.num_workers)
    top_k = TopKPredictions(paths, checkpoint.class_names, cfg.top_k)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[top_k], logger=False)
    trainer.predict(checkpoint.model, datamodule=files, return_predictions=False)
    note_trainer(trainer)

    predictions = top_k.predictions
    print_predictions(predictions, cfg.max_rows)
    json_path, csv_path = write_predictions(predictions, Path(cfg.paths.output_dir), top_k.top_k)
    report_named_fruits(predictions, Path(cfg.paths.output_dir), top_k.top_k)
    unreadable = sum(1 for p in predictions if p.error)
    if unreadable:
        log.warning("%d of %d file(s) could not be read; see the error column", unreadable, len(predictions))
    log.info("Predictions written to %s and %s", json_path, csv_path)
    return predictions


def report_named_fruits(predictions: list[Prediction], output_dir: Path, top_k: int) -> None:
    """Where file names list fruits (Fruits-360's test-multiple_fruits/): a summary line, multi_fruit.png."""
    named = [p.fruits_named for p in predictions]
    summary = summary_line(named, [p.fruits_in_top_k for p in predictions], top_k)
    if summary:
        log.info("Fruits named in file names: %s", summary)
        figure = multi_fruit_figure(predictions)
        if figure is not None:
            write_bytes_whole(output_dir / "multi_fruit.png", to_png(figure))


def predict_task(cfg: DictConfig) -> dict[str, float]:
    predictions = predict(cfg)
    return {"predict/files": len(predictions), "predict/unreadable": sum(1 for p in predictions if p.error)}


@hydra_main("predict")
def main(cfg: DictConfig) -> float | None:
    return run_task(cfg, predict_task)


if __name__ == "__main__":
    main()
