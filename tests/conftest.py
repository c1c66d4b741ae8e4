"""Test setup: private kernelspecs, a private IPython dir, and kernel fixtures.

Kernelspecs are written into a temporary JUPYTER_PATH so the tests run the
kernel from this checkout with this interpreter, whatever is installed:
``subshell`` (asyncio on uvloop), ``subshell-asyncio`` (asyncio's own loop),
``subshell-trio`` (trio) and ``python3`` (ipykernel, the reference, where a
test compares).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

from subshell_kernel.kernelspec import kernel_json

from .harness import KernelHarness

_TMP = Path(tempfile.mkdtemp(prefix="subshell-kernel-tests-"))


def _write_specs() -> None:
    kernels = _TMP / "jupyter" / "kernels"
    specs = {
        "subshell": kernel_json("Python 3 (subshell)"),
        "subshell-asyncio": kernel_json("Python 3 (subshell, asyncio without uvloop)"),
        "subshell-trio": kernel_json("Python 3 (subshell, trio)"),
    }
    specs["subshell-asyncio"]["argv"].append("--SubshellKernel.use_uvloop=False")
    specs["subshell-trio"]["argv"].append("--SubshellKernel.backend=trio")
    specs["python3"] = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    for name, spec in specs.items():
        (kernels / name).mkdir(parents=True, exist_ok=True)
        (kernels / name / "kernel.json").write_text(json.dumps(spec))
    os.environ["JUPYTER_PATH"] = str(_TMP / "jupyter")
    os.environ["IPYTHONDIR"] = str(_TMP / "ipython")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(_TMP / "runtime")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


_write_specs()


def pytest_addoption(parser):
    parser.addoption("--soak-full", action="store_true", help="run soak tests at full size")


@pytest.fixture(scope="module")
def kernel():
    """A kernel shared by the tests of one module (asyncio backend)."""
    k = KernelHarness("subshell")
    yield k
    k.close()


@pytest.fixture(scope="module")
def trio_kernel():
    k = KernelHarness("subshell-trio")
    yield k
    k.close()


@pytest.fixture(
    params=["subshell", "subshell-asyncio", "subshell-trio"], ids=["uvloop", "asyncio", "trio"]
)
def any_kernel(request):
    """A fresh kernel on each event loop."""
    k = KernelHarness(request.param)
    yield k
    k.close()


@pytest.fixture
def fresh_kernel():
    """A kernel of its own, for tests that interrupt, break or shut it down."""
    k = KernelHarness("subshell")
    yield k
    k.close()


@pytest.fixture(scope="module")
def _module_kernel_holder():
    holder: dict[str, KernelHarness] = {}
    yield holder
    if "k" in holder:
        holder["k"].close()


@pytest.fixture
def revivable_kernel(_module_kernel_holder) -> KernelHarness:
    """The module's kernel; a new one if an earlier test killed it.

    After each test, subshells it left behind are deleted, so a test that
    failed half-way does not leak into the next.
    """
    kern = _module_kernel_holder.get("k")
    if kern is None or not kern.is_alive():
        if kern is not None:
            kern.close()
        kern = _module_kernel_holder["k"] = KernelHarness("subshell")
    yield kern
    if kern.is_alive():
        for sid in kern.list_subshells():
            kern.delete_subshell(sid)
