"""The binder/ files install into a fresh virtual environment (as Binder's
build does: JupyterLab, binder/requirements.txt, then postBuild) and every
notebook runs there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..pg import drop_schema, fresh_schema, server_dsn

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


# a fresh venv with JupyterLab, then five notebooks: minutes, not seconds
@pytest.mark.timeout(1200)
def test_binder_environment_runs_every_notebook(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "*.duckdb", "notebook-data", "__pycache__", "*.egg-info"
        ),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(
        [
            *pip,
            "jupyterlab>=4.4,<4.5",
            "nbclient",
            "-r",
            str(repo / "binder" / "requirements.txt"),
        ],
        check=True,
        timeout=900,
    )
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("MPLBACKEND", None)
    schema = fresh_schema()  # notebook 05's tables, dropped afterwards
    env["SAYIIR_NB_SCHEMA"] = schema
    dsn = server_dsn()
    if dsn is not None:
        env["SAYIIR_NB_DSN"] = dsn
    subprocess.run(
        ["bash", "binder/postBuild"], cwd=repo, env=env, check=True, timeout=600
    )
    notebooks = sorted(str(p) for p in (repo / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 5
    try:
        done = subprocess.run(
            [str(venv / "bin" / "jupyter"), "execute", "--timeout=300", *notebooks],
            cwd=repo / "notebooks",
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        if dsn is not None:
            drop_schema(dsn, schema)
    assert done.returncode == 0, done.stderr[-3000:]
