"""How sure a test accuracy is: the Wilson 95% interval of a proportion measured on n test images."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: float, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of `successes` out of `total` (NaNs when there are no trials).

    Unlike the normal approximation it stays inside [0, 1] and is sound near 0% and 100%, where test
    accuracies of this project often lie.
    """
    if total <= 0:
        return math.nan, math.nan
    share = successes / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half_width = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def accuracy_interval(accuracy: float | None, total: int | None) -> tuple[float, float] | None:
    """The 95% interval of an accuracy measured on `total` images (None without both)."""
    if accuracy is None or not total or math.isnan(accuracy):
        return None
    return wilson_interval(round(accuracy * total), total)


def format_interval(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]"
