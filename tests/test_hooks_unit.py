"""``hooks.InterpreterHooks``: every process-wide change the kernel makes, and its undo.

Installs all hooks in this (pytest) process with stand-in collaborators,
checks each one took effect, uninstalls, and checks the interpreter is back
exactly as it was.
"""

from __future__ import annotations

import builtins
import getpass
import logging
import os
import signal
import sys
import threading
import time
from types import SimpleNamespace

import comm

from subshell_kernel.hooks import InterpreterHooks
from subshell_kernel.runtime.main_pause import SIGNAL as PAUSE_SIGNAL
from subshell_kernel.runtime.main_pause import MainPause
from subshell_kernel.runtime.streams import StreamRouter


class FakeBuiltinTrap:
    """What IPython's ``BuiltinTrap`` does that matters here: add builtins, remove them."""

    def activate(self) -> None:
        builtins.get_ipython = lambda: "the shell"

    def deactivate(self) -> None:
        del builtins.get_ipython


def snapshot() -> dict[str, object]:
    def fd_identity(fd: int) -> tuple[int, int]:
        st = os.fstat(fd)
        return st.st_dev, st.st_ino

    handlers = [(h, getattr(h, "stream", None))
                for lg in (logging.getLogger(), *logging.Logger.manager.loggerDict.values())
                for h in getattr(lg, "handlers", ())]
    package_log = logging.getLogger("subshell_kernel")
    return {
        "sys.stdout": sys.stdout,
        "sys.stderr": sys.stderr,
        "fd 1": fd_identity(1),
        "fd 2": fd_identity(2),
        "Thread.start": threading.Thread.start,
        "time.sleep": time.sleep,
        "input": builtins.input,
        "getpass": getpass.getpass,
        "comm.create_comm": comm.create_comm,
        "comm.get_comm_manager": comm.get_comm_manager,
        "sys.displayhook": sys.displayhook,
        "get_ipython": getattr(builtins, "get_ipython", None),
        "switch interval": sys.getswitchinterval(),
        "SIGINT": signal.getsignal(signal.SIGINT),
        "SIGTERM": signal.getsignal(signal.SIGTERM),
        "pause signal": signal.getsignal(PAUSE_SIGNAL),
        "signal mask": signal.pthread_sigmask(signal.SIG_BLOCK, []),
        "MPLBACKEND": os.environ.get("MPLBACKEND"),
        "logging handlers": handlers,
        "kernel log": (list(package_log.handlers), package_log.level, package_log.propagate),
    }


def test_install_then_uninstall_leaves_the_interpreter_as_it_was(monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)
    stray = logging.StreamHandler(sys.__stderr__)  # a library's handler on the real stderr
    logging.getLogger("some.library").addHandler(stray)
    try:
        before = snapshot()
        hooks = InterpreterHooks()
        hooks.block_signals()
        pipes = hooks.redirect_fds()
        hooks.log_to_original_stderr()
        hooks.install(
            streams=StreamRouter(lambda *a, **k: None, lambda: None),
            input=lambda prompt="": "", getpass_=lambda prompt="": "",
            comm_class=type("C", (), {}), comm_manager=object(),
            shell=SimpleNamespace(builtin_trap=FakeBuiltinTrap(), displayhook=lambda v: None),
            switch_interval=0.0042, on_sigint=lambda s, f: None, on_sigterm=lambda s, f: None,
            main_pause=MainPause(()),
        )
        during = snapshot()
        hooks.unblock_signals()
        hooks.uninstall()
        after = snapshot()
        hooks.uninstall()  # idempotent
        for fd in pipes.values():
            os.close(fd)
    finally:
        logging.getLogger("some.library").removeHandler(stray)

    unchanged = [k for k in before if during[k] == before[k]]
    assert unchanged == [], f"install did not change: {unchanged}"
    assert {k: after[k] for k in before if after[k] != before[k]} == {}
    assert stray.stream is sys.__stderr__
