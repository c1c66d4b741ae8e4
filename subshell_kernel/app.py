"""The command line: run the kernel, or install its kernelspec.

    python -m subshell_kernel -f CONNECTION_FILE [--SubshellKernel.backend=trio]
    python -m subshell_kernel install [--user | --sys-prefix | --prefix P] [--name N]

This module imports nothing of IPython: a kernel boots (``boot.py``: sockets
bound, ``kernel_info`` answered) before ``kernel.py`` and IPython are imported.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from traitlets import Bool, Unicode
from traitlets.config import Application

from . import __version__
from .boot import Boot
from .kernelspec import DEFAULT_NAME, install
from .settings import SubshellKernel


class InstallApp(Application):
    name = "subshell-kernel-install"
    description = "Install the subshell_kernel kernelspec."
    user = Bool(False, config=True, help="Install for the current user only.")
    sys_prefix = Bool(False, config=True, help=f"Install into {sys.prefix}.")
    prefix = Unicode("", config=True, help="Install under this prefix.")
    kernel_name = Unicode(DEFAULT_NAME, config=True, help="Kernelspec name.")
    display_name = Unicode("Python 3 (subshell)", config=True, help="Name shown in frontends.")
    aliases = {
        "name": "InstallApp.kernel_name",
        "display-name": "InstallApp.display_name",
        "prefix": "InstallApp.prefix",
    }
    flags = {
        "user": ({"InstallApp": {"user": True}}, "Install for the current user."),
        "sys-prefix": ({"InstallApp": {"sys_prefix": True}}, "Install into sys.prefix."),
    }

    def start(self) -> None:
        prefix = sys.prefix if self.sys_prefix else (self.prefix or None)
        path = install(self.kernel_name, self.display_name, user=self.user, prefix=prefix)
        print(f"Installed kernelspec {self.kernel_name} in {path}")


class SubshellKernelApp(Application):
    name = "subshell-kernel"
    version = __version__
    description = "A Jupyter kernel for Python on AnyIO, with kernel subshells."
    classes = [SubshellKernel]
    connection_file = Unicode("", config=True, help="The JSON connection file.")
    aliases = {
        "f": "SubshellKernelApp.connection_file",
        "profile-dir": "SubshellKernel.profile_dir",
    }
    subcommands = {"install": (InstallApp, InstallApp.description)}

    def initialize(self, argv=None) -> None:
        super().initialize(argv)
        if self.subapp is None:
            self._load_jupyter_config()

    def _load_jupyter_config(self) -> None:
        """``subshell_kernel_config.{py,json}`` from the Jupyter config path, as Jupyter apps do.

        Command-line options win over the files.
        """
        from jupyter_core.paths import jupyter_config_path

        cli = self.cli_config
        for path in reversed(jupyter_config_path()):
            self.load_config_file("subshell_kernel_config", path=path)
        self.update_config(cli)

    def start(self) -> None:
        if self.subapp is not None:
            return self.subapp.start()
        self._connection_path = None
        connection = self._load_connection()
        settings = SubshellKernel(
            parent=self, connection_file=str(self._connection_path or self.connection_file))
        boot = Boot(connection, settings, write_connection_to=self._connection_path)
        boot.start()
        # Deliberately late (tests/test_structure.py allows this one): IPython takes
        # most of startup, and kernel_info is answered while it loads.
        from .kernel import Kernel

        Kernel(boot, parent=self).start()

    def _load_connection(self) -> dict:
        path = Path(self.connection_file) if self.connection_file else None
        if path is not None and path.exists():
            return json.loads(path.read_text())
        # no file: bind free ports and write one (readable by the user only) once bound
        self._connection_path = path or Path(f"kernel-{os.getpid()}.json")
        return {"transport": "tcp", "ip": "127.0.0.1", "key": os.urandom(16).hex(),
                "signature_scheme": "hmac-sha256"}


def main() -> None:
    SubshellKernelApp.launch_instance()
