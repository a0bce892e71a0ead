"""Download and unpack a Fruits-360 release: ``python -m fruitres.data.download [--release ...]``.

Streams the GitHub archive of the release's repository (``--release 100x100``, the default:
https://github.com/fruits-360/fruits-360-100x100; ``--release original-size``:
https://github.com/fruits-360/fruits-360-original-size) to ``<dest>/<name>.part`` (resuming a partial file
with an HTTP Range request), checks its size and sha256, extracts it while refusing unsafe members, finds
the folder holding the split folders (``Training/ [Validation/] Test/``), prints which folder feeds each
split and the Hydra override that points training at it.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlparse

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from fruitres.data.folders import DatasetLayoutError
from fruitres.data.splits import find_dataset_root, resolve_split_folders

GITHUB = "https://github.com"
# The repositories the Fruits-360 authors publish, by release: 100x100 has Training/ Test/ of 100x100
# images; original-size has Training/ Validation/ Test/ of images of varying sizes, larger than 100x100.
RELEASES = {
    "100x100": "fruits-360/fruits-360-100x100",
    "original-size": "fruits-360/fruits-360-original-size",
}
DEFAULT_RELEASE = "100x100"
REPO = RELEASES[DEFAULT_RELEASE]
DEFAULT_VERSION = "main"
# GitHub serves both branches and tags at archive/<ref>.zip (redirecting to codeload.github.com).
URL_TEMPLATE = "https://github.com/" + REPO + "/archive/{version}.zip"
# sha256 of archives whose bytes never change (tags), keyed by version. Deliberately empty for branches
# such as `main`: GitHub regenerates a branch archive whenever the branch moves, so no hash is stable.
KNOWN_SHA256: dict[str, str] = {}
CHUNK = 1 << 20


class DownloadError(Exception):
    """A failure the user can act on; its message is one sentence."""


def release_url(release: str, version: str) -> str:
    """The GitHub archive URL of `release` at branch or tag `version`."""
    return f"{GITHUB}/{RELEASES[release]}/archive/{version}.zip"


def archive_name(url: str, version: str, release: str = DEFAULT_RELEASE) -> str:
    """File name of the downloaded archive: the URL's last path component, or one made from the release
    and version when `url` is the release's own."""
    if url == release_url(release, version):
        return f"{PurePosixPath(RELEASES[release]).name}-{_safe_name(version)}.zip"
    return _safe_name(PurePosixPath(urlparse(url).path).name) or "fruits-360-archive"


def _safe_name(text: str) -> str:
    """`text` reduced to a plain, visible file name (possibly empty)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".")


# ---------------------------------------------------------------------------------------------- download


def fetch(url: str, target: Path, expected_sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download `url` to `target` via `target.part`, resuming a partial file; verify size and hash."""
    part = target.with_name(target.name + ".part")
    expected_size = _stream(url, part, timeout)
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(
            f"download of {url} stopped at {size} of {expected_size} bytes; "
            "run the same command again to resume"
        )
    verify_sha256(part, expected_sha256)
    part.replace(target)
    return target


def verify_sha256(path: Path, expected: str | None) -> None:
    """Delete `path` and raise DownloadError if its sha256 is not `expected` (no check when None)."""
    if not expected:
        return
    actual = sha256_of(path)
    if actual != expected.strip().lower():
        path.unlink()
        raise DownloadError(
            f"sha256 mismatch: expected {expected.strip().lower()}, got {actual}; the file was deleted"
        )


def _stream(url: str, part: Path, timeout: float) -> int | None:
    """Append or write the response body to `part`; return the expected full size when the server says."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "fruitres-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            if _range_total(exc.headers.get("Content-Range")) == offset:
                return offset  # the partial file is already complete
            part.unlink()
            return _stream(url, part, timeout)
        hint = "; check --version or --url" if exc.code == 404 else ""
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}{hint}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url} ({exc.reason}); check the network connection") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot reach {url} ({exc or type(exc).__name__})") from None
    with response:
        resumed = response.status == 206 and _range_start(response.headers.get("Content-Range")) == offset
        if response.status == 206 and not resumed:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url} answered with a range that was not asked for; run the command again")
        length = response.headers.get("Content-Length")
        total = int(length) + (offset if resumed else 0) if length and length.isdigit() else None
        with part.open("ab" if resumed else "wb") as out, _progress(total) as advance:
            advance(offset if resumed else 0)
            for chunk in _chunks(response, url):
                out.write(chunk)
                advance(len(chunk))
    return total


def _chunks(response: http.client.HTTPResponse, url: str) -> Iterator[bytes]:
    """The response body in chunks; a dropped or stalled connection becomes a DownloadError."""
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"download of {url} was interrupted ({exc or type(exc).__name__}); "
                "run the same command again to resume"
            ) from None
        if not chunk:
            return
        yield chunk


def _range_start(content_range: str | None) -> int | None:
    """First byte of a `Content-Range: bytes a-b/n` header."""
    match = re.match(r"bytes (\d+)-\d+/", content_range or "")
    return int(match.group(1)) if match else None


def _range_total(content_range: str | None) -> int | None:
    """Full size from a `Content-Range: bytes */n` header."""
    match = re.match(r"bytes [^/]*/(\d+)", content_range or "")
    return int(match.group(1)) if match else None


@contextmanager
def _progress(total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr, silent when stderr is not a terminal; yields `advance(n_bytes)`."""
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=True) as bar:
        task = bar.add_task("download", total=total)
        yield lambda n: bar.advance(task, n)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------- extraction


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the destination or is not a plain file or folder."""


class BadArchiveError(DownloadError):
    """The archive is not a readable zip or tar file."""


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a zip or tar(.gz) archive into `dest` after checking every member; refuse unsafe ones."""
    dest = dest.resolve()
    try:
        _extract(archive, dest)
    except (zipfile.BadZipFile, tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error) as exc:
        raise BadArchiveError(f"{archive.name} is not a readable zip or tar archive ({exc})") from None
    except tarfile.TarError as exc:  # the "data" filter refused a member the checks above let through
        raise UnsafeArchiveError(f"refusing the archive: {exc}") from None


