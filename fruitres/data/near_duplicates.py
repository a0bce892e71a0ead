"""Near-duplicate frames between Training/ and Test/, by a perceptual (difference) hash.

Fruits-360 photographs each fruit turning in front of a camera: one video per fruit, its frames split
between Training/ and Test/. A Test image whose hash lies within a few bits of a Training image of the same
class is a near twin, and accuracy on such images says little about new fruits. `python -m fruitres.data.check
<dir> --near-duplicates` reports how many Test images have one; `test/acc_novel` is the test accuracy on
the Test images without one (callbacks/novel_accuracy.py). Hashes are cached per file (`hashes_of`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fruitres.files import write_text_whole

HASH_ROWS = 8  # a 64-bit hash: 8 rows of 8 left/right brightness comparisons
DEFAULT_MAX_DISTANCE = 4  # bits of 64 that may differ between near twins
HASH_CACHE = "perceptual_hashes.json"  # in the image cache's folder: {file: [size, mtime_ns, hash]}


def difference_hash(image: Image.Image) -> int:
    """64 bits: is each pixel of a 9x8 grey thumbnail brighter than its right neighbour (dHash)."""
    thumbnail = image.convert("L").resize((HASH_ROWS + 1, HASH_ROWS), Image.Resampling.LANCZOS)
    pixels = np.asarray(thumbnail, dtype=np.int16)
    bits = (pixels[:, :-1] > pixels[:, 1:]).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def nearest(queries: Sequence[int], candidates: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the smallest Hamming distance to a candidate hash and that candidate's index."""
    if not len(queries) or not len(candidates):
        return np.full(len(queries), 65), np.full(len(queries), -1)
    left = np.asarray(queries, dtype=np.uint64)[:, None]
    right = np.asarray(candidates, dtype=np.uint64)[None, :]
    differing = np.unpackbits((left ^ right)[..., None].view(np.uint8), axis=-1).sum(axis=-1)
    return differing.min(axis=1), differing.argmin(axis=1)


def near_duplicates(
    train: Mapping[str, Sequence[Path]],
    test: Mapping[str, Sequence[Path]],
    hash_of: Mapping[Path, int | None],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    name: Callable[[Path], str] = str,
) -> dict[str, Any]:
    """Test images with a Training image of the same class within `max_distance` bits, and the spread."""
    pairs, hashed, histogram = [], 0, Counter()
    for class_name, files in test.items():
        queries = [p for p in files if hash_of.get(p) is not None]
        candidates = [p for p in train.get(class_name, ()) if hash_of.get(p) is not None]
        hashed += len(queries)
        distances, indices = nearest([hash_of[p] for p in queries], [hash_of[p] for p in candidates])
        for path, distance, index in zip(queries, distances.tolist(), indices.tolist(), strict=True):
            if distance <= max_distance:
                histogram[distance] += 1
                pairs.append({"test": name(path), "training": name(candidates[index]), "distance": distance})
    return {
        "max_distance": max_distance,
        "test_images": hashed,
        "with_near_twin": len(pairs),
        "percent": round(100 * len(pairs) / hashed, 2) if hashed else 0.0,
        "by_distance": {str(d): histogram[d] for d in range(max_distance + 1)},
        "pairs": pairs,
    }


def _hash_file(path: Path) -> int | None:
    """The file's dHash; None for a file that does not decode (data.check names those)."""
    try:
        with Image.open(path) as image:
            return difference_hash(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def hashes_of(paths: Sequence[Path], cache_dir: Path | None = None) -> dict[Path, int | None]:
    """Each file's dHash, reusing those `cache_dir` holds for files of unchanged size and time."""
    cache_file = Path(cache_dir).expanduser() / HASH_CACHE if cache_dir is not None else None
    cached = _read_hash_cache(cache_file)
    hashes, missing = {}, []
    for path in paths:
        stat = path.stat()
        entry = cached.get(str(path))
        if entry is not None and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
            hashes[path] = entry[2]
        else:
            missing.append(path)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # decoding releases the GIL
        hashes.update(zip(missing, pool.map(_hash_file, missing), strict=True))
    if cache_file is not None and missing:
        for path in missing:
            stat = path.stat()
            cached[str(path)] = [stat.st_size, stat.st_mtime_ns, hashes[path]]
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_whole(cache_file, json.dumps(cached))
    return hashes


def _read_hash_cache(cache_file: Path | None) -> dict[str, list]:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        return json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache is rebuilt


def has_near_twin(
    test: Sequence[tuple[Path, str]],
    train: Mapping[str, Sequence[Path]],
    hash_of: Mapping[Path, int | None],
    max_distance: int = DEFAULT_MAX_DISTANCE,
) -> np.ndarray:
    """For each (Test image, class), whether a Training image of its class lies within `max_distance`
    bits: the rule of `near_duplicates`. An image that does not hash counts as having a twin (not novel)."""
    twin = np.ones(len(test), dtype=bool)
    by_class: dict[str, list[int]] = {}
    for index, (path, class_name) in enumerate(test):
        if hash_of.get(path) is not None:
            by_class.setdefault(class_name, []).append(index)
    for class_name, indices in by_class.items():
        candidates = [hash_of[p] for p in train.get(class_name, ()) if hash_of.get(p) is not None]
        distances, _ = nearest([hash_of[test[i][0]] for i in indices], candidates)
        twin[indices] = distances <= max_distance
    return twin
