"""One process per run folder: every entry point claims its output folder before it writes there.

The claim is a POSIX lock (`lockf`) on a marker file in the folder (`.fruitres-claim`) that names its
holder: pid, host and start time. The kernel drops the lock when the process ends, however it ends (forked
data-loader workers never hold it), so the marker of a killed run is taken over with a warning and never
blocks anyone. A folder held by a live process is
refused, and so is a folder that already holds another run's files, unless the command continues that run
(`resume=`, fruitres/run/resume.py). A folder named by `hydra.run.dir=` is claimed before Hydra writes its
own files there; DDP ranks > 0 re-run the command in rank 0's folder and join its claim.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from fruitres.checkpoints.files import CHECKPOINT_DIR
from fruitres.errors import FixableError
from fruitres.run_folders import CLAIM_FILE, HYDRA_DIR, RECORD_FILE

log = logging.getLogger(__name__)

RUN_DIR_KEY = "hydra.run.dir"
MULTIRUN_FLAGS = {"-m", "--multirun"}

_held: dict[Path, int] = {}  # the folders this process holds, and the descriptor of each one's locked marker


class RunFolderError(FixableError):
    """The output folder cannot be this run's (another run holds it or its files, or it is not writable); the
    message names it and the setting that picks another."""


def is_ddp_follower() -> bool:
    """DDP ranks > 0 (and nodes > 0) run the same command in rank 0's folder."""
    ranks = (os.environ.get(name, "0") or "0" for name in ("LOCAL_RANK", "NODE_RANK"))
    return rank_zero_only.rank != 0 or any(rank != "0" for rank in ranks)


@contextlib.contextmanager
def run_folder_claimed(folder: Path, key: str) -> Iterator[None]:
    """Hold `folder` for this process while the block runs; `key` is the setting that picks another one."""
    folder = Path(folder).expanduser().resolve()
    if folder in _held or is_ddp_follower():
        yield
        return
    created = not folder.exists()
    _held[folder] = _lock(folder, key)
    try:
        yield
    finally:
        _release(folder, _held.pop(folder), created)


def previous_run_files(folder: Path, hydra_files_are_ours: bool) -> list[str]:
    """What runs before left in `folder`: Hydra's files (unless this run's Hydra wrote them), a record,
    checkpoints."""
    folder = Path(folder)
    found = [] if hydra_files_are_ours or not (folder / HYDRA_DIR).is_dir() else [f"{HYDRA_DIR}/"]
    found += [RECORD_FILE] if (folder / RECORD_FILE).is_file() else []
    found += [f"{CHECKPOINT_DIR}/{path.name}" for path in sorted((folder / CHECKPOINT_DIR).glob("*.ckpt"))]
    return found


def refuse_used_folder(folder: Path, key: str, resumable: bool, hydra_files_are_ours: bool = False) -> None:
    """Stop before writing into a folder that holds another run's files; a training run can be continued."""
    found = previous_run_files(folder, hydra_files_are_ours)
    if not found:
        return
    what = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    way_out = f"continue it with resume={folder}, or" if resumable else "this command never writes there;"
    raise RunFolderError(
        f"{key}={folder} already holds a run ({what}); {way_out} give a new {key} "
        "(or leave it out for a fresh folder under logs/)"
    )


def command_line_run_dir(argv: list[str]) -> Path | None:
    """The folder `hydra.run.dir=` names on a single run's command line; None where Hydra picks it."""
    if MULTIRUN_FLAGS & set(argv[1:]):
        return None
    values = [arg.split("=", 1)[1] for arg in argv[1:] if arg.lstrip("+").startswith(f"{RUN_DIR_KEY}=")]
    if not values or "${" in values[-1]:  # an interpolation: Hydra resolves it, run_task claims the result
        return None
    return Path(values[-1].strip("'\"")).expanduser()


@contextlib.contextmanager
def command_line_run_dir_claimed(argv: list[str], resumable: bool, continuing: bool) -> Iterator[None]:
    """Claim the `hydra.run.dir=` of the command line before Hydra writes its files there, and refuse it
    when it holds another run's files (unless `continuing` that run); one line and exit status 1."""
    run_dir = command_line_run_dir(argv)
    if run_dir is None or is_ddp_follower():
        yield
        return
    with contextlib.ExitStack() as claim:
        try:
            claim.enter_context(run_folder_claimed(run_dir, RUN_DIR_KEY))
            if not continuing:
                refuse_used_folder(run_dir, RUN_DIR_KEY, resumable)
        except FixableError as error:
            raise SystemExit(str(error)) from None
        yield


def _lock(folder: Path, key: str) -> int:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        message = f"{key}={folder} cannot be made a folder ({error.strerror}); give a writable {key}"
        raise RunFolderError(message) from None
    marker = folder / CLAIM_FILE
    while True:
        try:
            descriptor = os.open(marker, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a read-only folder, no permission
            message = f"{key}={folder} is not writable ({error.strerror}); give a writable {key}"
            raise RunFolderError(message) from None
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):  # a file system without locks
                log.warning("Cannot lock %s (%s): another run could write there too", marker, error.strerror)
                break
            holder = _holder(descriptor) or "another process"
            os.close(descriptor)
            raise RunFolderError(
                f"{key}={folder} is in use by {holder}; give another {key}, or wait for that run to end"
            ) from None
        if _is_current(descriptor, marker):
            break
        os.close(descriptor)  # its holder ended and removed it meanwhile: claim the folder afresh
    previous = _holder(descriptor)
    if previous:
        log.warning("%s was held by %s, which ended without releasing it; taking it over", folder, previous)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):  # a full disk: the lock holds the folder all the same
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(me).encode(), 0)
    return descriptor


def _is_current(descriptor: int, marker: Path) -> bool:
    """Whether the locked file is still the one at `marker` (not one its holder removed before we locked)."""
    try:
        return os.fstat(descriptor).st_ino == marker.stat().st_ino
    except FileNotFoundError:
        return False


def _holder(descriptor: int) -> str:
    """The holder a marker names, as a phrase ('' for an empty marker)."""
    text = os.pread(descriptor, 4096, 0).decode(errors="replace")
    if not text:
        return ""
    try:
        holder = json.loads(text)
        return f"process {holder['pid']} on {holder['host']} (started {holder['started_at']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def _release(folder: Path, descriptor: int, created: bool) -> None:
    (folder / CLAIM_FILE).unlink(missing_ok=True)
    os.close(descriptor)
    if created:  # nothing came to it (Hydra stopped on a bad override): leave no empty folder behind
        with contextlib.suppress(OSError):
            folder.rmdir()
