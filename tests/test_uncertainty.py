"""The 95% interval a test accuracy carries: Wilson's score interval for a proportion."""

from __future__ import annotations

import math

import pytest

from fruitres.reports.uncertainty import accuracy_interval, format_interval, wilson_interval


@pytest.mark.parametrize(
    ("successes", "total", "expected"),
    [
        (8, 10, (0.4902, 0.9433)),  # the textbook example (Newcombe 1998, Agresti & Coull 1998)
        (0, 10, (0.0, 0.2775)),  # stays inside [0, 1] at 0%, unlike the normal approximation
        (10, 10, (0.7225, 1.0)),
    ],
)
def test_wilson_interval_matches_known_values(successes: int, total: int, expected: tuple) -> None:
    assert wilson_interval(successes, total) == pytest.approx(expected, abs=5e-5)


def test_accuracy_interval_counts_the_images_and_narrows_with_more_of_them() -> None:
    assert accuracy_interval(0.8, 10) == wilson_interval(8, 10)
    small, large = accuracy_interval(0.9, 100), accuracy_interval(0.9, 10_000)
    assert large[1] - large[0] < (small[1] - small[0]) / 5
    assert accuracy_interval(None, 10) is None and accuracy_interval(0.5, 0) is None
    assert accuracy_interval(math.nan, 10) is None
    assert format_interval(wilson_interval(8, 10)) == "[0.4902, 0.9433]"
