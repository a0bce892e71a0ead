"""fruitres.data.download against a real HTTP server on 127.0.0.1 serving tiny generated archives."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from fruitres.data import download
from fruitres.data.download import find_dataset_root, main
from fruitres.data.folders import DatasetLayoutError

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("Apple Red Delicious", "Banana")
TOP = "fruits-360-100x100-main"


# ------------------------------------------------------------------------------------------------ helpers


def make_tree(
    root: Path,
    per_class: int = 2,
    splits: tuple[str, ...] = ("Training", "Test"),
    sizes: tuple[tuple[int, int], ...] = ((8, 8),),
) -> Path:
    """A tiny Fruits-360 tree: `splits` with a few JPEGs per class, their sizes cycling through `sizes`."""
    for s, split in enumerate(splits):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                colour = (40 * c + 10 * i, 100 + 50 * s, 30 * i)
                size = sizes[i % len(sizes)]
                Image.new("RGB", size, colour).save(folder / f"{i}_100.jpg", quality=90)
    (root / "LICENSE").write_text("MIT\n")
    return root


def zip_bytes(tree: Path, prefix: str = TOP) -> bytes:
    """A zip of every file under `tree`, stored below `prefix/` like a GitHub branch archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                zf.write(path, f"{prefix}/{path.relative_to(tree).as_posix()}")
    return buffer.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The source tree the served archives are made of."""
    return make_tree(tmp_path / "source")


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """Where the downloader puts things."""
    return tmp_path / "dest"


@dataclass
class Served:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_after: int | None = None  # send only this many body bytes on the next request, then hang up
    honour_range: bool = True
    url: str = ""


def make_handler(served: Served) -> type[BaseHTTPRequestHandler]:
    """A GET handler with `Range: bytes=N-` support (HTTP/1.0: the connection closes after each reply)."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 10

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            served.requests.append((self.path, range_header))
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "") if served.honour_range else None
            start = int(match.group(1)) if match else 0
            if start >= len(body) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if match else 200)
            if match:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            data = body[start:]
            if served.cut_after is not None:
                data, served.cut_after = data[: served.cut_after], None
            self.wfile.write(data)

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) in a daemon thread."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(served))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def run_main(served: Served, dest: Path, *extra: str, path: str = "/main.zip") -> int:
    """Call download.main against the test server with a short timeout."""
    return main(["--url", served.url + path, "--dest", str(dest), "--timeout", "5", *extra])


