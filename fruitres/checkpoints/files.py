"""Checkpoint files: their names in a run directory, writes that are all or nothing, and a clear error for a
file that is cut off or not a checkpoint.

Lightning's own save goes through an fsspec transaction whose temporary file lives in the system temp
folder: when that is another filesystem (a local /tmp, runs on network storage) the final move is a copy,
and a kill during it leaves a truncated ``last.ckpt``; nothing is fsynced either. Here the temporary file
sits beside the target, is fsynced, and replaces the target with one ``os.replace``; a full or read-only
disk stops the run with one line naming the folder (`fruitres.files.WriteError`), the earlier file kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fruitres.files import check_checkpoint_file, replaced_whole

# Names written by the checkpoint callbacks of conf/callbacks/default.yaml, under a run directory.
CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"  # the end of the last finished epoch
INTERRUPTED = "interrupted.ckpt"  # written on Ctrl-C / SIGTERM
RESUMABLE = (LAST, INTERRUPTED)


def newest_checkpoint(folders: Iterable[Path], names: Iterable[str] | None = None) -> Path | None:
    """The most recently written checkpoint in `folders` (any *.ckpt, or only `names`); None if none."""
    wanted = set(names) if names is not None else None
    files = [
        path
        for folder in folders
        for path in Path(folder).glob("*.ckpt")
        if path.is_file() and (wanted is None or path.name in wanted)
    ]
    return max(files, key=lambda path: path.stat().st_mtime, default=None)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, then os.replace: all or nothing."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):  # object stores: fsspec's transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with replaced_whole(Path(path)) as partial, open(partial, "wb") as file:
            torch.save(checkpoint, file)  # via a Python file: a full disk raises OSError with its errno

    def load_checkpoint(self, path: _PATH, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Load as Lightning does, but a cut-off file raises CheckpointError naming it."""
        if isinstance(get_filesystem(path), LocalFileSystem) and Path(path).is_file():
            check_checkpoint_file(Path(path))
        return super().load_checkpoint(path, *args, **kwargs)
