"""Fruits named in a file name (Fruits-360's `test-multiple_fruits/`: `apple_banana_orange.jpg`,
`Apples(lots)_1.jpg`) and how many of them the top-k classes found.

The rule, documented in docs/evaluate-predict-export.md#photos-of-several-fruits: a class's fruit is the first
word of its name (`Apple Red Delicious` → apple); a file name names a fruit when one of its words (split on
anything but letters) is a class's fruit, case-insensitive and singular/plural tolerant (`Apples`, `cherries`,
`Tomatoes` and `Limes` match `Apple`, `Cherry 1`, `Tomato 1` and `Limes`). Other words (`lots`, numbers) are
ignored; a fruit named twice counts once. A named fruit is found when any of the top-k classes is that fruit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from fruitres.reports.figures import literal

if TYPE_CHECKING:
    from fruitres.reports.predictions import Prediction

WORD = re.compile(r"[^\W\d_]+")  # runs of letters


def singular(word: str) -> str:
    """`word` lower-cased with an English plural ending removed (cherries → cherry, peaches → peach)."""
    word = word.lower()
    for plural, single in (("ies", "y"), ("oes", "o"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(plural) and len(word) > len(plural) + 1:
            return word[: -len(plural)] + single
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        return word[:-1]
    return word


def fruit_of(class_name: str) -> str:
    """The fruit a class is of: the first word of its name, singular (`Apple Red 1` → apple)."""
    words = WORD.findall(class_name)
    return singular(words[0]) if words else ""


def fruits_named(path: str | Path, class_names: Sequence[str]) -> list[str]:
    """The fruits (as `fruit_of` spells them) that the file name of `path` names, in order, once each."""
    known = {fruit_of(name) for name in class_names} - {""}
    words = (singular(word) for word in WORD.findall(Path(path).stem))
    return list(dict.fromkeys(word for word in words if word in known))


def fruits_found(named: Sequence[str], top_classes: Sequence[str]) -> int:
    """How many of the `named` fruits are the fruit of one of `top_classes`."""
    predicted = {fruit_of(name) for name in top_classes}
    return sum(1 for fruit in named if fruit in predicted)


def summary_line(named: Sequence[Sequence[str]], found: Sequence[int | None], top_k: int) -> str | None:
    """`12 of 17 fruits named in 6 file names are in the top-5` (None when no file name names a fruit)."""
    images = sum(1 for fruits in named if fruits)
    if not images:
        return None
    total, hits = sum(len(fruits) for fruits in named), sum(n or 0 for n in found)
    return (
        f"{hits} of {total} fruits named in {images} file name(s) are in the top-{top_k} ({hits / total:.0%})"
    )


def multi_fruit_figure(predictions: Sequence[Prediction], max_images: int = 8) -> Figure | None:
    """The first `max_images` readable files whose names name fruits, each titled with its file name, its
    top-k classes and how many named fruits they found (None when no file name names a fruit)."""
    shown = [p for p in predictions if p.fruits_named and not p.error][:max_images]
    if not shown:
        return None
    ncols = min(4, len(shown))
    nrows = -(-len(shown) // ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 4.2 * nrows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, p in zip(axes.flat, shown, strict=False):
        with Image.open(p.path) as image:
            axis.imshow(ImageOps.exif_transpose(image).convert("RGB"))
        found = f"{p.fruits_in_top_k} of {len(p.fruits_named)} named in the top-{len(p.classes)}"
        ranked = "\n".join(f"{c} {q:.0%}" for c, q in zip(p.classes[:3], p.probabilities[:3], strict=True))
        color = "green" if p.fruits_in_top_k == len(p.fruits_named) else "darkorange"
        axis.set_title(literal(f"{Path(p.path).name}\n{found}\n{ranked}"), fontsize=8, color=color)
    figure.tight_layout()
    return figure
