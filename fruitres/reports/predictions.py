"""Top-k predictions per file: collected from `trainer.predict`, printed, written as JSON and CSV; with the
fruits each file name names and how many of them are in the top-k (fruitres/reports/multi_fruit.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fruitres.files import write_csv_whole, write_text_whole
from fruitres.reports.multi_fruit import fruits_found, fruits_named


@dataclass
class Prediction:
    """The top-k classes of one file with their probabilities, or why the file could not be read; the
    fruits its file name names and how many of them are in the top-k (None when it names none)."""

    path: str
    classes: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None
    fruits_named: list[str] = field(default_factory=list)
    fruits_in_top_k: int | None = None


class TopKPredictions(BasePredictionWriter):
    """Turns each predicted batch of (images, file indices, errors) into one `Prediction` per file."""

    def __init__(self, paths: Sequence[Path], class_names: Sequence[str], top_k: int) -> None:
        super().__init__(write_interval="batch")
        self.paths = list(paths)
        self.class_names = list(class_names)
        self.top_k = min(top_k, len(class_names))
        self.predictions: list[Prediction | None] = [None] * len(self.paths)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: torch.Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        _, indices, errors = batch
        probabilities, classes = prediction.float().topk(self.top_k, dim=1)
        for index, error, probs, top in zip(
            indices.tolist(), errors, probabilities.tolist(), classes.tolist(), strict=True
        ):
            path = str(self.paths[index])
            if error:
                self.predictions[index] = Prediction(path, error=error)
                continue
            named = fruits_named(path, self.class_names)
            classes = [self.class_names[c] for c in top]
            found = fruits_found(named, classes) if named else None
            self.predictions[index] = Prediction(path, classes, probs, None, named, found)


def write_predictions(predictions: Sequence[Prediction], output_dir: Path, top_k: int) -> tuple[Path, Path]:
    """predictions.json (a list of records) and predictions.csv (one row per file, class_i/probability_i,
    then fruits_named and fruits_in_top_k, empty where the file name names no fruit)."""
    json_path, csv_path = output_dir / "predictions.json", output_dir / "predictions.csv"
    write_text_whole(json_path, json.dumps([asdict(p) for p in predictions], indent=2))
    ranks = range(1, top_k + 1)
    fields = ["path", "error", *(f"{name}_{i}" for i in ranks for name in ("class", "probability"))]
    fields += ["fruits_named", "fruits_in_top_k"]
    rows = []
    for p in predictions:
        ranked = {f"class_{i}": c for i, c in enumerate(p.classes, 1)}
        ranked |= {f"probability_{i}": f"{q:.6f}" for i, q in enumerate(p.probabilities, 1)}
        named = {
            "fruits_named": " ".join(p.fruits_named),
            "fruits_in_top_k": _blank_if_none(p.fruits_in_top_k),
        }
        rows.append({"path": p.path, "error": p.error or "", **ranked, **named})
    write_csv_whole(csv_path, rows, fields)
    return json_path, csv_path


def _blank_if_none(value: int | None) -> str:
    return "" if value is None else str(value)


def print_predictions(predictions: Sequence[Prediction], max_rows: int) -> None:
    """The first `max_rows` files and every unreadable one, paths relative to their common folder; file and
    class names shown literally, never as markup."""
    if not predictions:
        return
    root = Path(os.path.commonpath([Path(p.path).parent for p in predictions]))
    title = Text(f"Predictions for {len(predictions)} file(s) in {root}")
    table = Table("file", "prediction", "next classes", title=title, expand=True)
    errors = [p for p in predictions if p.error]
    shown = [p for p in predictions if not p.error][:max_rows] + errors
    for p in shown:
        name = Text(str(Path(p.path).relative_to(root)))
        if p.error:
            table.add_row(name, Text(f"unreadable: {p.error}", style="red"), "")
            continue
        others = ", ".join(f"{c} {q:.1%}" for c, q in zip(p.classes[1:], p.probabilities[1:], strict=True))
        table.add_row(name, Text.assemble((p.classes[0], "bold"), f" {p.probabilities[0]:.1%}"), Text(others))
    if len(shown) < len(predictions):
        table.caption = f"{len(predictions) - len(shown)} more rows in predictions.csv"
    Console().print(table)
