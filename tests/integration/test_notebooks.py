"""Every notebook in notebooks/ runs top to bottom on a fresh kernel."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"


def execute(cells: list, folder: Path) -> None:
    book = nbformat.v4.new_notebook()
    book.cells = cells
    client = NotebookClient(
        book,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()


def run_notebook(name: str, folder: Path) -> nbformat.NotebookNode:
    """Execute a notebook in ``folder``; cells tagged ``after-restart`` run
    on a second, fresh kernel (a kernel restart)."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code"), (
        f"{name} is committed with outputs; clear them"
    )
    code = [c for c in book.cells if c.cell_type == "code"]
    before = [c for c in code if "after-restart" not in c.metadata.get("tags", [])]
    after = [c for c in code if "after-restart" in c.metadata.get("tags", [])]
    execute(before, folder)
    if after:
        execute(after, folder)
    return book


def mimes(book) -> list[str]:
    return [
        mime
        for cell in book.cells
        for output in cell.get("outputs", [])
        for mime in output.get("data", {})
    ]


def text(book) -> str:
    parts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # kernels draw inline
    copy = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, copy, ignore=shutil.ignore_patterns("notebook-data"))
    return copy


def test_every_notebook_is_covered():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [
        "01-quickstart.ipynb",
        "02-crash-and-resume.ipynb",
        "03-control-flow.ipynb",
        "04-history.ipynb",
        "05-workers.ipynb",
    ]


def test_quickstart(folder):
    book = run_notebook("01-quickstart.ipynb", folder)
    kinds = mimes(book)
    assert WIDGET in kinds  # the live view
    html = [
        o["data"]["text/html"]
        for c in book.cells
        for o in c.get("outputs", [])
        if "text/html" in o.get("data", {})
    ]
    assert any("<svg" in h and "send_messages" in h for h in html)  # the task graph
    assert any("sayiir-status" in h and "completed" in h for h in html)
    out = text(book)
    assert "accepted by the SMTP server: 261" in out
    assert "completed sent now: 0" in out


def test_crash_and_resume_with_a_kernel_restart(folder):
    book = run_notebook("02-crash-and-resume.ipynb", folder)
    out = text(book)
    assert "completed 285" in out
    side = (folder / "notebook-data" / "crash" / "side.txt").read_text().splitlines()
    assert side == [
        "extract",
        "transform",
        "load started",
        "load started",
        "load finished",
    ]
    assert "run_id='etl-1'" in out and "state=completed" in out


def test_control_flow(folder):
    book = run_notebook("03-control-flow.ipynb", folder)
    assert mimes(book).count(WIDGET) >= 3
    out = text(book)
    assert "'all_accounted_for': True" in out
    assert "'batches_sent': 6" in out


def test_history(folder):
    book = run_notebook("04-history.ipynb", folder)
    assert mimes(book).count("image/png") == 2
    assert "enrich" in text(book)


def test_workers_on_postgres(folder, monkeypatch):
    from ..pg import drop_schema, fresh_schema, require_dsn

    dsn = require_dsn()
    schema = fresh_schema()
    monkeypatch.setenv("SAYIIR_NB_DSN", dsn)
    monkeypatch.setenv("SAYIIR_NB_SCHEMA", schema)
    try:
        book = run_notebook("05-workers.ipynb", folder)
    finally:
        drop_schema(dsn, schema)
    out = text(book)
    assert "completed {'campaign': 'spring', 'email': 4, 'sms': 2}" in out
    assert "long: cancelled" in out
    assert "worker stopped:" in out
    assert WIDGET in mimes(book)
