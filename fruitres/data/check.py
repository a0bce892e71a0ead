"""Report on a Fruits-360-style dataset folder: ``python -m fruitres.data.check <dir> [--json]``.

Counts classes and images per split, opens every image with PIL, lists unreadable, empty and ignored files,
tallies image sizes and modes, measures how many Test images are byte-for-byte copies of Training images
(with ``--near-duplicates``, also how many have a near twin by perceptual hash), and finds what trains but
silently degrades: classes with a single image, identical images under two classes. Exits 1 when the folder
cannot be trained on, 0 otherwise (warnings allowed).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from fruitres.data.folders import (
    DatasetLayoutError,
    is_image_file,
    list_class_names,
    list_training_class_names,
)
from fruitres.data.images import check_pixel_count
from fruitres.data.near_duplicates import DEFAULT_MAX_DISTANCE, difference_hash, near_duplicates
from fruitres.data.splits import SPLIT_NAMES, resolve_split_folders
from fruitres.errors import FixableError

SHOW = 10  # problem files listed by name in the table view (the JSON lists all)


@dataclass(frozen=True)
class ImageInfo:
    """What opening one image file found."""

    sha256: str | None  # None for an empty or unreadable-from-disk file
    size: tuple[int, int] | None
    mode: str | None
    error: str | None  # "empty" for a zero-byte file, else the exception, else None
    dhash: int | None = None  # perceptual hash of a readable image (fruitres/data/near_duplicates.py)


def inspect_image(path: Path) -> ImageInfo:
    """Hash a file's bytes and fully decode it with PIL."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageInfo(None, None, None, f"cannot read: {exc.strerror or exc}")
    if not data:
        return ImageInfo(None, None, None, "empty")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            check_pixel_count(path, image)  # before decoding: a small file can hold gigabytes of pixels
            image.load()
            return ImageInfo(digest, image.size, image.mode, None, difference_hash(image))
    except Exception as exc:  # PIL raises many types for broken files
        return ImageInfo(digest, None, None, f"{type(exc).__name__}: {exc}")


