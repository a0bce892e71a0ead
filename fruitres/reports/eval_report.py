"""What an evaluation writes and prints: per-class precision/recall/F1, the most confused pairs, figures."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fruitres.files import write_bytes_whole, write_csv_whole, write_text_whole
from fruitres.reports.figures import to_png
from fruitres.reports.uncertainty import accuracy_interval, format_interval

PER_CLASS_FIELDS = ("class", "support", "precision", "recall", "f1")
CONFUSED_FIELDS = ("true", "predicted", "count", "share")


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


def write_eval_report(
    output_dir: Path,
    summary: Mapping[str, Any],
    rows: list[dict[str, Any]],
    pairs: list[dict[str, Any]],
    figures: Mapping[str, Figure],
) -> None:
    """metrics.json, per_class.csv, confused_pairs.csv and one PNG per figure, into `output_dir`."""
    write_text_whole(output_dir / "metrics.json", json.dumps(summary, indent=2))
    write_csv_whole(output_dir / "per_class.csv", rows, PER_CLASS_FIELDS)
    write_csv_whole(output_dir / "confused_pairs.csv", pairs, CONFUSED_FIELDS)
    for name, figure in figures.items():
        write_bytes_whole(output_dir / f"{name}.png", to_png(figure, dpi=110))


def print_report(
    metrics: dict[str, float],
    rows: list[dict[str, Any]],
    pairs: list[dict[str, Any]],
    show: int,
    num_images: int | None = None,
) -> None:
    """The overall metrics (accuracy with its 95% interval), the worst and best classes by F1, and the
    most confused pairs. Class names are the dataset's folder names: shown literally, never as markup."""
    console = Console()
    overall = Table("metric", "value", "95% interval (Wilson)", title=f"Test set ({num_images} images)")
    counts = {"test/acc": num_images, "test/acc_novel": int(metrics.get("test/novel_images", 0))}
    for name, value in metrics.items():
        if name.startswith("test/acc_novel_ci95"):
            continue  # shown as the interval of test/acc_novel
        interval = accuracy_interval(value, counts[name]) if name in counts else None
        shown = f"{value:.0f}" if name == "test/novel_images" else f"{value:.4f}"
        overall.add_row(name, shown, format_interval(interval))
    console.print(overall)

    shown = rows if len(rows) <= 2 * show else [*rows[:show], None, *rows[-show:]]
    classes = Table("class", "support", "precision", "recall", "F1", title="Per class, worst F1 first")
    for row in shown:
        if row is None:
            classes.add_row(f"… {len(rows) - 2 * show} more in per_class.csv", "", "", "", "")
            continue
        values = (f"{row[key]:.3f}" for key in ("precision", "recall", "f1"))
        classes.add_row(Text(row["class"]), str(row["support"]), *values)
    console.print(classes)

    confused = Table("true class", "predicted as", "count", "share of true class", title="Most confused")
    for pair in pairs:
        confused.add_row(
            Text(pair["true"]), Text(pair["predicted"]), str(pair["count"]), f"{pair['share']:.1%}"
        )
    console.print(confused)
