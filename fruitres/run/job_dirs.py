"""Where each job of a sweep runs: a job directory only ever holds runs of its own overrides.

Hydra names a sweep's job directories by job number. A sweep relaunched into the same `hydra.sweep.dir`
with other values would then put, say, a `frozen_stages=0` run into the directory of an earlier
`frozen_stages=1` job, over its checkpoints and TensorBoard events. `conf/hydra/default.yaml` names the
directories with `sweep_job_subdir` instead: the directory that already holds this job's overrides (so a
relaunch continues or reuses it), else the job number when that is free, else the next free number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from fruitres.run_folders import OVERRIDES_FILE, job_order, saved_overrides


def sweep_job_subdir(sweep_dir: str, job_num: int, overrides: Sequence[str]) -> str:
    """The job's directory name under `sweep_dir`, claimed by writing its overrides there first."""
    sweep = Path(sweep_dir)
    wanted = [str(override) for override in overrides]
    # job folders only: the sweep's own (sweep_summary/, a TensorBoard run) are no job numbers
    taken = (
        {path.name for path in sweep.iterdir() if path.is_dir() and path.name.isdigit()}
        if sweep.is_dir()
        else set()
    )
    for name in sorted(taken, key=job_order):
        if saved_overrides(sweep / name) == wanted:
            return name
    number = int(job_num)
    while True:
        name = str(number)
        if name not in taken and _claim(sweep / name, wanted):
            return name
        number = max(number + 1, len(taken))


def _claim(job_dir: Path, overrides: list[str]) -> bool:
    """Create the job directory with its overrides; False when another job created it meanwhile."""
    try:
        job_dir.mkdir(parents=True)
    except FileExistsError:
        return False
    (job_dir / OVERRIDES_FILE).parent.mkdir()
    OmegaConf.save(OmegaConf.create(overrides), job_dir / OVERRIDES_FILE)
    return True
