"""Pictures of data and predictions, for TensorBoard and the notebooks."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # figures are rendered to files and TensorBoard, never to a window

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure


def denormalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Undo the input normalisation, as the tutorial's imshow does: back to [0, 1] RGB for display."""
    return (images.float() * std.to(images.device) + mean.to(images.device)).clamp(0, 1)


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
            axis.set_title(titles[index], fontsize=7, color=color)
    figure.tight_layout()
    return figure
