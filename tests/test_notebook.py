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
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    outputs = "".join(o.get("text", "") for o in outs)
    assert "isp" in outputs and "zeros in layer 0 query" in outputs
    assert "labels kept from the data: {0: 'rotten', 1: 'fresh'}" in outputs
    assert any("image/png" in o.get("data", {}) for o in outs)                     # the plots are shown
    # progress bars are on: widgets with ipywidgets (the notebook extra), else tqdm's text bars
    bars = [o for o in outs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
            or "step/s]" in o.get("text", "") or "s/step]" in o.get("text", "")]
    assert bars
    assert "TqdmWarning" not in "".join(str(o) for o in outs)
