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


def result_line(
    metrics: dict[str, float], tested: int | None, epochs: float, wall_time_s: float, tta: str | None = None
) -> str:
    """A run's outcome in one line: test accuracy with its interval and count (and the test-time
    augmentation it was measured with), the same on the Test images with no near twin in Training where
    measured, and how long it trained."""
    parts = [f"{epochs:.2f} epochs in {wall_time_s / 60:.1f} min"]
    if "test/acc" in metrics:
        interval = format_interval(accuracy_interval(metrics["test/acc"], tested))
        views = f" with tta={tta}" if tta else ""
        parts.append(f"test accuracy{views} {metrics['test/acc']:.4f} {interval} on {tested or '?'} images")
    novel = int(metrics.get("test/novel_images", 0))
    if "test/acc_novel" in metrics and novel:
        interval = format_interval(accuracy_interval(metrics["test/acc_novel"], novel))
        parts.append(f"without near twins in Training {metrics['test/acc_novel']:.4f} {interval} on {novel}")
    return "Result: " + "; ".join(parts)