def scan_split(split_dir: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """Image files per class folder of a split, and the files and folders that are ignored."""
    images: dict[str, list[Path]] = {}
    ignored = [p for p in split_dir.iterdir() if not p.is_dir() or p.name.startswith(".")]
    for name in list_class_names(split_dir):
        try:
            entries = sorted((split_dir / name).iterdir())
        except OSError as error:  # no permission, a broken network mount: reported, not a traceback
            raise DatasetLayoutError(
                f"{split_dir / name} cannot be listed ({error.strerror}); make it readable "
                f"(chmod -R u+rX) or delete it"
            ) from None
        images[name] = [p for p in entries if p.is_file() and is_image_file(p)]
        ignored += [p for p in entries if not (p.is_file() and is_image_file(p))]
    return images, sorted(ignored)


def inspect_all(paths: list[Path], workers: int | None = None) -> list[ImageInfo]:
    """inspect_image over many files with a thread pool and a progress bar on an interactive stderr."""
    console = Console(stderr=True)
    columns = (TextColumn("checking images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    results = []
    with (
        Progress(*columns, console=console, disable=not console.is_terminal, transient=True) as bar,
        ThreadPoolExecutor(workers) as pool,
    ):
        task = bar.add_task("check", total=len(paths))
        for info in pool.map(inspect_image, paths):
            results.append(info)
            bar.advance(task)
    return results


def check_dataset(
    root: Path,
    workers: int | None = None,
    near_distance: int | None = None,
    splits: Mapping[str, Any] | None = None,
    image_size: int = 100,
) -> dict[str, Any]:
    """A JSON-serialisable report on `root`; `report["trainable"]` says whether it can be trained on.
    The split folders are found by training's rule (`splits`: data.splits); the test folder, else the
    validation folder, is the held-out one compared with training; `image_size` (data.image_size) sizes
    the image cache. With `near_distance`, also the held-out
    images within that many hash bits of a training image."""
    root = Path(root)
    errors: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {"root": str(root.resolve()), "errors": errors, "warnings": warnings}
    if not root.is_dir():
        errors.append(f"{root} is not a folder")
        return _finish(report)
    try:
        folders = resolve_split_folders(root, splits)
    except FixableError as error:
        errors.append(str(error))
        return _finish(report)
    report["split_folders"] = {split: getattr(folders, split) for split in SPLIT_NAMES}
    folder_names = [name for name in report["split_folders"].values() if name is not None]
    train, test = _split_names(report)

    try:
        scans = {split: scan_split(root / split) for split in folder_names}
        list_training_class_names(root / train)  # training's own rule: two classes or more
    except DatasetLayoutError as error:  # a folder that cannot be listed as classes
        errors.append(str(error))
        return _finish(report)
    paths = [p for split in folder_names for files in scans[split][0].values() for p in files]
    infos = dict(zip(paths, inspect_all(paths, workers), strict=True))
    report["ignored"] = [_rel(p, root) + "/" * p.is_dir() for split in folder_names for p in scans[split][1]]
    report["empty_files"] = [_rel(p, root) for p, i in infos.items() if i.error == "empty"]
    report["unreadable"] = [
        {"path": _rel(p, root), "error": i.error} for p, i in infos.items() if i.error not in (None, "empty")
    ]
    report["splits"] = {split: _split_summary(scans[split][0], infos) for split in folder_names}
    for split in folder_names:
        errors += _class_errors(split, scans[split][0], infos)
    train_names, test_names = (set(scans.get(split, ({}, []))[0]) for split in (train, test))
    report["only_in_training"] = sorted(train_names - test_names)
    report["only_in_test"] = sorted(test_names - train_names)
    formats = Counter((i.size, i.mode) for i in infos.values() if i.error is None)
    report["image_formats"] = [
        {"width": size[0], "height": size[1], "mode": mode, "count": n}
        for (size, mode), n in formats.most_common()
    ]
    report["image_sizes"] = _size_distribution([i.size for i in infos.values() if i.error is None])
    report["cache"] = {"image_size": image_size, "bytes": report["image_sizes"]["images"] * image_size**2 * 3}
    report["overlap"] = _overlap(scans[train][0], scans.get(test, ({}, []))[0], infos, root)
    report["single_image_classes"] = sorted(
        name for name, files in scans[train][0].items() if sum(infos[p].error is None for p in files) == 1
    )
    report["relabelled_copies"] = _relabelled_copies(scans[train][0], infos, root)
    if near_distance is not None:
        hashes = {path: info.dhash for path, info in infos.items()}
        report["near_duplicates"] = near_duplicates(
            scans[train][0],
            scans.get(test, ({}, []))[0],
            hashes,
            near_distance,
            name=lambda path: _rel(path, root),
        )

    if report["only_in_test"]:
        errors.append(f"{test}/ has classes that {train}/ lacks: {', '.join(report['only_in_test'])}")
    if paths and all(i.error for i in infos.values()):
        errors.append(f"none of the {len(paths)} images can be opened")
    warnings += _warnings(report, len(formats))
    return _finish(report)


def _warnings(report: dict[str, Any], n_formats: int) -> list[str]:
    """Problems that still allow training."""
    train, test = _split_names(report)
    warnings = []
    if report["split_folders"]["test"] is None:
        warnings.append(
            "no test folder: train with data.test_fraction=0.1 (a share of training) or test=false"
        )
    warnings += _nested_and_look_alike(report)
    if report["only_in_training"]:
        names = report["only_in_training"]
        warnings.append(f"classes only in {train}/, never tested ({len(names)}): {_some(names)}")
    if report["empty_files"]:
        warnings.append(f"{len(report['empty_files'])} image files are empty (0 bytes); delete them")
    if report["unreadable"]:
        warnings.append(f"{len(report['unreadable'])} image files cannot be decoded; delete or replace them")
    if n_formats > 1:
        warnings.append(f"images come in {n_formats} size/mode combinations; resize and convert to RGB")
    overlap = report["overlap"]
    if overlap["in_training"]:
        warnings.append(
            f"{overlap['in_training']} of {overlap['test_images']} {test} images ({overlap['percent']}%) are "
            f"exact copies of {train} images, so test accuracy is optimistic"
        )
    if report["single_image_classes"]:
        names = report["single_image_classes"]
        warnings.append(
            f"{len(names)} classes have one readable {train} image, so none of it validates: {_some(names)}"
        )
    if report["relabelled_copies"]:
        first = report["relabelled_copies"][0]
        warnings.append(
            f"{len(report['relabelled_copies'])} identical images sit in several {train} classes "
            f"(label noise), e.g. {', '.join(first)}; keep each in its right class only"
        )
    if overlap["cross_class"]:
        warnings.append(f"{overlap['cross_class']} identical images carry different labels in the two splits")
    return warnings


def _nested_and_look_alike(report: dict[str, Any]) -> list[str]:
    """Images in sub-folders of a class folder (training reads only the class folder itself), and class
    names that differ only in their Unicode form (NFC/NFD: they print alike but are two classes)."""
    root = Path(report["root"])
    nested = [
        path
        for ignored in report["ignored"]
        if ignored.endswith("/") and len(Path(ignored).parts) > 2  # <split>/<class>/<sub-folder>/
        for path in sorted((root / ignored).rglob("*"))
        if path.is_file() and is_image_file(path)
    ]
    found = []
    if nested:
        found.append(
            f"{len(nested)} images sit in sub-folders of class folders and are left out of training, e.g. "
            f"{_rel(nested[0], root)}; move them up into their class folder"
        )
    names: dict[str, list[str]] = defaultdict(list)
    for name in {name for split in report["splits"].values() for name in split["per_class"]}:
        names[unicodedata.normalize("NFC", name)].append(name)
    twins = [sorted(group) for group in names.values() if len(group) > 1]
    if twins:
        found.append(
            f"class names that differ only in their Unicode form (NFC/NFD) print alike but are separate "
            f"classes: {' and '.join(ascii(name) for name in twins[0])}; rename them to one form "
            "(convmv -r -f utf8 -t utf8 --nfc --notest <folder>)"
        )
    return found


def _rel(path: Path, root: Path) -> str:
    """`path` relative to the dataset root, with forward slashes."""
    return path.relative_to(root).as_posix()


def _class_errors(split: str, images: dict[str, list[Path]], infos: dict[Path, ImageInfo]) -> list[str]:
    """A split without classes, and classes without (readable) images."""
    errors = [] if images else [f"{split}/ has no class folders"]
    for name, files in images.items():
        if not files:
            errors.append(f"{split}/{name} holds no images; add images or delete the folder")
        elif all(infos[p].error for p in files):
            errors.append(f"{split}/{name} holds no readable images")
    return errors


def _split_summary(images: dict[str, list[Path]], infos: dict[Path, ImageInfo]) -> dict[str, Any]:
    """Class and image counts of one split."""
    return {
        "classes": len(images),
        "images": sum(len(files) for files in images.values()),
        "readable": sum(infos[p].error is None for files in images.values() for p in files),
        "per_class": {name: len(files) for name, files in images.items()},
    }


def _by_hash(
    images: dict[str, list[Path]], infos: dict[Path, ImageInfo]
) -> dict[str, list[tuple[str, Path]]]:
    """(class, path) of the readable-from-disk images, grouped by the sha256 of their bytes."""
    by_hash: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for name, files in images.items():
        for p in files:
            if infos[p].sha256:
                by_hash[infos[p].sha256].append((name, p))
    return by_hash


def _overlap(
    train: dict[str, list[Path]], test: dict[str, list[Path]], infos: dict[Path, ImageInfo], root: Path
) -> dict[str, Any]:
    """Test images whose exact bytes also occur in Training, by sha256."""
    by_hash = _by_hash(train, infos)
    pairs = []
    test_images = 0
    for name, files in test.items():
        for p in files:
            digest = infos[p].sha256
            test_images += digest is not None
            if digest in by_hash:
                same = any(train_name == name for train_name, _ in by_hash[digest])
                copies = [_rel(q, root) for _, q in by_hash[digest]]
                pairs.append({"test": _rel(p, root), "training": copies, "same_class": same})
    return {
        "test_images": test_images,
        "in_training": len(pairs),
        "percent": round(100 * len(pairs) / test_images, 2) if test_images else 0.0,
        "cross_class": sum(not pair["same_class"] for pair in pairs),
        "pairs": pairs,
    }


def _relabelled_copies(
    train: dict[str, list[Path]], infos: dict[Path, ImageInfo], root: Path
) -> list[list[str]]:
    """Groups of byte-identical Training images filed under more than one class."""
    by_hash = _by_hash(train, infos)
    return [
        [_rel(p, root) for _, p in copies] for copies in by_hash.values() if len({n for n, _ in copies}) > 1
    ]


def _size_distribution(sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """Width and height (min, median, max) and aspect ratio (min, max) of the readable images."""
    if not sizes:
        return {"images": 0}
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    ratios = [w / h for w, h in sizes]
    return {
        "images": len(sizes),
        "width": [min(widths), statistics.median(widths), max(widths)],
        "height": [min(heights), statistics.median(heights), max(heights)],
        "aspect_ratio": [round(min(ratios), 3), round(max(ratios), 3)],
        "not_square": sum(w != h for w, h in sizes),
    }


def _sizes_line(report: dict[str, Any]) -> str:
    """The size distribution and the image cache's disk size, in one line."""
    sizes, cache = report["image_sizes"], report["cache"]
    text = f"Image cache at {cache['image_size']} px: {cache['bytes'] / 1e6:,.1f} MB on disk (data.cache_dir)"
    if not sizes["images"]:
        return text
    (w_min, w_mid, w_max), (h_min, h_mid, h_max) = sizes["width"], sizes["height"]
    return (
        f"Widths {w_min}-{w_max} (median {w_mid:g}), heights {h_min}-{h_max} (median {h_mid:g}), aspect "
        f"ratios {sizes['aspect_ratio'][0]}-{sizes['aspect_ratio'][1]}, {sizes['not_square']} not square "
        f"(the shorter side is resized, the longer centre-cropped). {text}"
    )


def _split_names(report: dict[str, Any]) -> tuple[str, str]:
    """The training folder's name and the held-out one's (test, else validation), as the report shows them."""
    folders = report.get("split_folders") or {"train": "train", "val": None, "test": None}
    return folders["train"], folders["test"] or folders["val"] or "test"


def _some(names: list[str], limit: int = 5) -> str:
    """The first few names, and how many more."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _finish(report: dict[str, Any]) -> dict[str, Any]:
    """Set the verdict."""
    report["trainable"] = not report["errors"]
    return report


# ---------------------------------------------------------------------------------------------- display


def render(report: dict[str, Any], console: Console, per_class: bool = False) -> None:
    """Print the report as tables a person can read; folder and file names literally, never as markup."""
    train, test = _split_names(report)
    console.print(Text.assemble(("Dataset check:", "bold"), f" {report['root']}"))
    if "splits" in report:
        _render_counts(report, console, per_class)
        formats = Table("size", "mode", "images", title="Image sizes and modes", title_justify="left")
        for f in report["image_formats"]:
            formats.add_row(f"{f['width']}x{f['height']}", f["mode"], str(f["count"]))
        console.print(formats)
        console.print(_sizes_line(report), markup=False, highlight=False)
        o = report["overlap"]
        console.print(
            f"{test}/{train} exact-duplicate overlap: {o['in_training']} of {o['test_images']} {test} images "
            f"({o['percent']}%) also appear byte-for-byte in {train}/"
        )
        for p in o["pairs"][:SHOW]:
            console.print(f"  {p['test']} = {p['training'][0]}", markup=False, highlight=False)
        if "near_duplicates" in report:
            _render_near_duplicates(report, console)
        _render_files("unreadable", [f"{u['path']} ({u['error']})" for u in report["unreadable"]], console)
        _render_files("empty (0 bytes)", report["empty_files"], console)
        _render_files("ignored (not images)", report["ignored"], console)
    for message in report["errors"]:
        console.print(Text.assemble(("error:", "bold red"), f" {message}"))
    for message in report["warnings"]:
        console.print(Text.assemble(("warning:", "yellow"), f" {message}"))
    verdict = "[bold green]trainable[/]" if report["trainable"] else "[bold red]NOT trainable[/]"
    console.print(f"Verdict: {verdict}")


def _render_counts(report: dict[str, Any], console: Console, per_class: bool) -> None:
    """Split summary table and, optionally, images per class."""
    train, test = _split_names(report)
    table = Table("split", "classes", "images", "readable", "per class (min / median / max)", title="Splits")
    table.title_justify = "left"
    for split, s in report["splits"].items():
        counts = list(s["per_class"].values()) or [0]
        spread = f"{min(counts)} / {statistics.median(counts):g} / {max(counts)}"
        table.add_row(split, str(s["classes"]), str(s["images"]), str(s["readable"]), spread)
    console.print(table)
    if per_class:
        folder_names = list(report["splits"])
        classes = Table("class", *folder_names, title="Images per class", title_justify="left")
        names = sorted({name for s in report["splits"].values() for name in s["per_class"]})
        for name in names:
            classes.add_row(
                Text(name),
                *(str(report["splits"][split]["per_class"].get(name, "-")) for split in folder_names),
            )
        console.print(classes)
    for key, label in (
        ("only_in_training", f"only in {train}/"),
        ("only_in_test", f"only in {test}/"),
    ):
        if report[key]:
            console.print(f"Classes {label}: {', '.join(report[key])}", markup=False, highlight=False)


def _render_near_duplicates(report: dict[str, Any], console: Console) -> None:
    train, test = _split_names(report)
    near = report["near_duplicates"]
    spread = ", ".join(f"{count} at {bits}" for bits, count in near["by_distance"].items())
    console.print(
        f"{test}/{train} near duplicates: {near['with_near_twin']} of {near['test_images']} {test} images "
        f"({near['percent']}%) have a {train}/ image of their class within {near['max_distance']} of 64 "
        f"perceptual-hash bits ({spread})",
        highlight=False,
    )
    for p in near["pairs"][:SHOW]:
        console.print(
            f"  {p['test']} ~ {p['training']} ({p['distance']} bits)", markup=False, highlight=False
        )


def _render_files(label: str, items: list[str], console: Console) -> None:
    """A short list of problem files."""
    if not items:
        return
    console.print(f"{len(items)} {label}:")
    for item in items[:SHOW]:
        console.print(f"  {item}", markup=False, highlight=False)
    if len(items) > SHOW:
        console.print(f"  ... and {len(items) - SHOW} more (see --json)")


def main(argv: list[str] | None = None) -> int:
    """Check a dataset folder; exit 0 when it can be trained on, 1 when it cannot."""
    parser = argparse.ArgumentParser(
        prog="python -m fruitres.data.check", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "root", type=Path, help="folder holding the split folders (docs/data.md#folder-layouts)"
    )
    for split in SPLIT_NAMES:
        parser.add_argument(f"--{split}", metavar="FOLDER", help=f"the {split} folder (data.splits.{split})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--per-class", action="store_true", help="also list the image count of every class")
    parser.add_argument("--workers", type=int, default=None, help="threads opening images")
    parser.add_argument(
        "--image-size", type=int, default=100, help="data.image_size: sizes the image cache (default 100)"
    )
    parser.add_argument(
        "--near-duplicates",
        type=int,
        nargs="?",
        const=DEFAULT_MAX_DISTANCE,
        metavar="BITS",
        help="count Test images with a Training image of their class within BITS of 64 perceptual-hash "
        f"bits (default {DEFAULT_MAX_DISTANCE})",
    )
    args = parser.parse_args(argv)
    splits = {split: getattr(args, split) for split in SPLIT_NAMES}
    report = check_dataset(args.root, args.workers, args.near_duplicates, splits, args.image_size)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report, Console(soft_wrap=True), args.per_class)
    return 0 if report["trainable"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
