"""`python -m fruitres.reports.sweep_report SWEEP_DIR`: one table of a sweep's jobs, best first.

Built from each job's `run_record.json` (fruitres/run/record.py): the parameters the jobs vary, the
validation and test accuracy (with the test accuracy's Wilson 95% interval from the number of test images),
epochs, wall time, status and error. Written as `sweep_results.csv` and `sweep_results.md` into the sweep
directory and printed. When the jobs vary `seed`, a second table groups them by the rest of their overrides:
one row per configuration with n, mean ± standard deviation, min and max (`seed_groups.csv`, and below the
first table in `sweep_results.md`). Beside them, a figure of the optimized metric against each swept key
(`sweep_summary.png`, fruitres/reports/sweep_figure.py), and both in a TensorBoard run of their own,
`<sweep dir>/sweep_summary` (the figure in Images, the table in Text). Hydra calls it after every job and at
the end of every multirun (`conf/hydra/default.yaml`); the command rebuilds it for any sweep directory,
finished or not, or prints the table of a sweep logged to MLflow (`--mlflow TRACKING_URI EXPERIMENT`).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruitres.errors import FixableError
from fruitres.files import replaced_whole, write_csv_whole, write_text_whole
from fruitres.reports.figures import write_summary_events
from fruitres.reports.mlflow_sweep import mlflow_sweep_jobs
from fruitres.reports.sweep_figure import Point, sweep_figure_png
from fruitres.reports.uncertainty import accuracy_interval, format_interval
from fruitres.run_folders import NO_RECORD_STATUS, job_dirs, job_record, saved_overrides

log = logging.getLogger(__name__)

CSV_FILE = "sweep_results.csv"
MARKDOWN_FILE = "sweep_results.md"
GROUPS_CSV_FILE = "seed_groups.csv"
METRIC_COLUMNS = ("val/acc_best", "test/acc")
CI_COLUMN = "test/acc 95% CI"
SEED = "seed"
FIGURE_FILE = "sweep_summary.png"
SUMMARY_RUN = "sweep_summary"  # the TensorBoard run of the sweep's own table and figure
SUMMARY_EVENTS_SUFFIX = ".sweep_summary"  # its event file, replaced when the report is rebuilt
SWEEP_EXAMPLE = "logs/train/multiruns/<time>"
TABLE_TAG = "sweep/table"
FIGURE_TAG = "sweep/metric_by_swept_key"


@dataclass(frozen=True)
class SweepJob:
    """A job as the table reads it, from its folder or from MLflow: name, record, overrides (key → value)."""

    name: str
    record: dict[str, Any]
    overrides: dict[str, str]


def as_dict(overrides: Sequence[str]) -> dict[str, str]:
    return dict(override.partition("=")[::2] for override in overrides)


def job_overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line overrides as key → value (Hydra saves them before the job starts)."""
    return as_dict(saved_overrides(job_dir) or [])


def folder_jobs(sweep_dir: Path) -> list[SweepJob]:
    """The jobs of a sweep folder, in job order."""
    return [SweepJob(path.name, job_record(path), job_overrides(path)) for path in job_dirs(sweep_dir)]


def mlflow_jobs(tracking_uri: str, experiment: str) -> list[SweepJob]:
    """The jobs of a sweep logged to MLflow (fruitres/reports/mlflow_sweep.py), in job order."""
    no_record = {"status": NO_RECORD_STATUS, "error": None, "metrics": {}}
    return [
        SweepJob(name, record or no_record, as_dict(overrides))
        for name, record, overrides in mlflow_sweep_jobs(tracking_uri, experiment)
    ]


def tested_images(record: dict[str, Any]) -> int | None:
    """How many test images the job's test accuracy was measured on (from its provenance)."""
    test = (record.get("provenance") or {}).get("data", {}).get("splits", {}).get("test", {})
    return test.get("tested", test.get("images"))


def _test_interval(record: dict[str, Any]) -> tuple[float, float] | None:
    return accuracy_interval(record["metrics"].get("test/acc"), tested_images(record))


