"""Files written whole or not at all: a reader, or a run killed half-way, never sees half a file.

Every file fruitres writes for later use (checkpoints, caches, records, reports) goes through
`replaced_whole`: the content goes to a hidden temporary file beside the target (same filesystem, so the
final rename is atomic), is fsynced, and replaces the target with one ``os.replace``.
"""

from __future__ import annotations

import csv
import errno
import logging
import numbers
import os
import re
import shutil
import socket
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fruitres.errors import CheckpointError, FixableError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"  # a file being written; one left behind was cut off by a kill
# read once at import: os.umask only reads by setting, which would race with files other threads create
UMASK = os.umask(0o022)
os.umask(UMASK)
# A partial's name says which process writes it (.<target>.@<host>@<pid>@.<random>.partial), so the next run
# can tell a dead process's leftover from a file that a live one is still writing.
PARTIAL_OWNER = re.compile(r"\.@(?P<host>[^@/]*)@(?P<pid>[0-9]+)@\.")
# What a full, read-only or forbidden disk raises; anything else is a bug worth its traceback.
FULL = "free space there or write to another folder"
READ_ONLY = "make it writable or write to another folder"
DISK_ERRORS = {  # errno: (what happened, the fix)
    errno.ENOSPC: ("the disk is full", FULL),
    errno.EDQUOT: ("the disk quota is used up", FULL),
    errno.EROFS: ("the file system is read-only", READ_ONLY),
    errno.EACCES: ("permission denied", READ_ONLY),
    errno.EPERM: ("permission denied", READ_ONLY),
}


class WriteError(FixableError, OSError):
    """A file that cannot be written for want of space or permission; the earlier file is left as it was."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())


@contextmanager
def replaced_whole(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `target` at once, on error it is removed."""
    target = Path(target)
    with disk_errors_named(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{target.name}.@{_host()}@{os.getpid()}@."
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=PARTIAL_SUFFIX)
        os.close(handle)
        partial = Path(name)
        try:
            yield partial
            with open(partial, "rb+") as file:
                os.fsync(file.fileno())
            partial.chmod(0o666 & ~UMASK)  # mkstemp's 0600 would hide run records from a shared group
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        _fsync_folder(target.parent)  # make the rename itself survive a power cut


@contextmanager
def disk_errors_named(target: Path) -> Iterator[None]:
    """A full, read-only or forbidden disk while writing `target` becomes one WriteError line naming its
    folder; the file that was there before is untouched (writes go to a partial file first)."""
    try:
        yield
    except WriteError:
        raise
    except Exception as error:  # torch.save wraps the OSError in a RuntimeError: the chain is searched
        named = disk_error(error, Path(target))
        if named is error:
            raise
        raise named from error


def disk_error(error: BaseException, target: Path) -> BaseException:
    """`error` as a one-line WriteError if a full, read-only or forbidden disk caused it, else `error`."""
    cause = error
    while cause is not None and not (isinstance(cause, OSError) and cause.errno in DISK_ERRORS):
        cause = cause.__cause__ or cause.__context__
    if cause is None or not _about(cause, target):
        return error
    folder = _existing_folder(target.parent)
    free = shutil.disk_usage(folder).free  # measured once the partial file is gone
    free = f" ({free:,} bytes free there without this file)" if cause.errno == errno.ENOSPC else ""
    previous = " (the earlier file is unchanged)" if target.exists() else ""
    reason, fix = DISK_ERRORS[cause.errno]
    return WriteError(f"cannot write {target.name} in {target.parent}: {reason}{free}{previous}; {fix}")


def _about(error: OSError, target: Path) -> bool:
    """Whether `error` concerns writing `target` (a file in its folder, the folder, or no file named), not
    reading some other file inside the `with` block (copying a file that cannot be read)."""
    if error.filename is None:
        return True
    named = Path(os.fsdecode(error.filename))
    return named.parent == target.parent or target.parent.is_relative_to(named)


def _existing_folder(folder: Path) -> Path:
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def remove_dead_partials(folder: Path, pattern: str = f".*{PARTIAL_SUFFIX}") -> None:
    """Delete the partial files in `folder` that a process of this host left when it died (its pid is gone);
    name the ones of other hosts, whose processes this one cannot see."""
    for partial in sorted(Path(folder).glob(pattern)):
        owner = PARTIAL_OWNER.search(partial.name)
        if owner is None or owner["host"] != _host():
            log.warning(
                "%s: a partial file of another host or an older fruitres; delete it if no run writes it",
                partial,
            )
        elif not _process_alive(int(owner["pid"])):
            log.info("Removing %s, left by process %s, which died while writing it", partial, owner["pid"])
            partial.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


# File names that are not valid UTF-8 (archives made on Windows) reach Python as lone surrogates;
# "surrogateescape" writes them back as the name's own bytes instead of failing half-way.
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}


def write_text_whole(target: Path, text: str) -> None:
    with replaced_whole(target) as partial:
        partial.write_text(text, **ENCODING)


def write_bytes_whole(target: Path, data: bytes) -> None:
    with replaced_whole(target) as partial:
        partial.write_bytes(data)


# OWASP's CSV-injection rule: a cell starting with one of these is read by spreadsheets as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A signed plain number ("-2", "+0.5", "-1e-3") is a value to a spreadsheet, never a formula: it stays as is,
# so numbers written as text still read back as numbers ("-inf" and "-2+3" are escaped).
PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def csv_cell(value: Any) -> Any:
    """`value` as a CSV cell a spreadsheet shows and never runs: text that would start a formula (a class
    folder named `=1+2`) gets a leading `'`; numbers and signed plain numbers stay as they are.

    Nothing reads the `'` away: the CSVs are for spreadsheets and people; the exact names are in the JSON
    written beside each CSV (metrics.json's class_names, predictions.json)."""
    if value is None or isinstance(value, numbers.Number):
        return value
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def write_csv_whole(target: Path, rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """A CSV file with a header of `fields` and one line per row (missing keys left empty), every cell
    made safe by `csv_cell`."""
    with replaced_whole(target) as partial, open(partial, "w", newline="", **ENCODING) as file:
        writer = csv.DictWriter(file, fieldnames=list(fields), restval="")
        writer.writerow({field: csv_cell(field) for field in fields})
        writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync on Windows
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def check_checkpoint_file(path: Path) -> None:
    """Raise CheckpointError unless `path` is a whole torch zip archive (reads only its directory)."""
    try:
        with zipfile.ZipFile(path) as archive:
            complete = any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        reason = "it is empty" if path.is_file() and path.stat().st_size == 0 else str(error)
        raise CheckpointError(_corrupt_message(path, reason)) from None
    if not complete:
        raise CheckpointError(_corrupt_message(path, "it holds no torch.save data"))


def _corrupt_message(path: Path, reason: str) -> str:
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
    fallback = (
        f"continue from another checkpoint there ({', '.join(others)}) with ckpt_path=<that file>"
        if others
        else "start the run again"
    )
    return (
        f"checkpoint {path} is truncated or not a checkpoint ({reason}): it was cut off while being written "
        f"or copied; restore it, or {fallback}"
    )
