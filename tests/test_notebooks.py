"""Every notebook runs top to bottom (a broken notebook fails CI)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
# the walkthroughs the README links to, by name: a missing one fails its own case
NAMES = (
    "linear_models",
    "tree_models",
    "more_estimators",
    "client_server",
    "byo_network",
    "hybrid_model",
    "encrypted_dataframes",
    "encrypted_training",
)
NOTEBOOKS = [FOLDER / f"{name}.ipynb" for name in NAMES]


def test_every_notebook_is_tested():
    assert sorted(FOLDER.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.fhe_execute
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    # the kernel inherits it: notebooks that simulate a whole test set take its first 40 rows
    monkeypatch.setenv("FHE_SKLEARN_NOTEBOOK_ROWS", "40")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "each notebook draws at least one plot"
