"""The notebooks run top to bottom on generated data, so they cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import TrainedSweep
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_without_errors(
    path: Path,
    tiny_dataset: Path,
    trained_sweep: TrainedSweep,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name} was committed with outputs; strip them with nbstripout"
    )
    monkeypatch.setenv("FRUITRES_DATA_DIR", str(tiny_dataset))
    monkeypatch.setenv("FRUITRES_RUN_DIR", str(trained_sweep.run_dir))  # the results notebook's run and sweep
    monkeypatch.setenv("FRUITRES_SWEEP_DIR", str(trained_sweep.sweep_dir))
    monkeypatch.setenv("FRUITRES_ROOT", str(tmp_path))  # where a notebook writes logs, not the repository
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
