"""What every entry point does around its job: claim its output folder, check the config, show it, record
the run, and end on a fixable error with one line (or, stopped by a signal, with that signal's status).

`python -m fruitres.<verb>` is a Hydra main that calls ``run_task(cfg, job)``; the job returns its metrics.
Hydra prints a CompactHydraException as its message alone (plus its HYDRA_FULL_ERROR hint) and exits with
status 1; with ``HYDRA_FULL_ERROR=1`` the full traceback, original error included, is shown.
"""

from __future__ import annotations

import functools
import io
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import rich.syntax
import rich.tree
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, HydraException, InstantiationException
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from fruitres.errors import FixableError, fixable_cause
from fruitres.files import write_text_whole
from fruitres.run.compose import HYDRA_VERSION_BASE
from fruitres.run.config_checks import validate_config
from fruitres.run.folder_claim import command_line_run_dir_claimed, refuse_used_folder, run_folder_claimed
from fruitres.run.installation import CONF_DIR
from fruitres.run.interruption import EXIT_STATUS, sigterm_unwinds, stopped_by
from fruitres.run.record import run_recorded
from fruitres.run.resolvers import register_resolvers
from fruitres.run.resume import RESUMABLE_TASK, continues_a_run
from fruitres.run.third_party_warnings import silence_unactionable_warnings
from fruitres.run_folders import RECORD_FILE, read_record

CONFIG_TREE_FILE = "config_tree.log"
PRINT_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths")

Job = Callable[[DictConfig], dict[str, float]]


class OneLineError(CompactHydraException):
    """A FixableError on its way out of Hydra: printed as its message alone."""


def hydra_main(config_name: str) -> Callable:
    """An entry point's `@hydra.main`: conf/<config_name>.yaml from CONF_DIR, resolvers registered, and the
    folder `hydra.run.dir=` names claimed before Hydra writes into it."""
    register_resolvers()
    hydra_decorator = hydra.main(
        version_base=HYDRA_VERSION_BASE, config_path=str(CONF_DIR), config_name=config_name
    )
    resumable = config_name == RESUMABLE_TASK

    def decorator(task_function: Callable) -> Callable:
        hydra_entry = hydra_decorator(task_function)

        @functools.wraps(hydra_entry)
        def entry_in_claimed_folder(*args, **kwargs):
            refuse_unquoted_non_ascii(sys.argv[1:])
            continuing = resumable and continues_a_run(sys.argv)
            with command_line_run_dir_claimed(sys.argv, resumable, continuing):
                return hydra_entry(*args, **kwargs)

        return entry_in_claimed_folder

    return decorator


def refuse_unquoted_non_ascii(args: list[str]) -> None:
    """Hydra's override grammar rejects unquoted non-ASCII characters with a lexer error that says nothing
    of quoting; such an override leaves with one line that shows it quoted."""
    for arg in args:
        key, equals, value = arg.partition("=")
        if not equals or arg.startswith("-") or arg.isascii():
            continue
        try:
            OverridesParser.create().parse_override(arg)
        except HydraException:  # the lexer's error, or OverrideParseException
            raise SystemExit(
                f"{arg}: Hydra's override grammar takes non-ASCII characters only in quotes; quote the "
                f"value, e.g. '{key}={quoted(value)}' (spaces included, inside the shell's quotes)"
            ) from None


def quoted(value: str) -> str:
    """`value` as a quoted override value: a list's items quoted one by one."""
    if value.startswith("[") and value.endswith("]"):
        return "[" + ",".join(f'"{item.strip()}"' for item in value[1:-1].split(",")) + "]"
    return f'"{value}"'


def run_task(cfg: DictConfig, job: Job) -> float | None:
    """Run `job(cfg)` as every entry point does; returns the config's `optimized_metric` (for sweepers)."""
    silence_unactionable_warnings()

    def checked_job() -> dict[str, float]:
        validate_config(cfg)
        if rank_zero_only.rank == 0:  # DDP ranks > 0 re-run the command in the same run directory
            print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / CONFIG_TREE_FILE)
        return job(cfg)

    output_dir = Path(cfg.paths.output_dir)
    with one_line_errors(output_dir), output_dir_claimed(cfg), sigterm_unwinds():
        # a failed sweep job is recorded and the sweep goes on (run_recorded)
        return run_recorded(cfg, checked_job)  # run_record.json: status, error, time, metrics


@contextmanager
def output_dir_claimed(cfg: DictConfig) -> Iterator[None]:
    """Hold the run's output folder: Hydra's (claimed before Hydra wrote there when the command line named
    it), or a `paths.output_dir` set apart from it, which must not hold another run's files."""
    hydra_cfg = HydraConfig.get()
    output_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    if output_dir == Path(hydra_cfg.runtime.output_dir).resolve():
        key = "hydra.sweep.dir" if hydra_cfg.mode == RunMode.MULTIRUN else "hydra.run.dir"
        with run_folder_claimed(output_dir, key):
            yield
        return
    resumable = cfg.task_name == RESUMABLE_TASK
    with run_folder_claimed(output_dir, "paths.output_dir"):
        if not (resumable and cfg.get("ckpt_path") is not None):
            refuse_used_folder(output_dir, "paths.output_dir", resumable)
        yield


@contextmanager
def one_line_errors(output_dir: Path) -> Iterator[None]:
    """Fixable errors (also when raised while Hydra instantiates a node) leave as one line; a run stopped
    by SIGTERM or Ctrl-C leaves with one line and that signal's status (143, 130)."""
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
    except BaseException as error:
        signal_name = stopped_by(error)
        if signal_name is None:
            raise
        print(interrupted_line(signal_name, output_dir), file=sys.stderr)
        raise SystemExit(EXIT_STATUS[signal_name]) from None


def interrupted_line(signal_name: str, output_dir: Path) -> str:
    """What a run stopped by a signal says last: where it is recorded and how to continue it."""
    record = read_record(output_dir) or {}
    if record.get("status") != "interrupted":
        return f"Stopped by {signal_name} before the run started: nothing to save"
    resume = f"; continue with: {record['resume']}" if record.get("resume") else ""
    return f"Stopped by {signal_name}: {output_dir / RECORD_FILE} says interrupted{resume}"


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
