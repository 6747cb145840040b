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

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


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
    subprocess.run(
        ["bash", "binder/postBuild"], cwd=repo, env=env, check=True, timeout=600
    )
    notebooks = sorted(str(p) for p in (repo / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 5
    done = subprocess.run(
        [str(venv / "bin" / "jupyter"), "execute", "--timeout=300", *notebooks],
        cwd=repo / "notebooks",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
