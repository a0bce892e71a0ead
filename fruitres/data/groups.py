"""Frames of one video as one group: a validation split that keeps near twins on one side.

Fruits-360's Training/ holds consecutive frames of one fruit turning; a validation split drawn by image puts
frames beside their neighbours, so validation accuracy says little about new fruits (`data.val_split=
by_group`). Two images of a class within the near-twin distance of `near_duplicates` are linked, and links
chain (union-find): a fruit's frames form one group however far its first and last frames drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fruitres.data.near_duplicates import DEFAULT_MAX_DISTANCE, hashes_of
from fruitres.errors import ConfigError

VAL_SPLITS = ("by_image", "by_group")


def _find(parent: np.ndarray, node: int) -> int:
    while parent[node] != node:
        parent[node] = parent[parent[node]]  # path halving
        node = parent[node]
    return node


def near_twin_groups(
    hashes: Sequence[int | None], labels: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE
) -> np.ndarray:
    """A group id per image: images of a class whose hashes chain within `max_distance` bits share one.

    An image without a hash is a group of its own. Ids are the smallest index in the group.
    """
    count = len(hashes)
    parent = np.arange(count)
    for label in np.unique(labels):
        members = [i for i in np.flatnonzero(labels == label) if hashes[i] is not None]
        if len(members) < 2:
            continue
        for left, right in _close_pairs(
            np.asarray([hashes[i] for i in members], dtype=np.uint64), max_distance
        ):
            root_left, root_right = _find(parent, members[left]), _find(parent, members[right])
            parent[max(root_left, root_right)] = min(root_left, root_right)
    return np.asarray([_find(parent, node) for node in range(count)])


def _close_pairs(values: np.ndarray, max_distance: int, block: int = 256) -> list[tuple[int, int]]:
    """Index pairs (i < j) of hashes within `max_distance` bits, a block of rows at a time (memory)."""
    pairs = []
    for start in range(0, len(values), block):
        rows = values[start : start + block, None] ^ values[None, :]
        differing = np.unpackbits(rows[..., None].view(np.uint8), axis=-1).sum(axis=-1)
        for left, right in np.argwhere(differing <= max_distance).tolist():
            if start + left < right:
                pairs.append((start + left, right))
    return pairs


def stratified_group_split(
    labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int | tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): whole groups of each class, in a seeded order, into validation while they fit
    in `val_fraction` of the class (else its smallest group); a class of one group stays in training."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        names, sizes = np.unique(groups[members], return_counts=True)
        order = rng.permutation(len(names))
        target = round(len(members) * val_fraction) if val_fraction > 0 else 0
        chosen, taken = [], 0
        for index in order:
            if taken + sizes[index] <= target:
                chosen.append(names[index])
                taken += sizes[index]
        if not chosen and target > 0:
            chosen = [names[order[np.argmin(sizes[order])]]]  # every group is larger than the share
        if len(chosen) == len(names):
            chosen = chosen[:-1]  # at least one group to train on
        in_val = np.isin(groups[members], chosen)
        val.append(members[in_val])
        train.append(members[~in_val])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def check_val_split(val_split: str) -> str:
    """`data.val_split`, checked."""
    if val_split not in VAL_SPLITS:
        raise ConfigError(f"data.val_split={val_split} is not one of {', '.join(VAL_SPLITS)}; e.g. by_group")
    return val_split


def split_by_group(
    paths: Sequence[Path],
    labels: np.ndarray,
    val_fraction: float,
    seed: int | tuple[int, ...],
    cache_dir: str | Path | None = None,
    max_distance: int = DEFAULT_MAX_DISTANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) of `paths`: whole groups of near-twin frames, about `val_fraction` of each
    class held out (the hashes cached beside the image cache)."""
    hashes = hashes_of(paths, cache_dir)
    groups = near_twin_groups([hashes[path] for path in paths], labels, max_distance)
    return stratified_group_split(labels, groups, val_fraction, seed)
