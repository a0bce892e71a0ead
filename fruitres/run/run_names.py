"""What a sweep job is called in TensorBoard: the values it was given for the keys the sweep varies.

TensorBoard names a run by its folder's path under `--logdir`, and a job's folder is Hydra's job number
(other code finds a run's events in `<run dir>/tensorboard`). So a sweep job's TensorBoard logger writes into
`<job dir>/tensorboard/<swept values>/` (conf/logger/tensorboard.yaml), e.g. `lr=0.001,frozen_stages=3`:
`--logdir <sweep dir>` lists the run as `0/tensorboard/lr=0.001,frozen_stages=3`, `--logdir logs` with the
sweep's folder in front, and the HParams tab's Trial ID is the values alone. The events stay inside the job's
own folder. A single run writes into `<run dir>/tensorboard/` and keeps its timestamped name.
"""

from __future__ import annotations

import re
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from fruitres.run_folders import TENSORBOARD_DIR, tensorboard_events_dir

MULTIRUN_FILE = "multirun.yaml"  # the sweep's config, saved by Hydra's sweeper before the first job starts
UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._=,+\-]")


def in_sweep_job() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def swept_keys() -> list[str]:
    """The keys this job's sweep varies (command-line sweeps, then the sweeper's params); [] outside one."""
    if not in_sweep_job():
        return []
    hydra = HydraConfig.get()
    multirun = Path(hydra.sweep.dir) / MULTIRUN_FILE
    command_line = list(OmegaConf.load(multirun).hydra.overrides.task) if multirun.is_file() else []
    parsed = OverridesParser.create().parse_overrides([str(item) for item in command_line])
    keys = [override.key_or_group for override in parsed if override.is_sweep_override()]
    keys += [str(key) for key in (hydra.sweeper.get("params") or {})]
    return list(dict.fromkeys(keys))


def job_overrides() -> dict[str, str]:
    """This job's own overrides as key → value (one value per swept key); {} outside Hydra."""
    if not HydraConfig.initialized():
        return {}
    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return {override.key_or_group: override.get_value_element_as_str() for override in parsed}


def tensorboard_run_name(output_dir: str | None) -> str:
    """`lr=0.001,frozen_stages=3` for a sweep job (last key components, file-name safe); '' for a single run.

    A resumed run (`resume=<job dir>` runs outside the sweep) goes on in the folder its events are already in.
    No output folder (`--cfg job` prints the config before Hydra makes one): the single run's ''.
    """
    if output_dir is None:
        return ""
    earlier = tensorboard_events_dir(Path(output_dir))
    if earlier != Path(output_dir) / TENSORBOARD_DIR:
        return earlier.name
    return swept_values_name(swept_keys())


def swept_values_name(keys: list[str]) -> str:
    """`lr=0.001,frozen_stages=3`: this job's values of the swept `keys`, file-name safe ('' for none);
    its MLflow run's name too (fruitres/run/mlflow_tracking.py)."""
    values = job_overrides()
    name = ",".join(f"{key.split('.')[-1]}={values[key]}" for key in keys if key in values)
    return UNSAFE_IN_FILE_NAMES.sub("_", name)