def files_under(folder: Path) -> list[str]:
    """Relative paths of every file and link below `folder`."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


# -------------------------------------------------------------------------------------------------- tests


def test_download_extracts_and_prints_override(server: Served, tree: Path, dest: Path, capsys) -> None:
    server.files["/main.zip"] = zip_bytes(tree)
    assert run_main(server, dest) == 0
    root = (dest / TOP).resolve()
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"data.data_dir={root}"
    for path in tree.rglob("*.jpg"):
        assert (root / path.relative_to(tree)).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [TOP]  # no archive, .part or staging folder left

    requests = len(server.requests)
    assert run_main(server, dest) == 0
    out = capsys.readouterr().out
    assert "already holds the dataset" in out
    assert out.strip().splitlines()[-1] == f"data.data_dir={root}"
    assert len(server.requests) == requests  # nothing downloaded again


def test_interrupted_download_resumes_with_range(server: Served, tree: Path, dest: Path, capsys) -> None:
    payload = zip_bytes(tree)
    cut = len(payload) // 3
    server.files["/main.zip"] = payload
    server.cut_after = cut

    assert run_main(server, dest, "--keep-archive") == 1
    err = capsys.readouterr().err
    assert "run the same command again to resume" in err
    assert len(err.strip().splitlines()) == 1
    assert (dest / "main.zip.part").stat().st_size == cut

    sha = hashlib.sha256(payload).hexdigest()
    assert run_main(server, dest, "--keep-archive", "--sha256", sha) == 0
    assert server.requests[-1] == ("/main.zip", f"bytes={cut}-")
    assert (dest / "main.zip").read_bytes() == payload
    assert not (dest / "main.zip.part").exists()
    assert find_dataset_root(dest) == (dest / TOP).resolve()


def test_server_ignoring_range_restarts_from_scratch(server: Served, tree: Path, dest: Path) -> None:
    payload = zip_bytes(tree)
    server.files["/main.zip"] = payload
    server.honour_range = False
    dest.mkdir()
    (dest / "main.zip.part").write_bytes(b"stale bytes from another file")
    assert run_main(server, dest, "--keep-archive") == 0
    assert server.requests[-1][1] == "bytes=29-"  # it asked to resume, got a 200 and started over
    assert (dest / "main.zip").read_bytes() == payload


def test_complete_part_file_is_not_downloaded_again(server: Served, tree: Path, dest: Path) -> None:
    payload = zip_bytes(tree)
    server.files["/main.zip"] = payload
    dest.mkdir()
    (dest / "main.zip.part").write_bytes(payload)
    assert run_main(server, dest) == 0  # the server answers 416 with the full size: nothing left to fetch
    assert find_dataset_root(dest) == (dest / TOP).resolve()


def test_sha256_mismatch_is_refused_and_file_removed(server: Served, tree: Path, dest: Path, capsys) -> None:
    server.files["/main.zip"] = zip_bytes(tree)
    assert run_main(server, dest, "--sha256", "0" * 64) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "sha256 mismatch" in err
    assert files_under(dest) == []


def _zip_with(name: str, data: bytes = b"pwned", mode: int | None = None) -> bytes:
    """A good tiny archive plus one crafted member."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"{TOP}/Training/Banana/0_100.jpg", b"not really a jpeg")
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        zf.writestr(info, data)
    return buffer.getvalue()


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """A good tiny tar.gz plus one crafted member."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        good = tarfile.TarInfo(f"{TOP}/Training/Banana/0_100.jpg")
        good.size = 4
        tf.addfile(good, io.BytesIO(b"jpeg"))
        member.size = len(data)
        tf.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    """A TarInfo of the given type."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("suffix", "make", "member"),
    [
        ("zip", lambda tmp: _zip_with("../evil.txt"), "../evil.txt"),
        ("zip", lambda tmp: _zip_with(f"{TOP}/../../evil.txt"), "../../evil.txt"),
        ("zip", lambda tmp: _zip_with(str(tmp / "abs-evil.txt")), "abs-evil.txt"),
        ("zip", lambda tmp: _zip_with(f"{TOP}/etc", b"/etc", stat.S_IFLNK | 0o777), f"{TOP}/etc"),
        ("tar.gz", lambda tmp: _tar_with(_tar_member("../evil.txt"), b"pwned"), "../evil.txt"),
        ("tar.gz", lambda tmp: _tar_with(_tar_member(str(tmp / "abs-evil.txt")), b"pwned"), "abs-evil.txt"),
        ("tar.gz", lambda tmp: _tar_with(_tar_member(f"{TOP}/etc", tarfile.SYMTYPE, "/etc")), f"{TOP}/etc"),
        ("tar.gz", lambda tmp: _tar_with(_tar_member("up", tarfile.SYMTYPE, "../..")), "'up'"),
        ("tar.gz", lambda tmp: _tar_with(_tar_member("h", tarfile.LNKTYPE, "../../evil.txt")), "'h'"),
        ("tar.gz", lambda tmp: _tar_with(_tar_member("null", tarfile.CHRTYPE)), "'null'"),
    ],
    ids=[
        "zip-dotdot",
        "zip-nested-dotdot",
        "zip-absolute",
        "zip-symlink-etc",
        "tar-dotdot",
        "tar-absolute",
        "tar-symlink-etc",
        "tar-symlink-up",
        "tar-hardlink-out",
        "tar-device",
    ],
)
def test_unsafe_archive_is_refused(server, tmp_path: Path, dest: Path, capsys, suffix, make, member) -> None:
    server.files[f"/evil.{suffix}"] = make(tmp_path)
    assert run_main(server, dest, path=f"/evil.{suffix}") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "refusing the archive" in err
    assert member in err
    assert files_under(dest) == []  # nothing extracted, and the archive deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]  # nothing written outside dest


def test_not_an_archive_is_refused(server: Served, dest: Path, capsys) -> None:
    server.files["/main.zip"] = b"<html>not found</html>"
    assert run_main(server, dest) == 1
    assert "neither a zip nor a tar archive" in capsys.readouterr().err
    assert files_under(dest) == []


def test_tar_gz_archive_is_extracted(server: Served, tree: Path, dest: Path, capsys) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        tf.add(tree, arcname="fruits-360_dataset_100x100/fruits-360")
    server.files["/fruits.tar.gz"] = buffer.getvalue()
    assert run_main(server, dest, path="/fruits.tar.gz") == 0
    root = (dest / "fruits-360_dataset_100x100" / "fruits-360").resolve()
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"data.data_dir={root}"
    assert len(list(root.rglob("*.jpg"))) == 8


