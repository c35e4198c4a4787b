"""notebooks/quickstart.ipynb runs top to bottom (reduced size) so it never rots."""
import os

import pytest

from conftest import subprocess_env

NB = os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks", "quickstart.ipynb")


def _ready():
    try:
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
        from instantsoup import data

        data.default_model_path()
        data.default_task(train_size=8, validation_size=8)
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _ready(), reason="needs nbclient, the engine and the default model/data packages")
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("INSTANTSOUP_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "isp" in outputs and "zeros in layer 0 query" in outputs
