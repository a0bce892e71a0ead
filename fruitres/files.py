"""Files written whole or not at all: a reader, or a run killed half-way, never sees half a file.

Every file fruitres writes for later use (checkpoints, caches, records, reports) goes through
`replaced_whole`: the content goes to a hidden temporary file beside the target (same filesystem, so the
final rename is atomic), is fsynced, and replaces the target with one ``os.replace``.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def write_csv_whole(target: Path, rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """A CSV file with a header of `fields` and one line per row (missing keys left empty)."""
    with replaced_whole(target) as partial, open(partial, "w", newline="", **ENCODING) as file:
        writer = csv.DictWriter(file, fieldnames=list(fields), restval="")
        writer.writeheader()
        writer.writerows(rows)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync on Windows
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