def _all_keys(jobs: Sequence[SweepJob]) -> list[str]:
    return list(dict.fromkeys(key for job in jobs for key in job.overrides))


def varying_keys(jobs: Sequence[SweepJob]) -> list[str]:
    """The override keys whose values differ between jobs."""
    return [key for key in _all_keys(jobs) if len({job.overrides.get(key) for job in jobs}) > 1]


def job_rows(jobs: Sequence[SweepJob]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One row per job, best first, with the overrides the jobs differ in (all, if they differ in none); and
    the overrides they share."""
    varying = varying_keys(jobs) or _all_keys(jobs)
    shared = {key: jobs[0].overrides[key] for key in _all_keys(jobs) if key not in varying}
    rows = [
        {
            "job": job.name,
            **{key: job.overrides.get(key, "") for key in varying},
            **{metric: job.record["metrics"].get(metric) for metric in METRIC_COLUMNS},
            CI_COLUMN: format_interval(_test_interval(job.record)),
            "epochs": job.record.get("epochs"),
            "wall_time_s": job.record.get("wall_time_s"),
            "status": job.record["status"],
            "error": job.record.get("error") or "",
        }
        for job in jobs
    ]
    ranks = [_rank(job.record) for job in jobs]
    return [row for _, row in sorted(zip(ranks, rows, strict=True), key=lambda pair: pair[0])], shared


def sweep_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows of a sweep folder's jobs (job_rows), and the overrides they share."""
    return job_rows(folder_jobs(sweep_dir))


def seed_groups(jobs: Sequence[SweepJob]) -> list[dict[str, Any]]:
    """One row per configuration (the varying overrides but `seed`) over its finished jobs: n, and the mean,
    standard deviation, min and max of each metric; best mean test accuracy first. Empty unless seeds vary."""
    varying = varying_keys(jobs)
    if SEED not in varying:
        return []
    config_keys = [key for key in varying if key != SEED]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job in jobs:
        if job.record["status"] == "ok":
            groups.setdefault(tuple(job.overrides.get(key, "") for key in config_keys), []).append(job.record)
    rows = []
    for config, members in groups.items():
        row: dict[str, Any] = {**dict(zip(config_keys, config, strict=True)), "n": len(members)}
        for metric in METRIC_COLUMNS:
            values = [m["metrics"][metric] for m in members if m["metrics"].get(metric) is not None]
            row |= {
                f"{metric} mean": statistics.fmean(values) if values else None,
                f"{metric} std": statistics.stdev(values) if len(values) > 1 else None,
                f"{metric} min": min(values, default=None),
                f"{metric} max": max(values, default=None),
            }
        images = tested_images(members[0])
        interval = accuracy_interval(row["test/acc mean"], images)
        rows.append(row | {"test images": images, f"{CI_COLUMN} (one run)": format_interval(interval)})
    return sorted(rows, key=lambda row: -(row["test/acc mean"] or 0.0))


def groups_markdown(groups: list[dict[str, Any]]) -> str:
    """The seed groups as Markdown: mean ± std and min–max per metric."""
    config_keys = list(groups[0])[: list(groups[0]).index("n")]
    header = [*config_keys, "n"]
    for metric in METRIC_COLUMNS:
        header += [f"{metric} (mean ± std)", f"{metric} min–max"]
    header += [f"{CI_COLUMN} (one run)", "test images"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in groups:
        cells = [str(row[key]) for key in config_keys] + [str(row["n"])]
        for metric in METRIC_COLUMNS:
            mean, std, low, high = (row[f"{metric} {part}"] for part in ("mean", "std", "min", "max"))
            cells.append("" if mean is None else f"{mean:.4f} ± {std or 0.0:.4f}")
            cells.append("" if low is None else f"{low:.4f}–{high:.4f}")
        cells += [row[f"{CI_COLUMN} (one run)"], str(row["test images"] or "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _rank(record: dict[str, Any]) -> tuple[bool, float]:
    """Jobs with a value of the optimized metric first, best first (a *loss* ascending, others descending)."""
    name = record.get("optimized_metric")
    value = record["metrics"].get(name)
    if value is None or math.isnan(value):
        return True, 0.0
    return False, value if "loss" in name else -value


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in METRIC_COLUMNS:
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], shared: dict[str, str]) -> str:
    if not rows:
        return "No jobs in this sweep yet.\n"
    header = list(rows[0])
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(_cell(key, row[key]) for key in header) + " |" for row in rows),
    ]
    if shared:
        lines += ["", "All jobs: " + " ".join(f"`{key}={value}`" for key, value in shared.items())]
    return "\n".join(lines) + "\n"


