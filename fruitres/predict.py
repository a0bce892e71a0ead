"""`python -m fruitres.predict ckpt_path=<file> inputs=<image|folder|glob>`: top-k classes per image."""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.table import Table

from fruitres.config import print_config_tree
from fruitres.data.folders import is_image_file
from fruitres.inference import LoadedCheckpoint, load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """The top-k classes of one file with their probabilities, or why the file could not be read."""

    path: str
    classes: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None


def expand_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """Files named by paths, folders (their image files, recursively) and globs, in order, without repeats.

    A file named explicitly or matched by a glob is kept whatever it holds, so a non-image is reported.
    """
    patterns = [inputs] if isinstance(inputs, str) else list(inputs)
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)))
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            if not matches:
                raise FileNotFoundError(
                    f"inputs={pattern} matches no file; give an image, a folder or a glob"
                )
            files.extend(m for m in matches if m.is_file())
    return list(dict.fromkeys(files))


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when there is a GPU, else the CPU; anything else is a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _read(checkpoint: LoadedCheckpoint, path: Path) -> torch.Tensor | str:
    """The image as uint8 CHW, or the error that reading it raised."""
    try:
        return checkpoint.load_image(path)
    except Exception as error:  # PIL raises many types for unreadable files; each is reported, not fatal
        return f"{type(error).__name__}: {error}"


def _batches(paths: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def predict_files(
    checkpoint: LoadedCheckpoint,
    paths: Sequence[Path],
    top_k: int = 5,
    batch_size: int = 64,
    device: str = "auto",
) -> list[Prediction]:
    """Top-k predictions for every file, batched on `device` (auto: CUDA when there is one)."""
    target = resolve_device(device)
    model = checkpoint.model.to(target)
    names = checkpoint.class_names
    k = min(top_k, len(names))
    predictions: list[Prediction] = []
    with ThreadPoolExecutor() as pool, torch.inference_mode():
        for batch in _batches(paths, batch_size):
            decoded = list(pool.map(lambda path: _read(checkpoint, path), batch))
            good = [index for index, item in enumerate(decoded) if isinstance(item, torch.Tensor)]
            rows: list[Prediction] = [
                Prediction(str(path), error=item) for path, item in zip(batch, decoded, strict=True)
            ]
            if good:
                images = torch.stack([decoded[index] for index in good]).to(target)
                probabilities, indices = (
                    model(checkpoint.inputs(images)).float().softmax(dim=1).topk(k, dim=1)
                )
                for row, probs, classes in zip(good, probabilities.tolist(), indices.tolist(), strict=True):
                    rows[row] = Prediction(str(batch[row]), [names[c] for c in classes], probs)
            predictions.extend(rows)
    return predictions


def write_outputs(predictions: Sequence[Prediction], output_dir: Path, top_k: int) -> tuple[Path, Path]:
    """predictions.json (a list of records) and predictions.csv (one row per file, class_i/probability_i)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = output_dir / "predictions.json", output_dir / "predictions.csv"
    json_path.write_text(json.dumps([asdict(p) for p in predictions], indent=2))
    ranks = range(1, top_k + 1)
    fields = ["path", "error", *(f"{name}_{i}" for i in ranks for name in ("class", "probability"))]
    with open(csv_path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        for p in predictions:
            ranked = {f"class_{i}": c for i, c in enumerate(p.classes, 1)}
            ranked |= {f"probability_{i}": f"{q:.6f}" for i, q in enumerate(p.probabilities, 1)}
            writer.writerow({"path": p.path, "error": p.error or "", **ranked})
    return json_path, csv_path


def print_predictions(predictions: Sequence[Prediction], max_rows: int) -> None:
    """The first `max_rows` files and every unreadable one, paths relative to their common folder."""
    if not predictions:
        return
    root = Path(os.path.commonpath([Path(p.path).parent for p in predictions]))
    title = f"Predictions for {len(predictions)} file(s) in {root}"
    table = Table("file", "prediction", "next classes", title=title, expand=True)
    errors = [p for p in predictions if p.error]
    shown = [p for p in predictions if not p.error][:max_rows] + errors
    for p in shown:
        name = str(Path(p.path).relative_to(root))
        if p.error:
            table.add_row(name, f"[red]unreadable: {p.error}[/red]", "")
            continue
        others = ", ".join(f"{c} {q:.1%}" for c, q in zip(p.classes[1:], p.probabilities[1:], strict=True))
        table.add_row(name, f"[bold]{p.classes[0]}[/bold] {p.probabilities[0]:.1%}", others)
    if len(shown) < len(predictions):
        table.caption = f"{len(predictions) - len(shown)} more rows in predictions.csv"
    Console().print(table)


def predict(cfg: DictConfig) -> list[Prediction]:
    """Load the checkpoint, predict every input file, print the table and write JSON and CSV."""
    inputs = list(cfg.inputs) if isinstance(cfg.inputs, ListConfig) else str(cfg.inputs)
    paths = expand_inputs(inputs)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    predictions = predict_files(checkpoint, paths, cfg.top_k, cfg.batch_size, cfg.device)
    print_predictions(predictions, cfg.max_rows)
    top_k = min(cfg.top_k, len(checkpoint.class_names))
    json_path, csv_path = write_outputs(predictions, Path(cfg.paths.output_dir), top_k)
    unreadable = sum(1 for p in predictions if p.error)
    if unreadable:
        log.warning("%d of %d file(s) could not be read; see the error column", unreadable, len(predictions))
    log.info("Predictions written to %s and %s", json_path, csv_path)
    return predictions


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / "config_tree.log")
    predict(cfg)


if __name__ == "__main__":
    main()
