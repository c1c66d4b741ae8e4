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

PLUGIN = '''\
"""Written by subshell_kernel's benchmarks/ipykernel_suite.py, in place of ipykernel's
conftest (which has in-process fixtures only): every KernelManager that asks for the
default Python kernel ("python", "python3" or nothing, as start_new_kernel and run_kernel
do) gets the kernelspec under test instead."""
import os

from jupyter_client.manager import KernelManager

_KERNEL = os.environ["IPYKERNEL_SUITE_KERNEL"]
_init = KernelManager.__init__


def _init_with_our_kernel(self, *args, **kwargs):
    if kwargs.get("kernel_name", "python3") in ("python", "python3"):
        kwargs["kernel_name"] = _KERNEL
    _init(self, *args, **kwargs)


KernelManager.__init__ = _init_with_our_kernel


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
            write_kernelspec(root / "jupyter", opts.kernel)
            env["JUPYTER_PATH"] = os.pathsep.join(
                filter(None, [str(root / "jupyter"), env.get("JUPYTER_PATH")]))
        cmd = [sys.executable, "-m", "pytest", *(f"tests/{m}" for m in modules), *extra]
        print(f"ipykernel {VERSION} tests against kernelspec {opts.kernel!r}: {' '.join(cmd)}",
              flush=True)
        return subprocess.call(cmd, cwd=root, env=env)


if __name__ == "__main__":
    sys.exit(main())
