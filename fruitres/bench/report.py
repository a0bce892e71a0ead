"""The time-to-accuracy table (markdown and CSV), the validation curves (CSV) and their figure (PNG)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from fruitres.files import write_bytes_whole, write_csv_whole, write_text_whole
from fruitres.reports.figures import to_png

TUTORIAL = "tutorial"
START_NAMES = {"source": "source backbone (classes A)", "random": "random init"}
NOT_REACHED = "not reached"


@dataclass
class Outcome:
    """What one run did: its validations on the clock, its test accuracy and why it stopped."""

    start: str  # "source" or "random"
    recipe: str  # "tutorial" or a conf/recipe/ name
    image_size: int
    stop_at: float  # the validation accuracy the run stopped at once reached
    points: list[dict[str, float]] = field(default_factory=list)  # seconds, epochs, val_acc, ...
    fit_seconds: float = 0.0
    test_acc: float = math.nan
    stopped: str = ""  # "target", "time cap", "<n> epochs" or "<n> steps"
    cap_minutes: float = math.nan  # the wall-time limit it ran under


def best_accuracy(outcome: Outcome | None) -> float:
    return max((point["val_acc"] for point in outcome.points), default=0.0) if outcome else 0.0


def tutorial_of(outcomes: Sequence[Outcome], start: str) -> Outcome | None:
    return next((o for o in outcomes if o.recipe == TUTORIAL and o.start == start), None)


def first_reaching(outcome: Outcome, accuracy: float) -> dict[str, float] | None:
    """The first validation at or above `accuracy`, or None."""
    return next((point for point in outcome.points if point["val_acc"] >= accuracy), None)


def final_point(outcome: Outcome | None) -> dict[str, float] | None:
    """The last validation of a run: the tutorial's final accuracy and when it had it."""
    return outcome.points[-1] if outcome and outcome.points else None


def row(outcome: Outcome, outcomes: Sequence[Outcome], target: float) -> dict[str, object]:
    """One line of the table: time and epochs to the target, and to the tutorial's final accuracy."""
    reached = first_reaching(outcome, target)
    tutorial_final = final_point(tutorial_of(outcomes, outcome.start))
    to_tutorial = first_reaching(outcome, tutorial_final["val_acc"]) if tutorial_final else None
    if outcome.recipe == TUTORIAL:  # the tutorial has its final accuracy when it ends
        to_tutorial = tutorial_final
    sooner = tutorial_final["seconds"] / to_tutorial["seconds"] if to_tutorial else None
    return {
        "start": outcome.start,
        "recipe": outcome.recipe,
        "image_size": outcome.image_size,
        "reached": reached is not None,
        "seconds_to_target": _round(reached["seconds"]) if reached else "",
        "epochs_to_target": _round(reached["epochs"], 2) if reached else "",
        "best_val_acc": _round(best_accuracy(outcome), 4),
        "test_acc": _round(outcome.test_acc, 4),
        "epochs": _round(outcome.points[-1]["epochs"], 2) if outcome.points else 0,
        "fit_seconds": _round(outcome.fit_seconds),
        "stopped": outcome.stopped,
        "cap_minutes": _round(outcome.cap_minutes, 2),
        "tutorial_final_acc": _round(tutorial_final["val_acc"], 4) if tutorial_final else "",
        "seconds_to_tutorial_acc": _round(to_tutorial["seconds"]) if to_tutorial else "",
        "x_sooner": _round(sooner, 1) if sooner else "",
    }


def _round(value: float, digits: int = 1) -> float:
    return round(float(value), digits)


FIELDS = [
    "start", "recipe", "image_size", "reached", "seconds_to_target", "epochs_to_target", "best_val_acc",
    "test_acc", "epochs", "fit_seconds", "stopped", "cap_minutes", "tutorial_final_acc",
    "seconds_to_tutorial_acc", "x_sooner",
]  # fmt: skip


# the curves' columns; train_acc only for the tutorial, whose loop counts it
CURVE_FIELDS = ["start", "recipe", "seconds", "epochs", "steps", "val_acc", "train_acc"]


