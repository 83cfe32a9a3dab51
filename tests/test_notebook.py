"""examples/quickstart.ipynb runs top to bottom in a real Jupyter kernel (the venv's python)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).parent.parent / "examples" / "quickstart.ipynb"


def cell_output(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Appended (in memory only): which python the kernel ran, to prove it is this venv's.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    # Keep the kernel away from the user's Jupyter config, and its connection files in tmp_path.
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter-config"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, startup_timeout=60, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(o.output_type != "error" for c in code for o in c.outputs)
    outputs = [cell_output(c) for c in code]
    start, reply, streamed, cancelled, thread, stop, prefix = outputs
    assert "proxy listening on http://127.0.0.1:" in start
    database = Path(start.split("temporary database: ", 1)[1].strip())
    assert database.name == "proxy.sqlite3" and not database.parent.exists()  # deleted by server.stop()
    assert "output tokens: 12" in reply
    text, end = streamed.rstrip("\n").rsplit("\n", 1)
    assert end == "[response.completed]"
    assert len(text.split()) >= 10  # the deltas, printed as they arrived
    assert "cancel_mode: quick_edit" in cancelled
    assert "the stream ended with: response.cancelled after" in cancelled
    assert ": 2 messages, inactive" in thread
    assert "     user: Hello! [tokens=12]" in thread
    assert "assistant: " in thread
    assert stop == "stopped\n"
    assert prefix.strip() == sys.prefix
