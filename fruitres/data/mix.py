"""Mixup and CutMix of training batches, with soft targets (timm's `Mixup`, batch mode)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fruitres.errors import ConfigError


class MixupCutmix:
    """Mixes a batch with its reverse: CutMix with probability `switch_prob`, else Mixup; `prob` of batches.

    The mixing weight comes from Beta(alpha, alpha) of the chosen method (an alpha of 0 turns a method
    off); CutMix's weight is corrected to the pasted box's area. Draws use torch's global generator, which
    checkpoints restore (callbacks/rng.py), so a resumed run mixes as the one it continues.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or mixup_alpha == cutmix_alpha == 0:
            raise ConfigError(
                f"model.mix: mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}; give one of them > 0 "
                "(or model/mix=null for no mixing)"
            )
        if not (0 <= prob <= 1 and 0 <= switch_prob <= 1):
            raise ConfigError(f"model.mix: prob={prob} and switch_prob={switch_prob} must lie in [0, 1]")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed images, soft targets whose rows sum to 1)."""
        targets = F.one_hot(labels, self.num_classes).float()
        if torch.rand(()) >= self.prob:
            return images, targets
        cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or torch.rand(()) < self.switch_prob)
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        weight = float(torch.distributions.Beta(alpha, alpha).sample())
        partners = images.flip(0)
        if cutmix:
            images, weight = _paste_box(images, partners, weight)
        else:
            images = images * weight + partners * (1 - weight)
        return images, targets * weight + targets.flip(0) * (1 - weight)


def _paste_box(images: torch.Tensor, partners: torch.Tensor, weight: float) -> tuple[torch.Tensor, float]:
    """CutMix: a box of (1 - weight) of the area, centred at random and clipped, from `partners`."""
    height, width = images.shape[-2:]
    ratio = (1 - weight) ** 0.5
    box_h, box_w = int(height * ratio), int(width * ratio)
    centre_y, centre_x = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(0, centre_y - box_h // 2), min(height, centre_y + box_h // 2)
    left, right = max(0, centre_x - box_w // 2), min(width, centre_x + box_w // 2)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = partners[..., top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)
