"""What the JupyterLab browser tests share: the machine check, a ``jupyter lab`` server
on a temporary root, Chromium through playwright, numbered screenshots, opening a
notebook on our kernel, and all of that at once (``lab_session``).

Importing this module skips (or, under SUBSHELL_KERNEL_STRICT=1, fails) the
importing test module when Chromium, playwright or JupyterLab >= 4.4 is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path

import pytest

from .harness import skip_unless_strict

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "jupyterlab"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TOKEN = "subshell-kernel-browser-test"
KERNEL_DISPLAY_NAME = "Python 3 (subshell)"
#: news and update checks off (loopback only), so no notification pops up over the page
QUIET_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false", "checkForUpdates": False,
    },
}


def _version(dist: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in re.findall(r"\d+", metadata.version(dist))[:2])
    except metadata.PackageNotFoundError:
        return None


def _skip_reason() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[test]')"
    lab = _version("jupyterlab")
    if lab is None:
        return "JupyterLab is not installed (pip install -e '.[test]')"
    if lab < (4, 4):
        return f"JupyterLab {metadata.version('jupyterlab')} < 4.4 has no kernel subshells"
    return None


_SKIP = _skip_reason()
if _SKIP:
    skip_unless_strict(_SKIP, allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

# -- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:  # loopback only
        return json.loads(r.read())


@contextmanager
def jupyter_lab(tmp: Path, files: list[Path], settings: dict, log_name: str) -> Iterator[str]:
    """Start ``jupyter lab`` on a free loopback port, serving a root that holds copies of
    ``files``, with ``settings`` (and QUIET_SETTINGS) in the app's ``overrides.json``;
    yield its base URL.  The server log goes to ``ARTIFACTS / log_name``."""
    root, app_settings = tmp / "root", tmp / "app-settings"
    for d in (root, app_settings):
        d.mkdir()
    for path in files:
        shutil.copy(path, root / path.name)
    (app_settings / "overrides.json").write_text(json.dumps({**QUIET_SETTINGS, **settings}))
    env = dict(os.environ)  # JUPYTER_PATH, IPYTHONDIR: conftest's, with our kernelspecs
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp / "server.log"
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        f"--LabApp.app_settings_dir={app_settings}",
        "--LabApp.extension_manager=readonly",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=tmp, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited ({proc.returncode}):\n{log_path.read_text()}")
            try:
                get_json(f"{base}/api/status?token={TOKEN}")
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer in 60 s:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield base
    finally:
        _stop_server(proc, base)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, ARTIFACTS / log_name)


def _stop_server(proc: subprocess.Popen, base: str) -> None:
    """Shut the server down with its kernels; kill what is left of its session."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={TOKEN}", method="POST")
            urllib.request.urlopen(req, timeout=5).close()
        except (OSError, urllib.error.URLError):
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    # Our own process group (start_new_session): the server and any kernel it left.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


# -- the browser ---------------------------------------------------------------------------


class Shots:
    """Numbered screenshots in test-artifacts/jupyterlab/, named ``<prefix>NN-<name>.png``."""

    def __init__(self, page: Page, prefix: str = ""):
        self.page, self.prefix, self.n = page, prefix, 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{prefix}[0-9][0-9]-*.png"):
            old.unlink()

    def __call__(self, name: str, locator=None) -> Path:
        self.n += 1
        path = ARTIFACTS / f"{self.prefix}{self.n:02d}-{name}.png"
        (locator or self.page).screenshot(path=str(path))
        return path


def open_notebook(page: Page, base: str, name: str) -> None:
    """Open notebook ``name`` on our kernel; return once the kernel is idle."""
    page.goto(f"{base}/lab/tree/{name}?token={TOKEN}&reset", timeout=60_000)
    # The status bar's "<kernel> | <status>" item: the toolbar alone says "Idle" while
    # there is "No Kernel" yet, and a cell run then is lost.
    idle = page.locator(".jp-StatusBar-Left .jp-StatusBar-Item").filter(
        has_text=re.compile(rf"^{re.escape(KERNEL_DISPLAY_NAME)} \| Idle$"))
    dialog = page.locator(".jp-Dialog")
    expect(idle.or_(dialog).first).to_be_visible(timeout=60_000)
    if dialog.is_visible():  # "Select Kernel": choose ours
        dialog.locator("select").select_option(label=KERNEL_DISPLAY_NAME)
        dialog.locator(".jp-mod-accept").click()
    expect(idle).to_be_visible(timeout=60_000)
    notebook = page.locator(".jp-NotebookPanel")
    expect(notebook.locator(
        ".jp-NotebookPanel-toolbar [data-jp-item-name='executionProgress']")).to_contain_text(
        "Idle")
    expect(notebook.locator(".jp-NotebookPanel-toolbar .jp-KernelName")).to_have_text(
        KERNEL_DISPLAY_NAME)
    # Room for the notebook: fold the file browser away.
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()


@contextmanager
def lab_session(tmp: Path, files: list[Path], notebook: str, prefix: str,
                settings: dict | None = None) -> Iterator[tuple[str, Page, Shots]]:
    """``jupyter_lab`` serving ``files`` with ``settings``, and Chromium with ``notebook``
    open on our kernel: yields (base URL, page, shots).

    What it leaves in ARTIFACTS is named with ``prefix``: the numbered screenshots (a
    failure adds a last one), ``<prefix>server.log``, and ``<prefix>browser-console.log``
    with the page's console messages as they come."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (
        jupyter_lab(tmp, files, settings or {}, f"{prefix}server.log") as base,
        sync_playwright() as pw,
        open(ARTIFACTS / f"{prefix}browser-console.log", "w") as log,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda m: log.write(f"console.{m.type}: {m.text}\n"))
        page.on("pageerror", lambda e: log.write(f"pageerror: {e}\n"))
        shots = Shots(page, prefix)
        try:
            open_notebook(page, base, notebook)
            shots("notebook-opened")
            yield base, page, shots
        except BaseException:
            with suppress(Exception):  # the page may be gone: keep the original error
                shots("failure")
            raise
        finally:
            with suppress(Exception):  # the page may be gone already
                context.close()
            browser.close()
