"""Writing the kernelspec (``python -m subshell_kernel install``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .adapter.debugpy_server import debugpy_available
from .core.protocol import PROTOCOL_VERSION

DEFAULT_NAME = "subshell"


def kernel_json(display_name: str = "Python 3 (subshell)", python: str | None = None) -> dict:
    return {
        "argv": [python or sys.executable, "-m", "subshell_kernel", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "kernel_protocol_version": PROTOCOL_VERSION,
        # JupyterLab shows its debugger for a kernel whose spec says so
        "metadata": {"debugger": debugpy_available(), "supported_encryption": ["curve"]},
    }


def install(
    name: str = DEFAULT_NAME,
    display_name: str = "Python 3 (subshell)",
    user: bool = False,
    prefix: str | None = None,
) -> str:
    """Install the kernelspec; returns the directory it was written to."""
    return install_spec(kernel_json(display_name), name, user=user, prefix=prefix)


def install_spec(spec: dict, name: str, user: bool = False, prefix: str | None = None) -> str:
    """Install ``spec`` as the kernelspec ``name``; returns its directory."""
    import tempfile  # not at import either: the kernel imports this module before its first reply

    from jupyter_client.kernelspec import KernelSpecManager  # not at import: it loads Tornado

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=1))
        return KernelSpecManager().install_kernel_spec(
            tmp, kernel_name=name, user=user, prefix=prefix
        )
