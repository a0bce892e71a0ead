"""Checkpoint files that are either complete or absent: atomic writes, and a clear error for a cut-off file.

Lightning's own save goes through an fsspec transaction whose temporary file lives in the system temp
folder: when that is another filesystem (a local /tmp, runs on network storage) the final move is a copy,
and a kill during it leaves a truncated ``last.ckpt``; nothing is fsynced either. Here the temporary file
sits beside the target, is fsynced, and replaces the target with one ``os.replace``.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

PARTIAL_SUFFIX = ".partial"  # a checkpoint being written; one left behind was cut off by a kill


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or is not a checkpoint; the message names the file and the way out."""


def check_checkpoint_file(path: Path) -> None:
    """Raise CorruptCheckpointError unless `path` is a whole torch zip archive (reads only its directory)."""
    try:
        with zipfile.ZipFile(path) as archive:
            complete = any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        reason = "it is empty" if path.is_file() and path.stat().st_size == 0 else str(error)
        raise CorruptCheckpointError(_corrupt_message(path, reason)) from None
    if not complete:
        raise CorruptCheckpointError(_corrupt_message(path, "it holds no torch.save data"))


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, then os.replace: all or nothing."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):  # object stores: fsspec's transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=PARTIAL_SUFFIX)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        _fsync_folder(target.parent)  # make the rename itself survive a power cut

    def load_checkpoint(self, path: _PATH, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Load as Lightning does, but a cut-off file raises CorruptCheckpointError naming it."""
        if isinstance(get_filesystem(path), LocalFileSystem) and Path(path).is_file():
            check_checkpoint_file(Path(path))
        return super().load_checkpoint(path, *args, **kwargs)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync on Windows
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
