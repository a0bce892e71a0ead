"""`python -m fruitres.reports.transfer_report SWEEP_DIR`: the transfer study's figure and table.

For a sweep of `experiment=transfer_target hparams_search=transfer` (step 2 of `make transfer`): the test
accuracy of each recipe (conf/recipe/) against the number of training images per class
(`data.train_per_class`; all = every Training/ image not held out for validation), one line per recipe.
Read from each job's saved config and `run_record.json`; written into the sweep directory as
`transfer.png`, `transfer.csv` and `transfer.md` (a row per recipe, a column per number of images), and
to TensorBoard (`<sweep dir>/tensorboard`: the figure in Images, the table in Text). Hydra calls it at
the end of the sweep (conf/hparams_search/transfer.yaml); the command rebuilds it, also mid-sweep.
"""

from __future__ import annotations

import logging
from pathlib import Path
from statistics import mean
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from fruitres.files import replaced_whole, write_csv_whole, write_text_whole
from fruitres.reports.figures import to_png, write_summary_events
from fruitres.reports.sweep_report import report_command
from fruitres.run_folders import HYDRA_DIR, job_dirs, job_record

log = logging.getLogger(__name__)

PNG_FILE = "transfer.png"
CSV_FILE = "transfer.csv"
MARKDOWN_FILE = "transfer.md"
TENSORBOARD_DIR = "tensorboard"
EVENTS_SUFFIX = ".transfer_report"  # this report's event files, replaced when it is rebuilt
IMAGE_TAG = "transfer/test_acc_by_train_per_class"
TEXT_TAG = "transfer/table"
METRIC = "test/acc"
ALL = "all"  # data.train_per_class=null
SCRATCH = "scratch"
RECIPES = {  # conf/recipe/, in the order of the legend and the table
    "full": "source, frozen 0 (full fine-tune)",
    "frozen3": "source, frozen 3",
    "frozen4": "source, frozen 4",
    "probe": "source, frozen 5 (linear probe)",
    "gradual": "source, gradual unfreezing",
    SCRATCH: "scratch (random init)",
}

Results = dict[str, dict[int | None, float]]  # recipe → {images per class (None: all) → test/acc}


def job_point(job_dir: Path) -> tuple[str, int | None]:
    """The job's recipe and data.train_per_class, from the configs Hydra saved before it started."""
    choices = OmegaConf.load(job_dir / HYDRA_DIR / "hydra.yaml").hydra.runtime.choices
    config = OmegaConf.load(job_dir / HYDRA_DIR / "config.yaml")
    return str(choices.get("recipe") or "none"), config.data.get("train_per_class")


def transfer_results(sweep_dir: Path) -> Results:
    """Test accuracy by recipe and images per class over the finished jobs (their mean where several
    jobs, e.g. seeds, share a point); known recipes in the order of RECIPES, others after them."""
    scores: dict[str, dict[int | None, list[float]]] = {}
    for job_dir in job_dirs(sweep_dir):
        accuracy = job_record(job_dir)["metrics"].get(METRIC)  # none for a failed or unfinished job
        if accuracy is not None:
            recipe, per_class = job_point(job_dir)
            scores.setdefault(recipe, {}).setdefault(per_class, []).append(accuracy)
    order = [recipe for recipe in RECIPES if recipe in scores] + sorted(set(scores) - set(RECIPES))
    return {recipe: {n: mean(values) for n, values in scores[recipe].items()} for recipe in order}


def per_class_values(results: Results) -> list[int | None]:
    """The numbers of images per class the jobs used, ascending, `all` last."""
    values = {n for points in results.values() for n in points}
    return sorted(n for n in values if n is not None) + ([None] if None in values else [])


def column(per_class: int | None) -> str:
    return ALL if per_class is None else str(per_class)


def label(recipe: str) -> str:
    return RECIPES.get(recipe, recipe)


def table_rows(results: Results) -> list[dict[str, Any]]:
    """One row per recipe: its name, its label and the test accuracy at each number of images per class."""
    return [
        {"recipe": recipe, "label": label(recipe), **{column(n): f"{acc:.4f}" for n, acc in points.items()}}
        for recipe, points in results.items()
    ]


def markdown_table(results: Results) -> str:
    columns = [column(n) for n in per_class_values(results)]
    lines = [
        f"Test accuracy ({METRIC}) by training images per class (data.train_per_class; {ALL}: every "
        "Training/ image not held out for validation).",
        "",
        "| recipe | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
        *(
            f"| {row['label']} | " + " | ".join(row.get(name, "") for name in columns) + " |"
            for row in table_rows(results)
        ),
    ]
    return "\n".join(lines) + "\n"


def transfer_figure(results: Results, title: str) -> Figure:
    """Test accuracy against images per class, one line per recipe; the from-scratch control dashed."""
    values = per_class_values(results)
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    for recipe, points in results.items():
        positions = [i for i, n in enumerate(values) if n in points]
        axis.plot(
            positions,
            [points[values[i]] for i in positions],
            marker="o",
            linestyle="--" if recipe == SCRATCH else "-",
            label=label(recipe),
        )
    # evenly spaced: `all` has no single number of images, and 5 and 10 stay apart
    axis.set_xticks(range(len(values)), [column(n) for n in values])
    axis.set_xlim(-0.3, len(values) - 0.7)
    axis.set_xlabel("training images per class")
    axis.set_ylabel("test accuracy")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def log_to_tensorboard(folder: Path, png: bytes, table: str) -> None:
    """The figure (Images tab) and the table (Text tab) in an event file of their own, replacing the one
    an earlier build of the report wrote."""
    write_summary_events(folder, EVENTS_SUFFIX, 0, {IMAGE_TAG: png}, {TEXT_TAG: table})


def write_transfer_report(sweep_dir: Path) -> str:
    """Write the figure, the tables and the TensorBoard event file into `sweep_dir`; returns the Markdown."""
    sweep_dir = Path(sweep_dir)
    results = transfer_results(sweep_dir)
    if not results:
        return f"No finished job in {sweep_dir} yet: no transfer figure.\n"
    table = markdown_table(results)
    png = to_png(transfer_figure(results, f"Transfer study {sweep_dir.parent.name}/{sweep_dir.name}"))
    with replaced_whole(sweep_dir / PNG_FILE) as partial:
        partial.write_bytes(png)
    columns = ["recipe", "label", *(column(n) for n in per_class_values(results))]
    write_csv_whole(sweep_dir / CSV_FILE, table_rows(results), columns)
    write_text_whole(sweep_dir / MARKDOWN_FILE, table)
    log_to_tensorboard(sweep_dir / TENSORBOARD_DIR, png, table)
    return table


def main(argv: list[str] | None = None) -> None:
    report_command(argv, __doc__, "logs/transfer/<time>/target", write_transfer_report)


if __name__ == "__main__":
    main()
