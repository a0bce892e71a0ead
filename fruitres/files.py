"""Files written whole or not at all: a reader, or a run killed half-way, never sees half a file.

Every file fruitres writes for later use (checkpoints, caches, records, reports) goes through
`replaced_whole`: the content goes to a hidden temporary file beside the target (same filesystem, so the
final rename is atomic), is fsynced, and replaces the target with one ``os.replace``.
"""

from __future__ import annotations

import csv
import numbers
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fruitres.errors import CheckpointError

PARTIAL_SUFFIX = ".partial"  # a file being written; one left behind was cut off by a kill


@contextmanager
def replaced_whole(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `target` at once, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX)
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        with open(partial, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)  # make the rename itself survive a power cut


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
