"""Test-time augmentation: the softmax averaged over flipped views of each image (fastai's `tta`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fruitres.errors import ConfigError

View = Callable[[torch.Tensor], torch.Tensor]
VIEWS: dict[str, tuple[View, ...]] = {
    "flip": (lambda x: x, lambda x: x.flip(-1)),  # the image and its mirror image
    "flips": (lambda x: x, lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.flip(-2, -1)),
}


def check_tta(name: str | None) -> str | None:
    """The TTA name if it is known (None = off); otherwise a one-line error listing the choices."""
    if name is not None and name not in VIEWS:
        raise ConfigError(
            f"tta={name} is not a test-time augmentation; use one of {', '.join(VIEWS)} or null"
        )
    return name


def tta_log_probs(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, name: str
) -> torch.Tensor:
    """Log of the softmax averaged over the views of `name`: logits for argmax, softmax and the loss."""
    views = VIEWS[check_tta(name)]
    probabilities = torch.stack([model(view(images)).float().softmax(dim=1) for view in views]).mean(dim=0)
    return probabilities.log()
