"""The wheel runs without the source tree: built from the checkout, installed in a fresh virtual environment,
started from a user's project folder, it finds its packaged configs and trains."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from fruitres.run.installation import CHECKOUT_DIR, CONF_DIR
from fruitres.run_folders import read_record

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("train", "eval", "predict", "export", "lr_find")
TINY_RUN = [  # the default run (conf/experiment/embedded.yaml), on a few generated images for one epoch
    "data.image_size=32",
    "data.batch_size=8",
    "data.num_workers=0",
    "data.embedded.num_classes=3",
    "data.embedded.train_per_class=10",
    "data.embedded.test_per_class=4",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


@dataclass(frozen=True)
class Installed:
    """The wheel, and a fresh virtual environment inside a user's project (a git repository) that holds it."""

    wheel: Path
    python: Path
    project: Path

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`python ARGS` in the fresh environment, from the project folder, with nothing of the checkout on
        its path."""
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "FRUITRES_ROOT")}
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def pip(*args: str) -> None:
    """This environment's pip, offline."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def build_wheel(build_dir: Path) -> Path:
    """A wheel built from a copy of what the build reads, so the checkout gets no build/ or *.egg-info."""
    source = build_dir / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("fruitres", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = build_dir / "dist"
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(dist), str(source))
    (wheel,) = dist.glob("fruitres-*.whl")
    return wheel


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel in `<project>/.venv`, a fresh environment whose dependencies are this environment's packages
    (a path line in a .pth file: torch is not installed twice, and the .pth files there, among them the
    editable install's finder of the checkout, are not run)."""
    wheel = build_wheel(tmp_path_factory.mktemp("build"))
    project = tmp_path_factory.mktemp("project")
    git(project, "init", "-q")  # a user's project under git, which is not fruitres's code
    git(project, "-c", "user.name=u", "-c", "user.email=u@u", "commit", "-q", "--allow-empty", "-m", "mine")

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(project / ".venv")], check=True)
    python = project / ".venv" / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    pip("--python", str(python), "install", "--no-deps", "--no-index", str(wheel))
    # after the install: pip in an environment that sees this one's editable fruitres would try to replace it
    dependencies = [path for path in site.getsitepackages() if Path(path).is_dir()]
    (Path(purelib) / "dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    return Installed(wheel=wheel, python=python, project=project)


def test_a_checkout_composes_from_its_top_level_conf_where_users_edit_it() -> None:
    assert CHECKOUT_DIR == REPO and CONF_DIR == REPO / "conf"  # an editable install, or the source tree


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_config_of_the_checkout(installed: Installed) -> None:
    modules = {path.relative_to(REPO).as_posix() for path in (REPO / "fruitres").rglob("*.py")}
    configs = {
        f"fruitres/{path.relative_to(REPO).as_posix()}"
        for path in (REPO / "conf").rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }
    assert {"fruitres/conf/train.yaml", "fruitres/conf/classes/fruits360_a.txt"} <= configs
    missing = (modules | configs) - set(zipfile.ZipFile(installed.wheel).namelist())
    assert not missing, f"pyproject.toml's [tool.setuptools] leaves these out of the wheel: {sorted(missing)}"


@pytest.mark.slow
def test_the_fresh_environment_imports_the_installed_wheel_not_the_checkout(installed: Installed) -> None:
    done = installed.run(
        "-c", "import fruitres, fruitres.run.installation as where; print(fruitres.__file__, where.CONF_DIR)"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    package, conf_dir = map(Path, done.stdout.split())
    assert package.is_relative_to(installed.project / ".venv"), f"{package}: not the wheel's, the checkout's"
    assert conf_dir == package.parent / "conf" and (conf_dir / "train.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_every_entry_point_composes_its_packaged_config_from_another_folder(
    installed: Installed, entry_point: str
) -> None:
    done = installed.run("-m", f"fruitres.{entry_point}", "--cfg", "job")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"task_name: {entry_point}\n" in done.stdout


@pytest.mark.slow
def test_a_users_config_dir_adds_to_the_packaged_configs(installed: Installed) -> None:
    experiment = installed.project / "my_conf" / "experiment" / "mine.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text("# @package _global_\ntags: [mine]\nseed: 7\n")
    done = installed.run("-m", "fruitres.train", "--config-dir", "my_conf", "experiment=mine", "--cfg", "job")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "- mine\n" in done.stdout and "seed: 7\n" in done.stdout and "task_name: train\n" in done.stdout


@pytest.mark.slow
def test_the_installed_package_trains_from_a_users_project(installed: Installed) -> None:
    done = installed.run("-m", "fruitres.train", *TINY_RUN, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (run_dir,) = (installed.project / "logs" / "train" / "runs").iterdir()  # under the folder it ran from
    assert list((run_dir / "checkpoints").glob("*.ckpt"))
    record = read_record(run_dir)
    assert record is not None and record["status"] == "ok"
    provenance = record["provenance"]
    assert provenance["git"] == {"commit": None, "dirty": None, "diff_sha256": None}  # not the project's
    assert provenance["working_dir"] == str(installed.project)
