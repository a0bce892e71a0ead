"""A full or read-only disk: the image cache reserves its bytes before writing, and every writer (cache,
checkpoints, reports) stops with one line naming the folder and leaves the last good files as they were.
Real small file systems (tmpfs) where this machine lets the tests mount one, skipped with the reason where
it does not; real training processes for the command-line cases."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli import TINY_CLI, run_train

from fruitres.checkpoints.files import AtomicCheckpointIO
from fruitres.data.cache import CACHE_PREFIX, build_image_cache
from fruitres.data.folders import list_images
from fruitres.errors import FixableError
from fruitres.files import PARTIAL_SUFFIX, WriteError, replaced_whole, write_text_whole

MIB = 1 << 20


def mount_tmpfs(folder: Path, size_mib: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode}): needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 20 MiB file system, unmounted afterwards."""
    folder = tmp_path / "small-disk"
    mount_tmpfs(folder, 20)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def training_images(dataset: Path) -> list[Path]:
    return [path for folder in sorted((dataset / "Training").iterdir()) for path in list_images(folder)]


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*"))


# --- the image cache --------------------------------------------------------------------------------------


def test_image_cache_too_big_for_its_disk_fails_in_one_line_with_the_bytes_and_leaves_no_file(
    tiny_dataset: Path, small_disk: Path
) -> None:
    paths = training_images(tiny_dataset)  # 200 images of 200 × 200: 24 MB, on a 20 MiB disk
    with pytest.raises(FixableError) as refused:
        build_image_cache(paths, 200, small_disk)
    message = str(refused.value)
    assert "\n" not in message
    assert f"data.cache_dir={small_disk}" in message and "bytes free" in message
    needed = int(re.search(r"needs ([\d,]+) bytes", message)[1].replace(",", ""))
    assert len(paths) * 200 * 200 * 3 <= needed < len(paths) * 200 * 200 * 3 + 4096  # pixels (and header)
    assert leftovers(small_disk) == []
    array_path, unreadable = build_image_cache(paths, 32, small_disk)  # the next, smaller run succeeds
    assert array_path.is_file() and unreadable == []


@pytest.mark.slow
def test_training_with_a_cache_on_a_full_disk_exits_1_in_one_line_and_the_next_run_succeeds(
    tiny_dataset: Path, small_disk: Path, tmp_path: Path
) -> None:
    args = [*TINY_CLI, f"data.data_dir={tiny_dataset}", f"data.cache_dir={small_disk}"]
    status, output = run_train([*args, "data.image_size=200", "train=false", "test=false"], tmp_path / "a")
    assert status == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if "has no room for the image cache" in line]
    assert f"data.cache_dir={small_disk}" in line and "bytes free" in line
    assert leftovers(small_disk) == []
    status, output = run_train(
        [*args, "trainer.max_epochs=1", "trainer.limit_train_batches=1"], tmp_path / "b"
    )
    assert status == 0, output[-3000:]


def test_partial_caches_of_dead_processes_are_removed_by_the_next_build_and_live_ones_kept(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_dir = tmp_path / "cache"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)  # exited: its pid names no live process (reuse within the test is remote)
    with replaced_whole(cache_dir / f"{CACHE_PREFIX}x.npy") as partial:
        left_by_dead = partial.with_name(partial.name.replace(f"@{os.getpid()}@", f"@{dead_pid}@"))
        left_by_live = partial.with_name(partial.name.replace(".npy", "-live.npy"))
        left_by_dead.write_bytes(b"cut off")
        left_by_live.write_bytes(b"being written")
        partial.write_bytes(b"done")
    with caplog.at_level("INFO", logger="fruitres.files"):
        build_image_cache(training_images(tiny_dataset), 32, cache_dir)
    assert not left_by_dead.exists() and left_by_live.exists()
    assert any(str(left_by_dead) in record.message and "died" in record.message for record in caplog.records)


def test_an_interrupted_write_leaves_no_partial_and_the_earlier_file_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    write_text_whole(target, "the first report")
    for stop in (KeyboardInterrupt, SystemExit):
        with pytest.raises(stop), replaced_whole(target) as partial:
            partial.write_text("half of the sec")
            raise stop
    assert target.read_text() == "the first report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_cache_folder_under_a_regular_file_is_one_line_naming_data_cache_dir(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    with pytest.raises(FixableError, match=r"^data\.cache_dir=.*not-a-folder/cache cannot be made a folder"):
        build_image_cache(training_images(tiny_dataset)[:2], 32, blocker / "cache")


# --- checkpoints and reports --------------------------------------------------------------------------------


def test_checkpoint_on_a_full_disk_is_one_line_and_the_last_good_checkpoint_stays(small_disk: Path) -> None:
    writer, target = AtomicCheckpointIO(), small_disk / "checkpoints" / "last.ckpt"
    writer.save_checkpoint({"weights": torch.ones(1000)}, target)
    good = target.read_bytes()
    with pytest.raises(WriteError) as refused:
        writer.save_checkpoint({"weights": torch.zeros(8 * MIB)}, target)  # 32 MiB on a 20 MiB disk
    assert str(refused.value).startswith(f"cannot write last.ckpt in {target.parent}: the disk is full")
    assert "\n" not in str(refused.value)
    assert target.read_bytes() == good and leftovers(target.parent) == ["last.ckpt"]


def test_report_on_a_read_only_disk_is_one_line_and_the_earlier_report_stays(small_disk: Path) -> None:
    target = small_disk / "eval" / "metrics.json"
    write_text_whole(target, "{}")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(WriteError, match=r"^cannot write metrics.json in .*: the file system is read-only"):
        write_text_whole(target, '{"accuracy": 1}')
    assert target.read_text() == "{}"


@pytest.mark.slow
def test_training_into_a_run_folder_on_a_full_disk_exits_1_naming_the_folder(
    tiny_dataset: Path, small_disk: Path, tmp_path: Path
) -> None:
    run_dir = small_disk / "run"  # a ResNet-18 checkpoint (~90 MB with its optimizer) cannot fit in 20 MiB
    args = [*TINY_CLI, f"data.data_dir={tiny_dataset}", f"data.cache_dir={tmp_path / 'cache'}"]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    status, output = run_train([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert status == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if "the disk is full" in line]
    assert lines and f"in {run_dir / 'checkpoints'}" in lines[-1], output[-3000:]
    assert not list((run_dir / "checkpoints").glob(f".*{PARTIAL_SUFFIX}"))


def test_files_written_whole_get_the_usual_permissions_not_mkstemps_0600(tmp_path: Path) -> None:
    target = tmp_path / "run_record.json"
    write_text_whole(target, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