def test_http_404_is_one_line(server: Served, dest: Path, capsys) -> None:
    assert run_main(server, dest, path="/nope.zip") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: HTTP 404") and len(err.splitlines()) == 1


def test_no_network_is_one_line(dest: Path, capsys) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["--url", f"http://127.0.0.1:{port}/main.zip", "--dest", str(dest), "--timeout", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach") and len(err.splitlines()) == 1


def test_disk_full_is_one_line(dest: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download, "fetch", full)
    assert main(["--url", "http://127.0.0.1:9/x.zip", "--dest", str(dest)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: disk full") and len(err.splitlines()) == 1


@pytest.mark.parametrize("layout", ["", TOP, "fruits-360_dataset_100x100/fruits-360"])
def test_find_dataset_root_layouts(tmp_path: Path, layout: str) -> None:
    base = tmp_path / "data"
    (base / "notes" / "Training").mkdir(parents=True)  # a decoy holding only one split
    for split in ("Training", "Test"):
        (base / layout / split / "Banana").mkdir(parents=True)
    assert find_dataset_root(base) == (base / layout).resolve()


def test_find_dataset_root_takes_a_training_folder_alone_and_explains_none(tmp_path: Path) -> None:
    (tmp_path / "fruits" / "Banana").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"no folder holding a training folder \(Training/"):
        find_dataset_root(tmp_path)
    (tmp_path / "fruits" / "train" / "Banana").mkdir(parents=True)  # data.test_fraction gives a test set
    assert find_dataset_root(tmp_path) == (tmp_path / "fruits").resolve()
    with pytest.raises(DatasetLayoutError, match="not a folder"):
        find_dataset_root(tmp_path / "missing")


def test_cli_subprocess(server: Served, tree: Path, dest: Path) -> None:
    server.files["/main.zip"] = zip_bytes(tree)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "fruitres.data.download", "--dest", str(dest), "--timeout", "5", "--url"]

    ok = subprocess.run(
        [*command, server.url + "/main.zip"], capture_output=True, text=True, env=env, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == f"data.data_dir={(dest / TOP).resolve()}"

    missing = subprocess.run(
        [*command, server.url + "/gone.zip", "--dest", str(dest / "other")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    assert missing.stderr.strip().startswith("error: HTTP 404")


@pytest.mark.parametrize(
    ("url", "version", "name"),
    [
        (download.URL_TEMPLATE.format(version="main"), "main", "fruits-360-100x100-main.zip"),
        (download.URL_TEMPLATE.format(version="v1/x"), "v1/x", "fruits-360-100x100-v1_x.zip"),
        ("http://127.0.0.1/a b.tar.gz", "main", "a_b.tar.gz"),
        ("http://127.0.0.1/..", "main", "fruits-360-archive"),
    ],
)
def test_archive_name_is_a_plain_file_name(url: str, version: str, name: str) -> None:
    assert download.archive_name(url, version) == name


@pytest.mark.parametrize(
    ("args", "release", "splits", "layout"),
    [
        ([], "100x100", ("Training", "Test"), "train=Training/, val=none, test=Test/"),
        (
            ["--release", "original-size"],
            "original-size",
            ("Training", "Validation", "Test"),
            "train=Training/, val=Validation/, test=Test/",
        ),
    ],
    ids=["default-100x100", "original-size"],
)
def test_release_downloads_its_repository_and_finds_its_layout(
    server: Served,
    tmp_path: Path,
    dest: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
    args,
    release,
    splits,
    layout,
) -> None:
    """Each release comes from its own repository's archive URL; its split folders are found and named."""
    monkeypatch.setattr(download, "GITHUB", server.url)  # the real URL layout, served locally
    repo = download.RELEASES[release]
    top = f"{repo.split('/')[1]}-main"
    sizes = ((8, 8),) if release == "100x100" else ((120, 160), (180, 130))  # original size: varying
    source = make_tree(tmp_path / "source", splits=splits, sizes=sizes)
    server.files[f"/{repo}/archive/main.zip"] = zip_bytes(source, top)

    assert main([*args, "--dest", str(dest), "--timeout", "5"]) == 0

    out = capsys.readouterr().out
    root = (dest / top).resolve()
    assert server.requests == [(f"/{repo}/archive/main.zip", None)]
    assert out.strip().splitlines()[-1] == f"data.data_dir={root}"
    assert f"(split folders: {layout})" in out
    assert sorted(p.name for p in dest.iterdir()) == [top]


def test_unknown_release_is_refused_by_name(dest: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--release", "50x50", "--dest", str(dest)])
    assert exit_info.value.code == 2
    assert "original-size" in capsys.readouterr().err
