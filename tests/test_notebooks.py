"""The notebooks run, top to bottom, in a fresh kernel: they cannot rot unnoticed.

Each is stored without outputs (so diffs show code, not plots). The test runs it on a sample of
its default data (set in the parameters cell) to stay quick.
"""

from __future__ import annotations

import re
from pathlib import Path

# The dev extra installs nbformat, nbclient, matplotlib and ipykernel: a missing one is a broken
# install, which must fail here rather than turn into a green skip.
import ipykernel  # noqa: F401  (the kernel the notebook runs on)
import matplotlib  # noqa: F401
import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_notebooks_are_stored_without_outputs() -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.slow
def test_threshold_tuning_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Headless: the kernel's inline backend renders with Agg into PNG outputs, no display needed.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    notebook = nbformat.read(NOTEBOOKS / "threshold_tuning.ipynb", as_version=4)
    parameters = notebook.cells[1]
    assert "MAX_PAIRS = None" in parameters.source
    parameters.source = parameters.source.replace("MAX_PAIRS = None", "MAX_PAIRS = 300")
    client = nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot was drawn"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "300 pairs" in text
    assert "schema:" in text  # the chosen threshold landed in the cache
    assert re.search(r"\b[1-9]\d* audited decisions", text)  # the audit log section ran
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "vs cosine at the same hit rate" in shown  # the sources table
    assert "trained without the scored source" in shown  # the leave-one-source-out table


@pytest.mark.slow
def test_tune_on_traffic_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """It fills a cache from the demo tickets through the stub provider, offline, plots the
    curves from the live labels and writes the thresholds calibration chose."""
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    notebook = nbformat.read(NOTEBOOKS / "tune_on_traffic.ipynb", as_version=4)
    assert "CACHE_FILE = None" in notebook.cells[1].source
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no curve was drawn"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "320 requests" in text
    counts = re.search(r"(\d+) labels in tickets.db: (\d+) near_miss, (\d+) shadow", text)
    assert counts and int(counts[2]) > 0 and int(counts[3]) > 0
    assert re.search(r"\b[1-9]\d* disagreeing near misses shown", text)
    assert "order_id: " in markdown  # a look-alike's differing order number, with both values
    assert "thresholds now: {'default': 0.95, 'scope:" in text  # calibration wrote the scope's
    assert "| tune |" in markdown  # ...and logged it
