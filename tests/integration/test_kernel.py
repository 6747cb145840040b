"""The sync API in a real Jupyter kernel (nbclient), including an interrupt."""

from __future__ import annotations

import time

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

CELLS = [
    """
import os, time
from sayiir_nb import CheckpointingRunner, DuckDBBackend, Flow, task
runner = CheckpointingRunner(DuckDBBackend("kernel.duckdb"))

@task
def fetch(campaign):
    return ["ana@example.com", "ben@example.com"]

@task
def send(recipients, ctx):
    return {"campaign": ctx.input, "sent": len(recipients)}

pipeline = Flow("email-pipeline").then(fetch).then(send).build()
status = runner.run(pipeline, "campaign-001", "spring-sale")
print("FIRST", status.state.value, status.output)
""",
    """
again = runner.run(pipeline, "campaign-001", "spring-sale")
print("AGAIN", again.state.value, again.output == status.output)
""",
    """
@task
def slow(x):
    with open("started.txt", "a") as side:
        side.write("started\\n")
    if not os.path.exists("resume.flag"):
        time.sleep(60)
    return x + 1

slow_flow = Flow("slow").then(slow).build()
began = time.time()
runner.run(slow_flow, "slow-1", 1)
""",
    """
print("STATE", runner.status("slow-1").state.value, round(time.time() - began, 1))
""",
    """
open("resume.flag", "w").close()
resumed = runner.run(slow_flow, "slow-1", 1)
print("RESUMED", resumed.state.value, resumed.output)
""",
]


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []))


def test_run_and_interrupt_in_a_kernel(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source.strip()) for source in CELLS]
    client = NotebookClient(
        nb,
        timeout=4,
        interrupt_on_timeout=True,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    began = time.time()
    client.execute()
    assert time.time() - began < 60

    first, again, slow, state, resumed = nb.cells
    assert "FIRST completed {'campaign': 'spring-sale', 'sent': 2}" in text_of(first)
    assert "AGAIN completed True" in text_of(again)
    errors = [o for o in slow.outputs if o.get("output_type") == "error"]
    assert [e["ename"] for e in errors] == ["KeyboardInterrupt"]
    words = text_of(state).split()
    assert words[:2] == ["STATE", "interrupted"]
    assert float(words[2]) < 4 + 3  # the cell's timeout, then at most ~grace
    assert "RESUMED completed 2" in text_of(resumed)
    assert (tmp_path / "started.txt").read_text().splitlines() == ["started"] * 2
