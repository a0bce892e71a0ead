"""A decoded-image cache: every image of a split decoded once into a uint8 memory-mapped array.

Warm epochs then read pixels straight from the page cache instead of decoding JPEGs, and every
DataLoader worker shares the same pages instead of holding its own copy.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from fruitres.data.images import decode_image
from fruitres.errors import FixableError
from fruitres.files import PARTIAL_SUFFIX, remove_dead_partials, replaced_whole, write_text_whole

log = logging.getLogger(__name__)

CACHE_FORMAT = 3  # 2: one decoding rule (no reduced-scale JPEG decoding), 16-bit scaled; 3: centre crop
CACHE_PREFIX = "images-"


def cache_key(paths: Sequence[Path], image_size: int, interpolation: str) -> str:
    """Changes whenever a file is added, removed, renamed, resized or rewritten, or the size or the
    resizing filter changes."""
    digest = hashlib.sha256(f"v{CACHE_FORMAT}:{image_size}:{interpolation}".encode())
    for path in paths:
        stat = path.stat()
        digest.update(b"\0" + os.fsencode(path) + f"\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def cache_key_of(array_path: Path) -> str:
    """The key of an image cache file (its name is images-<key>.npy): the fingerprint of its split."""
    return Path(array_path).stem.removeprefix(CACHE_PREFIX)


def _decode_or_none(path: Path, image_size: int, interpolation: str) -> np.ndarray | None:
    try:
        return decode_image(path, image_size, interpolation)
    except Exception:  # any unreadable file: PIL raises many types (OSError, SyntaxError, ValueError...)
        return None


def build_image_cache(
    paths: Sequence[Path], image_size: int, cache_dir: Path, interpolation: str = "bilinear"
) -> tuple[Path, list[int]]:
    """Return the cache file for `paths` (built if missing) and the indices of the unreadable files.

    Images of another size are resized with the `interpolation` filter. Rows of unreadable files are
    left black; callers decide whether to skip them or stop.
    """
    key = cache_key(paths, image_size, interpolation)
    array_path = cache_dir / f"{CACHE_PREFIX}{key}.npy"
    meta_path = array_path.with_suffix(".json")
    if array_path.exists() and meta_path.exists():
        return array_path, json.loads(meta_path.read_text())["unreadable"]

    prepare_cache_dir(cache_dir)
    shape = (len(paths), image_size, image_size, 3)
    unreadable: list[int] = []
    check_room(cache_dir, int(np.prod(shape)))  # before the file exists: a huge sparse file can fail oddly
    with replaced_whole(array_path) as partial:  # a killed build never leaves a complete-looking cache
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        reserve_space(partial, array.offset + array.nbytes, cache_dir)
        log.info("Decoding %d images into the image cache %s", len(paths), array_path)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            sizes, filters = [image_size] * len(paths), [interpolation] * len(paths)
            decoded = pool.map(_decode_or_none, paths, sizes, filters, chunksize=64)
            for index, pixels in enumerate(decoded):
                if pixels is None:
                    unreadable.append(index)
                else:
                    array[index] = pixels
        array.flush()
        del array
    meta = {
        "count": len(paths),
        "image_size": image_size,
        "interpolation": interpolation,
        "unreadable": unreadable,
    }
    write_text_whole(meta_path, json.dumps(meta))
    return array_path, unreadable


def prepare_cache_dir(cache_dir: Path) -> None:
    """Make data.cache_dir, and clear the partial caches of builds that died (a kill, a power cut)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a regular file in the way, a read-only disk, no permission
        raise FixableError(
            f"data.cache_dir={cache_dir} cannot be made a folder ({error.strerror}: {error.filename}); "
            "point data.cache_dir at a writable folder"
        ) from None
    remove_dead_partials(cache_dir, f".{CACHE_PREFIX}*{PARTIAL_SUFFIX}")


def check_room(cache_dir: Path, size: int) -> None:
    """Refuse, in one line, a cache of `size` bytes that the disk under `cache_dir` cannot hold."""
    free = shutil.disk_usage(cache_dir).free
    if free < size:
        raise _no_room(cache_dir, size, free)


def reserve_space(partial: Path, size: int, cache_dir: Path) -> None:
    """Give the memory-mapped cache its disk blocks before writing: a sparse file on a full disk kills the
    process with SIGBUS at the first page that cannot be backed, with no message."""
    check_room(cache_dir, size)
    with open(partial, "rb+") as file:
        try:
            os.posix_fallocate(file.fileno(), 0, size)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):  # another writer took the room meanwhile
                raise _no_room(cache_dir, size, shutil.disk_usage(cache_dir).free) from None
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # unsupported there: free was checked
                raise


def _no_room(cache_dir: Path, size: int, free: int) -> FixableError:
    return FixableError(
        f"data.cache_dir={cache_dir} has no room for the image cache: it needs {size:,} bytes and the disk "
        f"has {free:,} bytes free; free space there or point data.cache_dir at a disk with room"
    )


Batch = tuple[torch.Tensor, ...]


def collate_batch(batch: Batch | list) -> Batch | list:
    """Keep the batches that `__getitems__` already stacked; collate lists of samples as PyTorch does."""
    return batch if isinstance(batch, tuple) else default_collate(batch)


class CachedImages(Dataset):
    """(uint8 CHW image, label) pairs read from a memory-mapped image cache.

    The array is opened lazily in each process, so pickling the dataset into DataLoader workers
    sends a path, not the pixels. A DataLoader with `collate_fn=collate_batch` reads each batch with
    one indexing of the array (`__getitems__`): the uint8 images arrive as one channels-last tensor,
    with no per-image Python work and no copy by the collate function.
    """

    def __init__(self, array_path: Path, rows: Sequence[int], labels: Sequence[int]) -> None:
        self.array_path = array_path
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def array(self) -> np.ndarray:
        """The (count, size, size, 3) uint8 cache, memory-mapped once per process."""
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(np.array(self.array()[self.rows[index]]))  # a writable copy
        return pixels.permute(2, 0, 1), self.labels[index]

    def __getitems__(self, indices: list[int]) -> Batch:
        """A whole batch: (uint8 images of shape (batch, 3, size, size) in channels-last memory, labels)."""
        pixels = torch.from_numpy(self.array()[self.rows[indices]])  # fancy indexing copies: writable
        return pixels.permute(0, 3, 1, 2), self.labels[indices]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}
