"""Where the running copy of fruitres keeps its configs, and the checkout it runs from, if any.

Users edit the top-level `conf/` of a checkout (an editable install, `make install`, reads it in place). A
wheel carries a copy of it inside the package, as `fruitres/conf` (pyproject.toml maps it there), which a
checkout never holds: the packaged copy, where present, marks an installed package with no checkout.
Entry points, the bench and the tests all compose from `CONF_DIR`; a user's own config folder adds to it
(`--config-dir`, or `hydra.searchpath`).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PACKAGED_CONF_DIR = PACKAGE_DIR / "conf"  # only in an installed wheel (or a non-editable `pip install .`)
CHECKOUT_DIR: Path | None = None if PACKAGED_CONF_DIR.is_dir() else PACKAGE_DIR.parent
CONF_DIR = PACKAGED_CONF_DIR if CHECKOUT_DIR is None else CHECKOUT_DIR / "conf"
