"""What every entry point does around its job: check the config, show it, record the run, and end on a
fixable error with one line.

`python -m fruitres.<verb>` is a Hydra main that calls ``run_task(cfg, job)``; the job returns its metrics.
Hydra prints a CompactHydraException as its message alone (plus its HYDRA_FULL_ERROR hint) and exits with
status 1; with ``HYDRA_FULL_ERROR=1`` the full traceback, original error included, is shown.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import rich.syntax
import rich.tree
from hydra.errors import CompactHydraException, InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from fruitres.errors import FixableError, fixable_cause
from fruitres.files import write_text_whole
from fruitres.run.compose import HYDRA_VERSION_BASE
from fruitres.run.config_checks import validate_config
from fruitres.run.installation import CONF_DIR
from fruitres.run.record import run_recorded
from fruitres.run.resolvers import register_resolvers
from fruitres.run.third_party_warnings import silence_unactionable_warnings

INTERRUPTED_EXIT_STATUS = 130  # the shell's status for a process stopped by Ctrl-C
CONFIG_TREE_FILE = "config_tree.log"
PRINT_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths")

Job = Callable[[DictConfig], dict[str, float]]


class OneLineError(CompactHydraException):
    """A FixableError on its way out of Hydra: printed as its message alone."""


def hydra_main(config_name: str) -> Callable:
    """An entry point's `@hydra.main`: conf/<config_name>.yaml from CONF_DIR, resolvers registered."""
    register_resolvers()
    return hydra.main(version_base=HYDRA_VERSION_BASE, config_path=str(CONF_DIR), config_name=config_name)


def run_task(cfg: DictConfig, job: Job) -> float | None:
    """Run `job(cfg)` as every entry point does; returns the config's `optimized_metric` (for sweepers)."""
    silence_unactionable_warnings()

    def checked_job() -> dict[str, float]:
        validate_config(cfg)
        if rank_zero_only.rank == 0:  # DDP ranks > 0 re-run the command in the same run directory
            print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / CONFIG_TREE_FILE)
        return job(cfg)

    with one_line_errors():  # a failed sweep job is recorded and the sweep goes on (run_recorded)
        return run_recorded(cfg, checked_job)  # run_record.json: status, error, time, metrics


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Fixable errors (also when raised while Hydra instantiates a node) leave as one line; Ctrl-C outside
    fitting exits quietly (during fitting Lightning handles it: checkpoint, exit status 1)."""
    try:
        yield
    except FixableError as error:
        raise OneLineError(str(error)) from error
    except InstantiationException as error:
        if fixable_cause(error) is not None:
            raise OneLineError(str(fixable_cause(error))) from error
        if isinstance(error.__cause__, MisconfigurationException):  # Lightning's word for a bad setting
            key = re.search(r"full_key: (\S+)", str(error))
            raise OneLineError(f"{key.group(1) if key else 'config'}: {error.__cause__}") from error
        raise
    except KeyboardInterrupt:
        print("Interrupted (Ctrl-C) outside training: nothing to save", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT_STATUS) from None


def print_config_tree(cfg: DictConfig, save_to: Path | None = None) -> None:
    """Print the resolved config as a tree, groups first, and save the same text beside the run."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in PRINT_ORDER if k in cfg] + [k for k in cfg if k not in PRINT_ORDER]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        tree.add(str(key), style="yellow", guide_style="yellow").add(rich.syntax.Syntax(text, "yaml"))
    Console().print(tree)
    if save_to is not None:
        plain = Console(file=io.StringIO(), width=120, color_system=None)
        plain.print(tree)
        write_text_whole(save_to, plain.file.getvalue())
