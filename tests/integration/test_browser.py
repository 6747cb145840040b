"""JupyterLab in Debian's Chromium (Playwright): the quickstart notebook runs,
the task graph and the live view render and reach the final state."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts"
TOKEN = "sayiir-test-token"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium "
        "(apt-get install chromium); .ci/run installs it",
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A JupyterLab server on loopback serving a copy of notebooks/."""
    root = tmp_path / "notebooks"
    shutil.copytree(
        ROOT / "notebooks", root, ignore=shutil.ignore_patterns("notebook-data")
    )
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
    }
    env.pop("MPLBACKEND", None)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={root}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start within 60 s")
    yield url
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.mark.timeout(300)
def test_quickstart_renders_the_graph_and_the_live_view(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            viewport={"width": 1400, "height": 1000},
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync",
            ],
        )  # fmt: skip
        page = context.new_page()
        try:
            page.goto(f"{lab}/lab/tree/01-quickstart.ipynb?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            select = page.get_by_role("button", name="Select", exact=True)
            try:
                select.wait_for(timeout=10_000)  # JupyterLab may ask for the kernel
                select.click()
            except Exception:
                pass
            page.get_by_text("Kernel status: Idle").first.wait_for(
                state="attached", timeout=60_000
            )
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            page.wait_for_selector(
                ".sayiir-live[data-state='completed']", timeout=120_000
            )
            page.wait_for_selector("svg.sayiir-graph", timeout=10_000)
            page.wait_for_function(
                "document.body.innerText.includes('accepted by the SMTP server: 261')",
                timeout=60_000,
            )
            nodes = page.locator(
                ".sayiir-live .sayiir-node[data-state='succeeded']"
            ).count()
            assert nodes == 5
            assert (
                page.locator(".sayiir-status .sayiir-state").first.inner_text()
                == "completed"
            )
        finally:
            page.screenshot(
                path=str(ARTIFACTS / "browser-quickstart.png"), full_page=True
            )
            context.close()
