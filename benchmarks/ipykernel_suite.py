#!/usr/bin/env python
"""Run ipykernel's own black-box tests against this kernel (or any kernelspec).

    python benchmarks/ipykernel_suite.py                         # the drop-in modules
    python benchmarks/ipykernel_suite.py test_debugger.py test_subshells.py
    python benchmarks/ipykernel_suite.py --kernel python3        # ipykernel itself, for reference
    python benchmarks/ipykernel_suite.py test_kernel.py -- -k interrupt -x

The tests come from the ipykernel sdist on PyPI (``tests/`` of the version
below), downloaded once into ``benchmarks/.ipykernel-<version>/``. Every test
there starts its kernels through ``jupyter_client`` (``start_new_kernel``,
``run_kernel``), so a plugin makes our kernelspec the default kernel name of
every ``KernelManager`` that asks for the default Python kernel.
ipykernel's own ``conftest.py`` serves only its
in-process tests (and needs pytest-asyncio and Tornado), so it is replaced by
that plugin; its ``tests/__init__.py`` fixture, which points ``HOME`` and
``PYTHONPATH`` elsewhere for every test, stays: our kernelspec is found through
``JUPYTER_PATH``, and it names this checkout on ``PYTHONPATH`` itself.

The run uses ipykernel's pytest settings that matter (30 s per test) and
unsets ``CI`` (its GUI tests skip under ``CI``). Exit status: pytest's.

Against our kernelspecs, the checks of ipykernel's identity in
``IDENTITY_CHECKS`` are turned off, and the tests in ``DEVIATIONS`` (behaviour
this kernel has on purpose) are marked as expected failures, each with its
reason: strictly, so one that starts to pass fails the run and the list stays
true.  ``PENDING`` lists failures that open work is to remove (not strict).
``--no-expected`` runs the deviations plainly.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "7.4.0"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / f".ipykernel-{VERSION}"
DEFAULT_MODULES = ["test_message_spec.py", "test_kernel.py", "test_async.py"]

#: checks of ipykernel's identity, not of behaviour: the runner turns them off (a
#: ``kernel_info_reply`` is validated wherever the tests flush their channels, so the
#: check would fail whichever test happens to meet a late one)
IDENTITY_CHECKS = {
    "KernelInfoReply.implementation_version":
        "at least 2.1: ipykernel's version number, where ours has subshell_kernel's",
}
#: tests of behaviour this kernel has on purpose
DEVIATIONS = {
    "tests/test_kernel.py::test_print_to_correct_cell_from_thread[thread-local]":
        "by design: a thread's output goes to the cell that started it (docs/guarantees.md "
        "section 2), so after reset_thread_parent it goes back there, not to the cell "
        "running now",
    "tests/test_kernel.py::test_print_to_correct_cell_from_thread[none]":
        "by design: a thread's output goes to the cell that started it, not to whichever "
        "cell runs when it prints (docs/guarantees.md section 2)",
    "tests/test_kernel.py::test_interrupt_during_pdb_set_trace":
        "by design: an interrupt in the debugger ends the cell (KeyboardInterrupt), so "
        "stop_on_error aborts the cell queued behind it, and the test's schema rejects "
        "'aborted'; ipykernel quits the debugger and lets the cell run on",
    "tests/test_kernel.py::test_sequential_control_messages":
        "by design: execute_request on the control channel is not run; control never "
        "runs user code, so it answers while every subshell is busy",
}
#: failures that open work removes
PENDING: dict[str, str] = {}
#: more, for the trio backend only
TRIO_DEVIATIONS = {
    "tests/test_async.py::test_async_await":
        "by design: a trio kernel awaits cells on trio; asyncio needs %autoawait asyncio",
}

PLUGIN = '''\
"""Written by subshell_kernel's benchmarks/ipykernel_suite.py, in place of ipykernel's
conftest (which has in-process fixtures only): every KernelManager that asks for the
default Python kernel ("python", "python3" or nothing, as start_new_kernel and run_kernel
do) gets the kernelspec under test instead; and the tests the runner lists are marked as
expected failures.  It also keeps the one fixture of ipykernel's conftest that black-box
tests use: ``kc``, a client of a new kernel (test_matplotlib_eventloops.py)."""
import json
import os

import pytest
from jupyter_client.manager import KernelManager

from .utils import new_kernel

_KERNEL = os.environ["IPYKERNEL_SUITE_KERNEL"]
_init = KernelManager.__init__


def _init_with_our_kernel(self, *args, **kwargs):
    if kwargs.get("kernel_name", "python3") in ("python", "python3"):
        kwargs["kernel_name"] = _KERNEL
    _init(self, *args, **kwargs)


KernelManager.__init__ = _init_with_our_kernel

_EXPECTED = json.loads(os.environ.get("IPYKERNEL_SUITE_EXPECTED", "{}"))
_IDENTITY = json.loads(os.environ.get("IPYKERNEL_SUITE_IDENTITY", "[]"))


def pytest_collection_modifyitems(items):
    """Turn off the identity checks the runner names (a version trait's minimum), and
    mark the tests it lists as expected failures, with its reasons."""
    import importlib

    import pytest

    spec = importlib.import_module("tests.test_message_spec")  # the validators, used by all
    for name in _IDENTITY:
        cls, trait = name.split(".")
        getattr(spec, cls).class_traits()[trait].min = None
    for item in items:
        if item.nodeid in _EXPECTED:
            reason, strict = _EXPECTED[item.nodeid]
            item.add_marker(pytest.mark.xfail(reason=reason, strict=strict))


@pytest.fixture
def kc():
    with new_kernel() as client:
        yield client


def pytest_addoption(parser):
    """Some tests skip themselves under coverage by asking for pytest-cov's ``--cov``,
    which ipykernel's own test environment always has; a stand-in when it is missing."""
    try:
        parser.addoption("--cov", action="store_true", default=False, dest="cov_source",
                         help="(stand-in for pytest-cov's option; coverage is not measured)")
    except ValueError:  # pytest-cov is installed and has added it
        pass
'''

PYTEST_INI = """\
[pytest]
timeout = 30
addopts = -ra -p no:cacheprovider -p no:randomly
"""


def sdist_url() -> str:
    """The sdist's address, from PyPI's simple index (PEP 691 JSON)."""
    request = urllib.request.Request(
        "https://pypi.org/simple/ipykernel/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    name = f"ipykernel-{VERSION}.tar.gz"
    for f in files:
        if f["filename"] == name:
            return f["url"]
    raise SystemExit(f"{name} is not on PyPI's index")


def fetch_tests() -> Path:
    tests = CACHE / "tests"
    if not tests.is_dir():
        with urllib.request.urlopen(sdist_url(), timeout=120) as response:
            data = response.read()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            prefix = f"ipykernel-{VERSION}/tests/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name[len(f"ipykernel-{VERSION}/"):]
            CACHE.mkdir(parents=True, exist_ok=True)
            tar.extractall(CACHE, members=members, filter="data")
    return tests


def write_kernelspec(jupyter_path: Path, name: str) -> None:
    """A kernelspec for this checkout's kernel (``subshell*`` names), on JUPYTER_PATH."""
    argv = [sys.executable, "-m", "subshell_kernel", "-f", "{connection_file}"]
    if name.endswith("-trio"):
        argv.append("--SubshellKernel.backend=trio")
    spec = {"argv": argv, "display_name": name, "language": "python",
            "interrupt_mode": "signal", "env": {"PYTHONPATH": str(REPO)}}
    (jupyter_path / "kernels" / name).mkdir(parents=True)
    (jupyter_path / "kernels" / name / "kernel.json").write_text(json.dumps(spec))


def expected(kernel: str) -> dict[str, tuple[str, bool]]:
    """nodeid -> (reason, strict) for the tests expected to fail on ``kernel``."""
    marks = {nodeid: (reason, True) for nodeid, reason in DEVIATIONS.items()}
    if kernel.endswith("-trio"):
        marks.update((nodeid, (reason, True)) for nodeid, reason in TRIO_DEVIATIONS.items())
    marks.update((nodeid, (f"pending: {reason}", False)) for nodeid, reason in PENDING.items())
    return marks


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: {' '.join(DEFAULT_MODULES)}")
    parser.add_argument("--kernel", default="subshell",
                        help="kernelspec to test (subshell, subshell-trio, or an installed one)")
    parser.add_argument("--no-expected", action="store_true",
                        help="do not mark the listed deviations as expected failures")
    opts = parser.parse_args(args)
    modules = opts.modules or DEFAULT_MODULES
    source = fetch_tests()
    with tempfile.TemporaryDirectory(prefix="ipykernel-suite-") as tmp:
        root = Path(tmp)
        shutil.copytree(source, root / "tests")
        (root / "tests" / "conftest.py").write_text(PLUGIN)
        (root / "pytest.ini").write_text(PYTEST_INI)
        env = dict(os.environ, IPYKERNEL_SUITE_KERNEL=opts.kernel)
        env.pop("CI", None)
        if re.fullmatch(r"subshell(-trio)?", opts.kernel):
            env["IPYKERNEL_SUITE_IDENTITY"] = json.dumps(list(IDENTITY_CHECKS))
            if not opts.no_expected:
                env["IPYKERNEL_SUITE_EXPECTED"] = json.dumps(expected(opts.kernel))
            write_kernelspec(root / "jupyter", opts.kernel)
            env["JUPYTER_PATH"] = os.pathsep.join(
                filter(None, [str(root / "jupyter"), env.get("JUPYTER_PATH")]))
        cmd = [sys.executable, "-m", "pytest", *(f"tests/{m}" for m in modules), *extra]
        print(f"ipykernel {VERSION} tests against kernelspec {opts.kernel!r}: {' '.join(cmd)}",
              flush=True)
        return subprocess.call(cmd, cwd=root, env=env)


if __name__ == "__main__":
    sys.exit(main())
