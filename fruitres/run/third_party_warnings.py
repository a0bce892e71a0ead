"""Warnings from libraries that a fruitres user cannot act on, silenced narrowly: by message and module.

Each filter names the library that warns and why nothing in a user's config or data can change it. Any
other warning still reaches the user; tests/test_warnings.py runs every entry point and fails on one.
"""

from __future__ import annotations

import warnings

UNACTIONABLE: tuple[tuple[str, type[Warning], str], ...] = ()


def silence_unactionable_warnings() -> None:
    for message, category, module in UNACTIONABLE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
