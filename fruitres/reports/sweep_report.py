"""`python -m fruitres.reports.sweep_report SWEEP_DIR`: one table of a sweep's jobs, best first.

Built from each job's `run_record.json` (fruitres/run/record.py): the parameters the jobs vary, the
validation and test accuracy (with the test accuracy's Wilson 95% interval from the number of test images),
epochs, wall time, status and error. Written as `sweep_results.csv` and `sweep_results.md` into the sweep
directory and printed. When the jobs vary `seed`, a second table groups them by the rest of their overrides:
one row per configuration with n, mean ± standard deviation, min and max (`seed_groups.csv`, and below the
first table in `sweep_results.md`). Hydra calls it at the end of every multirun
(`conf/hydra/default.yaml`); the command rebuilds it for any sweep directory, finished or not.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fruitres.files import write_csv_whole, write_text_whole
from fruitres.reports.uncertainty import accuracy_interval, format_interval
from fruitres.run_folders import job_dirs, job_record, saved_overrides

log = logging.getLogger(__name__)

CSV_FILE = "sweep_results.csv"
MARKDOWN_FILE = "sweep_results.md"
GROUPS_CSV_FILE = "seed_groups.csv"
METRIC_COLUMNS = ("val/acc_best", "test/acc")
CI_COLUMN = "test/acc 95% CI"
SEED = "seed"


def job_overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line overrides as key → value (Hydra saves them before the job starts)."""
    return dict(override.partition("=")[::2] for override in saved_overrides(job_dir) or [])


def tested_images(record: dict[str, Any]) -> int | None:
    """How many test images the job's test accuracy was measured on (from its provenance)."""
    test = (record.get("provenance") or {}).get("data", {}).get("splits", {}).get("test", {})
    return test.get("tested", test.get("images"))


def _test_interval(record: dict[str, Any]) -> tuple[float, float] | None:
    return accuracy_interval(record["metrics"].get("test/acc"), tested_images(record))


def _jobs(sweep_dir: Path) -> tuple[list[Path], list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """The job folders, their records and overrides, and the override keys that vary between jobs."""
    dirs = job_dirs(sweep_dir)
    records = [job_record(path) for path in dirs]
    overrides = [job_overrides(path) for path in dirs]
    keys = list(dict.fromkeys(key for job in overrides for key in job))
    varying = [key for key in keys if len({job.get(key) for job in overrides}) > 1] or keys
    return dirs, records, overrides, varying


def sweep_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One row per job, best first, with the overrides the jobs differ in; and the overrides they share."""
    dirs, records, overrides, varying = _jobs(sweep_dir)
    keys = list(dict.fromkeys(key for job in overrides for key in job))
    shared = {key: overrides[0][key] for key in keys if key not in varying}
    rows = [
        {
            "job": path.name,
            **{key: job.get(key, "") for key in varying},
            **{metric: record["metrics"].get(metric) for metric in METRIC_COLUMNS},
            CI_COLUMN: format_interval(_test_interval(record)),
            "epochs": record.get("epochs"),
            "wall_time_s": record.get("wall_time_s"),
            "status": record["status"],
            "error": record.get("error") or "",
        }
        for path, record, job in zip(dirs, records, overrides, strict=True)
    ]
    ranks = [_rank(record) for record in records]
    return [row for _, row in sorted(zip(ranks, rows, strict=True), key=lambda pair: pair[0])], shared


def seed_groups(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per configuration (the varying overrides but `seed`) over its finished jobs: n, and the mean,
    standard deviation, min and max of each metric; best mean test accuracy first. Empty unless seeds vary."""
    _, records, overrides, varying = _jobs(sweep_dir)
    if SEED not in varying:
        return []
    config_keys = [key for key in varying if key != SEED]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record, job in zip(records, overrides, strict=True):
        if record["status"] == "ok":
            groups.setdefault(tuple(job.get(key, "") for key in config_keys), []).append(record)
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


def write_sweep_report(sweep_dir: Path) -> str:
    """Write the CSV and Markdown tables into `sweep_dir`; returns the Markdown."""
    sweep_dir = Path(sweep_dir)
    rows, shared = sweep_rows(sweep_dir)
    write_csv_whole(sweep_dir / CSV_FILE, rows, list(rows[0]) if rows else ["job"])
    table = markdown_table(rows, shared)
    groups = seed_groups(sweep_dir)
    if groups:
        write_csv_whole(sweep_dir / GROUPS_CSV_FILE, groups, list(groups[0]))
        table += "\n### By configuration, over seeds\n\n" + groups_markdown(groups)
    write_text_whole(sweep_dir / MARKDOWN_FILE, table)
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
    report_command(argv, __doc__, "logs/train/multiruns/<time>", write_sweep_report)


if __name__ == "__main__":
    main()
