"""`python -m fruitres.eval ckpt_path=<file>`: test a checkpoint on Test/ and explain the number."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import matplotlib.pyplot as plt
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from fruitres.callbacks.figures import RunFigures
from fruitres.config import instantiate_callbacks, instantiate_loggers, print_config_tree
from fruitres.data.datamodule import Fruits360DataModule
from fruitres.data.folders import DatasetLayoutError, list_class_names
from fruitres.inference import load_checkpoint

log = logging.getLogger(__name__)


class CheckpointTestSet(Fruits360DataModule):
    """The Test/ split of a data folder, labelled with the class list a checkpoint was trained on.

    Training/ is not needed. A Test/ class the checkpoint does not know is an error naming it, never
    relabelled; a known class without test images only leaves its row of the report empty.
    """

    def __init__(self, class_names: Sequence[str], **hparams: Any) -> None:
        super().__init__(**hparams)
        self.trained_class_names = list(class_names)

    @property
    def class_names(self) -> list[str]:
        return self.trained_class_names

    def prepare_data(self) -> None:
        if self.embedded:
            super().prepare_data()
        test_dir = self.root / "Test"
        if not test_dir.is_dir():
            raise DatasetLayoutError(
                f"data.data_dir={self.root} has no Test/ folder; pass the folder holding Test/<Class>/*.jpg"
            )
        found = list_class_names(test_dir)
        unknown = [name for name in found if name not in self.class_names]
        if unknown:
            raise DatasetLayoutError(
                f"{test_dir} has {len(unknown)} class(es) the checkpoint was not trained on: "
                f"{', '.join(unknown)}; evaluate on a folder holding only the checkpoint's "
                f"{len(self.class_names)} classes (metrics.json of an eval run lists them)"
            )
        absent = [name for name in self.class_names if name not in found]
        if absent:
            log.warning(
                "%s has no images of %d trained class(es): %s", test_dir, len(absent), ", ".join(absent)
            )

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            class_to_idx = {name: index for index, name in enumerate(self.class_names)}
            self.datasets = {"test": self._cached_split("Test", class_to_idx)}


def per_class_rows(results: dict[str, torch.Tensor], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class (support, precision, recall, F1), worst F1 first."""
    support = results["confusion_matrix"].sum(dim=1).tolist()
    rows = [
        {
            "class": name,
            "support": int(support[index]),
            "precision": float(results["precision"][index]),
            "recall": float(results["recall"][index]),
            "f1": float(results["f1"][index]),
        }
        for index, name in enumerate(class_names)
    ]
    return sorted(rows, key=lambda row: (row["f1"], row["class"]))


def confused_pairs(matrix: torch.Tensor, class_names: Sequence[str], top: int) -> list[dict[str, Any]]:
    """The `top` largest off-diagonal cells: which true class is taken for which, how often."""
    off_diagonal = matrix.clone().fill_diagonal_(0)
    counts, flat = off_diagonal.flatten().sort(descending=True)
    support = matrix.sum(dim=1)
    pairs = []
    for count, index in zip(counts.tolist()[:top], flat.tolist()[:top], strict=True):
        if count == 0:
            break
        true, predicted = divmod(index, len(class_names))
        share = count / max(int(support[true]), 1)
        pairs.append(
            {"true": class_names[true], "predicted": class_names[predicted], "count": count, "share": share}
        )
    return pairs


def write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint, then write metrics.json, per_class.csv, confused_pairs.csv and the figures."""
    checkpoint = load_checkpoint(cfg.ckpt_path)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if data["data_dir"] is None:  # the folder the checkpoint was trained on
        del data["data_dir"]
    datamodule = CheckpointTestSet(checkpoint.class_names, **(dict(checkpoint.datamodule.hparams) | data))
    datamodule.prepare_data()

    callbacks = instantiate_callbacks(cfg)
    figures = next((callback for callback in callbacks if isinstance(callback, RunFigures)), None)
    if figures is None:
        raise ValueError("callbacks.figures is null; eval needs it to collect the predictions, keep it set")
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate_loggers(cfg))
    (tested,) = trainer.test(checkpoint.model, datamodule=datamodule, verbose=False)

    predictions = figures.predictions["test"]
    results = predictions.compute()
    names = checkpoint.class_names
    metrics = {
        **{key: float(value) for key, value in tested.items()},
        **{f"test/{name}_macro": float(results[f"{name}_macro"]) for name in ("precision", "recall", "f1")},
    }
    rows = per_class_rows(results, names)
    pairs = confused_pairs(results["confusion_matrix"], names, cfg.top_confusions)

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "ckpt_path": str(checkpoint.path),
        "data_dir": str(datamodule.root),
        "num_images": int(results["confusion_matrix"].sum()),
        "metrics": metrics,
        "class_names": names,
        "classes_without_test_images": [row["class"] for row in rows if row["support"] == 0],
        "most_confused": pairs,
    }
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    write_csv(output_dir / "per_class.csv", rows, ("class", "support", "precision", "recall", "f1"))
    write_csv(output_dir / "confused_pairs.csv", pairs, ("true", "predicted", "count", "share"))
    rendered = figures.logged_figures.get("test") or predictions.figures(
        "test", datamodule.mean, datamodule.std, figures.ncols
    )
    for name, figure in rendered.items():
        figure.savefig(output_dir / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(figure)
    print_report(metrics, rows, pairs, cfg.show_classes)
    log.info("Evaluation report written to %s", output_dir)
    return metrics


def print_report(
    metrics: dict[str, float], rows: list[dict[str, Any]], pairs: list[dict[str, Any]], show: int
) -> None:
    """The overall metrics, the worst and best classes by F1, and the most confused pairs."""
    console = Console()
    overall = Table("metric", "value", title="Test set")
    for name, value in metrics.items():
        overall.add_row(name, f"{value:.4f}")
    console.print(overall)

    shown = rows if len(rows) <= 2 * show else [*rows[:show], None, *rows[-show:]]
    classes = Table("class", "support", "precision", "recall", "F1", title="Per class, worst F1 first")
    for row in shown:
        if row is None:
            classes.add_row(f"… {len(rows) - 2 * show} more in per_class.csv", "", "", "", "")
            continue
        values = (f"{row[key]:.3f}" for key in ("precision", "recall", "f1"))
        classes.add_row(row["class"], str(row["support"]), *values)
    console.print(classes)

    confused = Table("true class", "predicted as", "count", "share of true class", title="Most confused")
    for pair in pairs:
        confused.add_row(pair["true"], pair["predicted"], str(pair["count"]), f"{pair['share']:.1%}")
    console.print(confused)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / "config_tree.log")
    evaluate(cfg)


if __name__ == "__main__":
    main()