def markdown(rows: Sequence[dict], target: float) -> str:
    """The table a person reads: one line per run, grouped by starting point."""
    lines = [
        f"| start | recipe | px | time to {target:g} val acc | epochs to it | best val acc | test acc | "
        "epochs run | fit s | stopped at | time to the tutorial's final acc | × sooner |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        to_target = f"{r['seconds_to_target']:.0f} s" if r["reached"] else NOT_REACHED
        to_tutorial = f"{r['seconds_to_tutorial_acc']:.0f} s" if r["seconds_to_tutorial_acc"] != "" else "—"
        sooner = f"{r['x_sooner']:.1f}×" if r["x_sooner"] != "" else "—"
        stopped = f"time cap ({r['cap_minutes']:g} min)" if r["stopped"] == "time cap" else r["stopped"]
        epochs_to_target = f"{r['epochs_to_target']:g}" if r["reached"] else "—"
        lines.append(
            f"| {START_NAMES[r['start']]} | {r['recipe']} | {r['image_size']} | {to_target} | "
            f"{epochs_to_target} | {r['best_val_acc']:.3f} | {r['test_acc']:.3f} | "
            f"{r['epochs']:g} | {r['fit_seconds']:.0f} | {stopped} | {to_tutorial} | {sooner} |"
        )
    return "\n".join(lines) + "\n"


def header(settings: dict) -> str:
    s = settings
    images = ", ".join(f"{count} {split}" for split, count in s["images"].items())
    trained = f"trained here in {s['source_seconds']:.0f} s" if s["source_seconds"] else "given"
    source = f"source backbone {s['source_ckpt']} ({trained})" if s["source_ckpt"] else "no source backbone"
    load = s["load_average"]
    return (
        f"Time to {s['target']:g} validation accuracy on {s['data_dir']} ({s['classes']} classes: {images}); "
        f"{s['machine']}, {s['threads']} threads, torch {s['torch']}, load average {load[0]} at the start, "
        f"{load[1]} at the end; {s['date']}; the tutorial {s['tutorial_epochs']} epochs, at most "
        f"{s['tutorial_cap_minutes']:g} min; each project run at most "
        f"{s['cap_minutes']:g} min, less when the {s['budget_minutes']:g}-min budget ran short; {source}; "
        f"{s['total_seconds'] / 60:.1f} min in all. Command: {s['command']}"
    )


def one_line(outcome: Outcome, target: float) -> str:
    reached = first_reaching(outcome, target)
    when = f"{target:g} after {reached['seconds']:.0f} s" if reached else f"{target:g} {NOT_REACHED}"
    return (
        f"  {outcome.start} · {outcome.recipe}: {when}; best val {best_accuracy(outcome):.3f}, "
        f"test {outcome.test_acc:.3f}, stopped at {outcome.stopped} ({outcome.fit_seconds:.0f} s)"
    )


def curves_figure(outcomes: Sequence[Outcome], target: float) -> Figure:
    """Validation accuracy against wall time, one panel per starting point, the tutorial dashed."""
    starts = list(dict.fromkeys(o.start for o in outcomes))
    figure, axes = plt.subplots(1, len(starts), figsize=(6.5 * len(starts), 4.5), squeeze=False)
    for axis, start in zip(axes[0], starts, strict=True):
        for outcome in (o for o in outcomes if o.start == start):
            seconds = [p["seconds"] for p in outcome.points]
            accuracy = [p["val_acc"] for p in outcome.points]
            style = "--" if outcome.recipe == TUTORIAL else "-"
            axis.plot(seconds, accuracy, style, marker="o", markersize=3, label=outcome.recipe)
        axis.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:g}")
        axis.set_title(f"from {START_NAMES[start]}", fontsize=10)
        axis.set_xlabel("wall time since the run started (s)")
        axis.set_xlim(left=0)
        axis.set_ylabel("validation accuracy")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="center right")  # clear of the tutorial's low curve and the fast ones
    figure.tight_layout()
    return figure


def write(results: dict, out: Path) -> str:
    """tta.md, tta.csv, tta_curves.csv, tta.json and tta.png in `out`; returns the markdown."""
    settings, outcomes = results["settings"], [Outcome(**o) for o in results["outcomes"]]
    rows = [row(outcome, outcomes, settings["target"]) for outcome in outcomes]
    text = f"{header(settings)}\n\n{markdown(rows, settings['target'])}"
    out.mkdir(parents=True, exist_ok=True)
    write_text_whole(out / "tta.md", text)
    write_csv_whole(out / "tta.csv", rows, FIELDS)
    curve_rows = [{"start": o.start, "recipe": o.recipe, **p} for o in outcomes for p in o.points]
    write_csv_whole(out / "tta_curves.csv", curve_rows, CURVE_FIELDS)
    write_text_whole(out / "tta.json", json.dumps({**results, "rows": rows}, indent=2))
    write_bytes_whole(out / "tta.png", to_png(curves_figure(outcomes, settings["target"])))
    return text