def sweep_markdown(jobs: Sequence[SweepJob]) -> str:
    """The table of the jobs, and below it the seed groups when seeds vary."""
    table = markdown_table(*job_rows(jobs))
    groups = seed_groups(jobs)
    if groups:
        table += "\n### By configuration, over seeds\n\n" + groups_markdown(groups)
    return table


def figure_points(jobs: Sequence[SweepJob]) -> tuple[list[Point], str]:
    """Each finished job's values of the varying keys and its optimized metric; and the metric's name."""
    varying = varying_keys(jobs)
    metric = next((job.record["optimized_metric"] for job in jobs if job.record.get("optimized_metric")), "")
    points = [
        ({key: job.overrides.get(key, "") for key in varying}, job.record["metrics"][metric])
        for job in jobs
        if job.record["status"] == "ok" and job.record["metrics"].get(metric) is not None
    ]
    return points, metric


def write_sweep_report(sweep_dir: Path) -> str:
    """Write the tables, the figure and the `sweep_summary` TensorBoard run into `sweep_dir`; returns the
    Markdown."""
    sweep_dir = Path(sweep_dir)
    jobs = folder_jobs(sweep_dir)
    rows, _ = job_rows(jobs)
    write_csv_whole(sweep_dir / CSV_FILE, rows, list(rows[0]) if rows else ["job"])
    groups = seed_groups(jobs)
    if groups:
        write_csv_whole(sweep_dir / GROUPS_CSV_FILE, groups, list(groups[0]))
    table = sweep_markdown(jobs)
    write_text_whole(sweep_dir / MARKDOWN_FILE, table)
    points, metric = figure_points(jobs)
    png = sweep_figure_png(points, metric, f"{metric} by swept key: {sweep_dir.parent.name}/{sweep_dir.name}")
    if png is not None:
        with replaced_whole(sweep_dir / FIGURE_FILE) as partial:
            partial.write_bytes(png)
    figures = {FIGURE_TAG: png} if png is not None else {}
    write_summary_events(
        sweep_dir / SUMMARY_RUN, SUMMARY_EVENTS_SUFFIX, len(points), figures, {TABLE_TAG: table}
    )
    return table


def report_command(argv: list[str] | None, doc: str, example: str, write: Callable[[Path], str]) -> None:
    """`python -m fruitres.reports.<report> SWEEP_DIR`: write the report of a sweep folder such as
    `example` and print it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help=f"a sweep folder, e.g. {example}")
    sweep_dir = parser.parse_args(argv).sweep_dir
    if not sweep_dir.is_dir():
        parser.error(f"{sweep_dir} is not a directory; pass a sweep folder such as {example}")
    print(write(sweep_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, nargs="?", help=f"a sweep folder, e.g. {SWEEP_EXAMPLE}")
    parser.add_argument(
        "--mlflow",
        nargs=2,
        metavar=("TRACKING_URI", "EXPERIMENT"),
        help="print the table of a sweep in MLflow instead: sqlite:///logs/mlflow.db train/<time>",
    )
    args = parser.parse_args(argv)
    if (args.sweep_dir is None) == (args.mlflow is None):
        parser.error("pass a sweep folder, or --mlflow TRACKING_URI EXPERIMENT")
    if args.mlflow:
        try:
            print(sweep_markdown(mlflow_jobs(*args.mlflow)))
        except FixableError as error:
            parser.exit(1, f"{error}\n")
    elif not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory; pass a sweep folder such as {SWEEP_EXAMPLE}")
    else:
        print(write_sweep_report(args.sweep_dir))


if __name__ == "__main__":
    main()
