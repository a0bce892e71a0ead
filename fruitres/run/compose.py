"""A config composed outside an entry point (tests, benchmarks, notebooks), as `python -m fruitres.<verb>`
composes it: from the same folder, with the same resolvers."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from fruitres.run.installation import CONF_DIR
from fruitres.run.resolvers import register_resolvers

HYDRA_VERSION_BASE = "1.3"


def compose_config(
    config_name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False
) -> DictConfig:
    """conf/<config_name>.yaml with `overrides` applied."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=HYDRA_VERSION_BASE):
        return compose(config_name, list(overrides), return_hydra_config=return_hydra_config)
