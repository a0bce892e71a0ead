"""Pictures of data and predictions, for TensorBoard and the notebooks."""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are rendered to files and TensorBoard, never to a window

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image


def denormalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Undo the input normalisation, as the tutorial's imshow does: back to [0, 1] RGB for display."""
    return (images.float() * std.to(images.device) + mean.to(images.device)).clamp(0, 1)


def literal(text: str) -> str:
    """`text` as matplotlib draws it literally: a class named `$x$` would otherwise render as math, and a
    lone `$` in a stranger's name (`a$b$c`) breaks the figure."""
    return str(text).replace("$", r"\$")


def to_png(figure: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes and release it; shows the same under any matplotlib backend."""
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def labelled_grid(
    images: torch.Tensor, titles: Sequence[str], ncols: int = 8, title_colors: Sequence[str] | None = None
) -> Figure:
    """A grid of [0, 1] RGB images (N, 3, H, W), each with its own title."""
    count = len(images)
    nrows = max(1, -(-count // ncols))
    figure, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.1 * nrows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            axis.imshow(images[index].permute(1, 2, 0).cpu().numpy())
            color = title_colors[index] if title_colors else "black"
            axis.set_title(literal(titles[index]), fontsize=7, color=color)
    figure.tight_layout()
    return figure


def confusion_matrix_figure(matrix: torch.Tensor, class_names: Sequence[str], title: str = "") -> Figure:
    """Rows are true classes, columns predictions; colour is the share of each true class, so rare
    classes read as clearly as common ones. Counts are written in the cells when they fit."""
    counts = matrix.detach().cpu().long()
    shares = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    num_classes = len(class_names)
    side = min(40.0, max(5.0, 0.22 * num_classes + 3))
    fontsize = min(9.0, 0.45 * 72 * side / max(num_classes, 1))  # about half a cell high, in points
    figure, axis = plt.subplots(figsize=(side + 1, side))
    image = axis.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.04, pad=0.02, label="share of the true class")
    ticks = range(num_classes)
    names = [literal(name) for name in class_names]
    axis.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
    axis.set_yticks(ticks, names, fontsize=fontsize)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if num_classes <= 20:
        for (row, col), count in np.ndenumerate(counts.numpy()):
            if count:
                color = "white" if shares[row, col] > 0.5 else "black"
                axis.text(col, row, str(count), ha="center", va="center", fontsize=fontsize, color=color)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def per_class_bars(values: Sequence[float], class_names: Sequence[str], title: str, xlabel: str) -> Figure:
    """One horizontal bar per class, worst at the top, with its value written beside it."""
    order = np.argsort(np.asarray(values, dtype=float), kind="stable")
    height = max(2.5, 0.2 * len(class_names) + 1)
    fontsize = 7 if len(class_names) > 40 else 8
    figure, axis = plt.subplots(figsize=(7, height))
    positions = np.arange(len(order))
    sorted_values = [float(values[i]) for i in order]
    bars = axis.barh(positions, sorted_values, color=plt.cm.RdYlGn(sorted_values))
    axis.bar_label(bars, [f"{v:.0%}" for v in sorted_values], padding=2, fontsize=fontsize)
    axis.set_yticks(positions, [literal(class_names[i]) for i in order], fontsize=fontsize)
    axis.set_ylim(len(order) - 0.5, -0.5)  # the first (worst) class at the top
    axis.set_xlim(0, 1.12)
    axis.set_xlabel(xlabel)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def prediction_grid(
    images: torch.Tensor,
    true_names: Sequence[str],
    predicted_names: Sequence[str],
    confidences: Sequence[float],
    ncols: int = 8,
) -> Figure:
    """[0, 1] RGB images titled with prediction (confidence) and truth; wrong ones in red with a cross."""
    titles, colors = [], []
    for true, predicted, confidence in zip(true_names, predicted_names, confidences, strict=True):
        right = true == predicted
        mark = "✓" if right else "✗"
        titles.append(f"{mark} {predicted} ({confidence:.0%})\ntrue: {true}")
        colors.append("green" if right else "red")
    return labelled_grid(images, titles, ncols=ncols, title_colors=colors)


def write_summary_events(
    folder: Path, suffix: str, step: int, images: dict[str, bytes], texts: dict[str, str]
) -> None:
    """PNG figures (Images tab) and Markdown (Text tab) at `step`, in an event file of their own in `folder`
    (a TensorBoard run), replacing the one an earlier build of the same report wrote there."""
    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when writing

    for old in Path(folder).glob(f"events.out.tfevents.*{suffix}"):
        old.unlink()
    with SummaryWriter(str(folder), filename_suffix=suffix) as writer:
        for tag, png in images.items():
            writer.add_image(
                tag, np.asarray(Image.open(BytesIO(png)).convert("RGB")), step, dataformats="HWC"
            )
        for tag, text in texts.items():
            writer.add_text(tag, text, step)
