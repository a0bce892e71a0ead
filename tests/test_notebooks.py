"""The notebooks run top to bottom on generated data, so they cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import TrainedSweep
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
TRANSFER_NOTEBOOK = NOTEBOOK_DIR / "03_transfer.ipynb"  # needs a transfer study: tests/test_transfer_study.py
NOTEBOOKS = sorted(path for path in NOTEBOOK_DIR.glob("*.ipynb") if path != TRANSFER_NOTEBOOK)


def execute_notebook(path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a notebook top to bottom with `env` set: committed without outputs, it must draw a figure."""
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name} was committed with outputs; strip them with nbstripout"
    )
    for name, value in {**env, "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(name, value)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_without_errors(
    path: Path,
    tiny_dataset: Path,
    trained_sweep: TrainedSweep,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "FRUITRES_DATA_DIR": str(tiny_dataset),
        "FRUITRES_RUN_DIR": str(trained_sweep.run_dir),  # the results notebook's run and sweep
        "FRUITRES_SWEEP_DIR": str(trained_sweep.sweep_dir),
        "FRUITRES_ROOT": str(tmp_path),  # where a notebook writes logs, not the repository
    }
    execute_notebook(path, env, monkeypatch)
