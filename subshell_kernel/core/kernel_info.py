"""The ``kernel_info_reply`` content, built in one place for shell and control."""

from __future__ import annotations

import sys
from typing import Any

from .protocol import PROTOCOL_VERSION


def kernel_info_content(
    implementation_version: str, backend: str, supported_features: list[str], debugger: bool
) -> dict[str, Any]:
    python = sys.version.split()[0]  # platform.python_version()'s text, without its import
    return {
        "status": "ok",
        "protocol_version": PROTOCOL_VERSION,
        "implementation": "subshell_kernel",
        "implementation_version": implementation_version,
        "language_info": {
            "name": "python",
            "version": python,
            "mimetype": "text/x-python",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "pygments_lexer": "ipython3",
            "nbconvert_exporter": "python",
            "file_extension": ".py",
        },
        "banner": f"Python {sys.version.split()[0]} on subshell_kernel {implementation_version} "
        f"({backend})",
        "help_links": [
            {"text": "Python", "url": "https://docs.python.org/3/"},
            {"text": "IPython", "url": "https://ipython.readthedocs.io/"},
        ],
        "supported_features": list(supported_features),
        "debugger": debugger,
    }