def _extract(archive: Path, dest: Path) -> None:
    """Check every member of a zip or tar archive, then extract them all."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                link = zf.read(info).decode("utf-8", "replace") if stat.S_ISLNK(mode) else None
                special = stat.S_IFMT(mode) in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
                check_member(info.filename, dest, special=special, symlink=link)
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for m in members:
                symlink = m.linkname if m.issym() else None
                hardlink = m.linkname if m.islnk() else None
                check_member(m.name, dest, special=m.isdev(), symlink=symlink, hardlink=hardlink)
            # Python >= 3.11.4: the "data" filter is a second guard, and it also resolves symlink chains
            # through links already extracted, which the lexical check above cannot see.
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover
                tf.extractall(dest, members=members)
    else:
        raise BadArchiveError(f"{archive.name} is neither a zip nor a tar archive")


def check_member(
    name: str, dest: Path, *, special: bool = False, symlink: str | None = None, hardlink: str | None = None
) -> None:
    """Raise UnsafeArchiveError if `name` is absolute, has `..`, is a device or links outside `dest`."""

    def refuse(why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"refusing the archive: member {name!r} {why}")

    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        raise refuse("has an absolute path")
    if ".." in re.split(r"[/\\]", name):
        raise refuse("has a '..' component")
    if special:
        raise refuse("is a device or special file")
    if not _inside(dest / name, dest):
        raise refuse("would be written outside the destination")
    if symlink is not None and (os.path.isabs(symlink) or not _inside(dest / name / ".." / symlink, dest)):
        raise refuse(f"is a symlink pointing outside the destination ({symlink})")
    if hardlink is not None and (os.path.isabs(hardlink) or not _inside(dest / hardlink, dest)):
        raise refuse(f"is a hard link pointing outside the destination ({hardlink})")


def _inside(path: Path, dest: Path) -> bool:
    """Whether `path`, normalised lexically, is `dest` or below it."""
    normal = Path(os.path.normpath(path))
    return normal == dest or dest in normal.parents


def extract_to(archive: Path, dest: Path) -> None:
    """Extract into a hidden staging folder inside `dest`, then move its top-level entries into `dest`."""
    staging = dest / f".{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        extract_archive(archive, staging)
        for entry in sorted(staging.iterdir()):
            target = dest / entry.name
            if target.exists():
                raise DownloadError(f"{target} already exists; remove it or choose another --dest")
            entry.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- the CLI


def prepare(
    dest: Path,
    version: str = DEFAULT_VERSION,
    url: str | None = None,
    sha256: str | None = None,
    keep_archive: bool = False,
    timeout: float = 60.0,
    release: str = DEFAULT_RELEASE,
) -> Path:
    """Make sure `dest` holds an extracted Fruits-360 tree and return the folder with the split folders."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        root = find_dataset_root(dest)
    except DatasetLayoutError:
        pass
    else:
        print(f"{dest} already holds the dataset at {root}; nothing to download (delete it to redo).")
        return root
    url = url or release_url(release, version)
    archive = dest / archive_name(url, version, release)
    expected = sha256 or KNOWN_SHA256.get(version)
    if archive.exists():
        verify_sha256(archive, expected)
    else:
        print(f"Downloading {url} to {archive}")
        fetch(url, archive, expected, timeout)
    print(f"Extracting {archive}")
    try:
        extract_to(archive, dest)
    except (UnsafeArchiveError, BadArchiveError) as exc:
        archive.unlink()
        raise DownloadError(f"{exc}; nothing was extracted and {archive} was deleted") from None
    root = find_dataset_root(dest)
    if not keep_archive:
        archive.unlink()
    return root


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m fruitres.data.download", description="Download and unpack a Fruits-360 release."
    )
    parser.add_argument(
        "--release",
        choices=list(RELEASES),
        default=DEFAULT_RELEASE,
        help="which Fruits-360 release: "
        + ", ".join(f"{r} (github.com/{RELEASES[r]})" for r in RELEASES)
        + " (%(default)s)",
    )
    parser.add_argument(
        "--version", default=DEFAULT_VERSION, help="branch or tag of its repository (%(default)s)"
    )
    parser.add_argument("--dest", type=Path, default=Path("data"), help="folder to put it in (%(default)s)")
    parser.add_argument("--url", help="download this archive (zip or tar.gz) instead of the GitHub one")
    parser.add_argument("--sha256", help="expected sha256 of the archive")
    parser.add_argument("--keep-archive", action="store_true", help="keep the archive after extracting it")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout, seconds (%(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the download; print the `data.data_dir=` override, or one error line on stderr."""
    args = parse_args(argv)
    try:
        root = prepare(
            args.dest, args.version, args.url, args.sha256, args.keep_archive, args.timeout, args.release
        )
        folders = resolve_split_folders(root, None)
    except (DownloadError, DatasetLayoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            print(f"error: disk full under {args.dest}; free space or choose another --dest", file=sys.stderr)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(
        f"Fruits-360 is ready in {root} (split folders: {folders.describe()}). Train on it with the override:"
    )
    print(f"data.data_dir={root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
