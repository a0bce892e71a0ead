"""The peers benchmark's table (markdown and CSV), its record (JSON) and its figure: Test accuracy
against wall time, one line per tool."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from fruitres.files import write_bytes_whole, write_csv_whole, write_text_whole
from fruitres.reports.figures import to_png


@dataclass
class PeerRun:
    """One run of one tool at one budget: how long its process took, what it trained and tested."""

    tool: str
    budget_minutes: float
    repeat: int
    epochs: float  # fastai's: its frozen epoch included
    wall_seconds: float  # the process, start to exit: imports, data, fit, test
    fit_seconds: float  # the tool's own training, as it measures it
    test_acc: float
    weights_sha256: str  # of the weights file the run read ("" if it read none)
    matching_tensors: int  # backbone tensors it started from unchanged, of that file's
    backbone_tensors: int
    arithmetic: str  # device and precision: fruitres's trainer.precision, fastai's output dtype


FIELDS = [field.name for field in fields(PeerRun)]


def one_line(run: PeerRun) -> str:
    return (
        f"  {run.tool}: test {run.test_acc:.3f} after {run.wall_seconds:.0f} s "
        f"({run.epochs:g} epochs, fit {run.fit_seconds:.0f} s, {run.arithmetic})"
    )


def points(runs: Sequence[PeerRun]) -> list[dict[str, object]]:
    """Per tool and budget: the median wall time and Test accuracy over the repeats, and their range."""
    keys = list(dict.fromkeys((run.tool, run.budget_minutes) for run in runs))
    summary = []
    for tool, budget in keys:
        own = [run for run in runs if (run.tool, run.budget_minutes) == (tool, budget)]
        accuracies = [run.test_acc for run in own]
        summary.append(
            {
                "tool": tool,
                "budget_minutes": budget,
                "runs": len(own),
                "wall_seconds": statistics.median(run.wall_seconds for run in own),
                "epochs": statistics.median(run.epochs for run in own),
                "test_acc": statistics.median(accuracies),
                "test_acc_range": (min(accuracies), max(accuracies)),
            }
        )
    return summary


def headline(runs: Sequence[PeerRun]) -> str:
    """One line per tool at the ladder's two ends (its smallest and largest budget): the README's table."""
    summary = points(runs)
    budgets = sorted({p["budget_minutes"] for p in summary})
    ends = list(dict.fromkeys([budgets[0], budgets[-1]]))
    lines = [
        "| tool | " + " | ".join(f"{budget:g} min: Test accuracy (wall time)" for budget in ends) + " |",
        "|---|" + "---:|" * len(ends),
    ]
    for tool in dict.fromkeys(run.tool for run in runs):
        cells = []
        for budget in ends:
            point = next((p for p in summary if (p["tool"], p["budget_minutes"]) == (tool, budget)), None)
            cells.append(f"{point['test_acc']:.1%} ({point['wall_seconds']:.0f} s)" if point else "—")
        lines.append(f"| {tool} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(runs: Sequence[PeerRun]) -> str:
    """The headline, the summary by tool and budget, then every run."""
    lines = [
        headline(runs),
        "By tool and budget (medians over the repeats):",
        "",
        "| tool | budget | runs | Test accuracy (median; range) | wall time (median) | epochs |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for point in sorted(points(runs), key=lambda p: (p["budget_minutes"], -p["test_acc"])):
        low, high = point["test_acc_range"]
        spread = f"; {low:.1%}–{high:.1%}" if point["runs"] > 1 else ""
        lines.append(
            f"| {point['tool']} | {point['budget_minutes']:g} min | {point['runs']} | "
            f"{point['test_acc']:.1%}{spread} | {point['wall_seconds']:.0f} s | {point['epochs']:g} |"
        )
    lines += [
        "",
        "Every run, in the order they ran:",
        "",
        "| tool | budget | repeat | Test accuracy | wall s | fit s | epochs | arithmetic | weights loaded |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        loaded = (
            f"{run.weights_sha256[:12]}… ({run.matching_tensors}/{run.backbone_tensors} tensors)"
            if run.weights_sha256
            else "none"
        )
        lines.append(
            f"| {run.tool} | {run.budget_minutes:g} min | {run.repeat + 1} | {run.test_acc:.1%} | "
            f"{run.wall_seconds:.0f} | {run.fit_seconds:.0f} | {run.epochs:g} | {run.arithmetic} | {loaded} |"
        )
    return "\n".join(lines) + "\n"


def header(settings: dict) -> str:
    s = settings
    images = ", ".join(f"{count} {split}" for split, count in s["images"].items())
    load = s["load_average"]
    return (
        f"Test accuracy against wall time on {s['data_dir']} ({s['classes']} classes: {images}; "
        f"{s['image_size']} px; validation {s['val_fraction']:g} of Training/); {s['machine']}, "
        f"{s['threads']} threads, torch {s['torch']}, fastai {s['fastai'] or 'not installed'}, load average "
        f"{load[0]} at the start, {load[1]} at the end; {s['date']}. Every peer started from the weights "
        f"file {s['weights_sha256'][:12]}… ({s['weights_origin']}). Budgets "
        f"{', '.join(f'{b:g}' for b in s['budgets_minutes'])} min, {s['repeats']} run(s) each; "
        f"{s['total_seconds'] / 60:.1f} min in all. Command: {s['command']}"
    )


def figure(runs: Sequence[PeerRun], machine: str) -> Figure:
    """Test accuracy against wall time: a line per tool through its median points, every run a dot."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    summary = points(runs)
    for tool in dict.fromkeys(run.tool for run in runs):
        own = sorted((p for p in summary if p["tool"] == tool), key=lambda p: p["wall_seconds"])
        (line,) = axis.plot(
            [p["wall_seconds"] for p in own], [p["test_acc"] for p in own], "-o", markersize=4, label=tool
        )
        repeats = [run for run in runs if run.tool == tool]
        axis.scatter(
            [run.wall_seconds for run in repeats],
            [run.test_acc for run in repeats],
            color=line.get_color(),
            alpha=0.35,
            s=12,
        )
    axis.set_title(f"Test accuracy against wall time ({machine})", fontsize=10)
    axis.set_xlabel("wall time of the run's process (s)")
    axis.set_xlim(left=0)
    axis.set_ylabel("Test accuracy")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


def write(results: dict, out: Path) -> str:
    """peers.md, peers.csv, peers.json and peers.png in `out`; returns the markdown."""
    settings, runs = results["settings"], [PeerRun(**run) for run in results["runs"]]
    text = f"{header(settings)}\n\n{markdown(runs)}"
    out.mkdir(parents=True, exist_ok=True)
    write_text_whole(out / "peers.md", text)
    write_csv_whole(out / "peers.csv", [vars(run) for run in runs], FIELDS)
    write_text_whole(out / "peers.json", json.dumps({**results, "points": points(runs)}, indent=2))
    write_bytes_whole(out / "peers.png", to_png(figure(runs, settings["machine"])))
    return text
