"""The command line: kernelspec install, and configuration through traitlets."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from .harness import KernelHarness


def test_install_writes_kernelspec_with_name_and_display_name(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "subshell_kernel", "install", "--prefix", str(tmp_path),
         "--name", "mine", "--display-name", "My Kernel"],
        check=True, capture_output=True,
    )
    spec = json.loads((tmp_path / "share/jupyter/kernels/mine/kernel.json").read_text())
    assert spec["display_name"] == "My Kernel"
    assert spec["argv"][1:] == ["-m", "subshell_kernel", "-f", "{connection_file}"]
    assert spec["interrupt_mode"] == "signal"
    # JupyterLab shows its debugger only for a kernelspec that says so
    assert spec["metadata"]["debugger"] is (importlib.util.find_spec("debugpy") is not None)
    assert spec["kernel_protocol_version"] == "5.5"


def test_default_kernelspec_name_is_subshell(tmp_path):
    subprocess.run([sys.executable, "-m", "subshell_kernel", "install", "--prefix", str(tmp_path)],
                   check=True, capture_output=True)
    assert (tmp_path / "share/jupyter/kernels/subshell/kernel.json").exists()


def test_config_file_sets_the_backend(tmp_path, monkeypatch):
    (tmp_path / "subshell_kernel_config.json").write_text(
        json.dumps({"SubshellKernel": {"backend": "trio"}})
    )
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    k = KernelHarness("subshell")  # the kernel inherits JUPYTER_CONFIG_DIR
    try:
        reply, _ = k.run(
            "import sniffio, trio\nawait trio.sleep(0)\nsniffio.current_async_library()"
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        info = k.control("kernel_info_request")["content"]
        assert "(trio)" in info["banner"]
    finally:
        k.close()


def test_tornado_is_never_imported(kernel):
    reply, msgs = kernel.run("import sys; print('tornado' in sys.modules)")
    assert kernel.stdout(reply["parent_header"]["msg_id"]) == "False\n"
    assert os.environ.get("JUPYTER_PATH")  # the conftest's private kernelspecs are in use


def test_a_kernel_that_cannot_start_says_why_on_its_stderr(tmp_path):
    """A failure after the boot (here: the profile directory cannot be made) comes
    after fds 1 and 2 were pointed at the kernel's pipes; they are put back first, so
    the traceback reaches the terminal and the process exits non-zero."""
    unusable = tmp_path / "a-file"
    unusable.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "subshell_kernel",
         f"--SubshellKernel.profile_dir={unusable / 'profile'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "NotADirectoryError" in result.stderr or "FileExistsError" in result.stderr, \
        result.stderr[-2000:]
