"""The sweep's figure: the optimized metric against each key the sweep varies, one panel per key.

A key whose values are all positive non-integers (a learning rate, a weight decay) gets a log axis; integers
and words (frozen stages, an architecture) are categories, evenly spaced. Each panel draws one line per
combination of the other keys' values (`frozen_stages=3`); jobs that differ only in `seed` are one point,
their mean, with a bar from their min to their max. A search whose jobs share no values (Optuna) has too
many combinations for lines: its panels show each job as a point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fruitres.reports.figures import to_png

SEED = "seed"
MAX_LINES = 8  # beyond this many combinations of the other keys' values, a legend no longer reads
PANELS_PER_ROW = 3

Point = tuple[dict[str, str], float]  # a finished job: its value of each swept key, its metric


def parsed(value: str) -> int | float | str:
    """An override's value as the number it spells, else as it is."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def is_log_scale(values: Sequence[int | float | str]) -> bool:
    """Positive non-integer numbers: scale parameters such as learning rates."""
    numbers = [value for value in values if isinstance(value, (int, float))]
    return (
        len(numbers) == len(values)
        and any(isinstance(value, float) for value in values)
        and all(value > 0 for value in numbers)
    )


def short_key(key: str) -> str:
    return key.split(".")[-1]


def plotted_keys(points: Sequence[Point]) -> list[str]:
    """The swept keys a panel is drawn for: all but `seed`, whose jobs are averaged."""
    keys = list(dict.fromkeys(key for values, _ in points for key in values))
    return [key for key in keys if key != SEED]


def sweep_figure_png(points: Sequence[Point], metric: str, title: str) -> bytes | None:
    """The figure as PNG bytes; None where there is nothing to draw."""
    figure = sweep_figure(points, metric, title)
    return None if figure is None else to_png(figure)


def sweep_figure(points: Sequence[Point], metric: str, title: str) -> Figure | None:
    """One panel per swept key; None when the jobs vary nothing but the seed, or none has finished."""
    keys = plotted_keys(points)
    if not keys or not points:
        return None
    columns = min(len(keys), PANELS_PER_ROW)
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 3.8 * rows), squeeze=False, sharey=True
    )
    for axis, key in zip(axes.flat, keys, strict=False):
        _panel(axis, points, key, [other for other in keys if other != key], metric)
    for axis in list(axes.flat)[len(keys) :]:
        axis.set_visible(False)
    if any(SEED in values for values, _ in points):
        title += "\n(jobs differing only in seed: their mean, bars from min to max)"
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def _panel(axis: Axes, points: Sequence[Point], key: str, others: list[str], metric: str) -> None:
    """The metric against `key`, a line per combination of the `others` (or a point per job if too many)."""
    x_values = sorted({parsed(values.get(key, "")) for values, _ in points}, key=_order)
    log_axis = is_log_scale(x_values)

    def position(value: int | float | str) -> int | float:
        return value if log_axis else x_values.index(value)  # type: ignore[return-value]

    lines: dict[str, dict[int | float | str, list[float]]] = {}
    for values, score in points:
        label = ", ".join(f"{short_key(other)}={values.get(other, '')}" for other in others)
        lines.setdefault(label, {}).setdefault(parsed(values.get(key, "")), []).append(score)
    if len(lines) > MAX_LINES:
        xs = [position(parsed(values.get(key, ""))) for values, _ in points]
        axis.scatter(xs, [score for _, score in points], alpha=0.7, label="each job")
    else:
        for label, scores in lines.items():
            xs = [x for x in x_values if x in scores]
            means = [fmean(scores[x]) for x in xs]
            below = [mean - min(scores[x]) for mean, x in zip(means, xs, strict=True)]
            above = [max(scores[x]) - mean for mean, x in zip(means, xs, strict=True)]
            axis.errorbar(
                [position(x) for x in xs], means, yerr=[below, above], marker="o", capsize=3, label=label
            )
        if others:
            axis.legend(fontsize=7, loc="best")
    if log_axis:
        axis.set_xscale("log")
        axis.set_xticks(x_values, [str(x) for x in x_values])
        axis.minorticks_off()
    else:
        axis.set_xticks(range(len(x_values)), [str(x) for x in x_values])
        axis.set_xlim(-0.5, len(x_values) - 0.5)
    axis.set_xlabel(key)
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)


def _order(value: int | float | str) -> tuple[int, float, str]:
    """Numbers ascending, then words in alphabetical order."""
    if isinstance(value, (int, float)):
        return 0, float(value), ""
    return 1, 0.0, value
