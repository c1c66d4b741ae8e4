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
import pdb
import signal
import socket
import sys
import threading
import time
import warnings
from types import SimpleNamespace

import comm

from subshell_kernel.adapter import recognition
from subshell_kernel.boot import change_interpreter
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
        **{f"${name}": os.environ.get(name) for name in recognition.ENVIRONMENT},
        "sys.path": list(sys.path),
        "sys.meta_path": list(sys.meta_path),
        "pdb.Pdb": pdb.Pdb,
        "pdb.set_trace": pdb.set_trace,
        "warnings filters": list(warnings.filters),
        "MPLBACKEND": os.environ.get("MPLBACKEND"),
        "wakeup fd": _wakeup_fd(),
        "logging handlers": handlers,
        "kernel log": (list(package_log.handlers), package_log.level, package_log.propagate),
    }


def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def _wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def test_install_then_uninstall_leaves_the_interpreter_as_it_was(monkeypatch):
    for name, (value, replace) in recognition.ENVIRONMENT.items():
        if replace:  # set to something else: install must change it, uninstall put it back
            monkeypatch.setenv(name, value + "-before")
        else:
            monkeypatch.delenv(name, raising=False)
    if sys.path[0] != os.getcwd():  # as ``python -m`` leaves it
        monkeypatch.setattr(sys, "path", [os.getcwd(), *sys.path])
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != ""])
    stray = logging.StreamHandler(sys.__stderr__)  # a library's handler on the real stderr
    logging.getLogger("some.library").addHandler(stray)
    fds_before = open_fds()
    waker_read, waker = socket.socketpair()  # what a GUI loop watches (runtime.guests.Waker)
    waker.setblocking(False)
    try:
        before = snapshot()
        hooks = InterpreterHooks(undo_first=change_interpreter(0.0042))
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
        hooks.wake_on_signals(waker.fileno())  # left in place: uninstall undoes it
        during = snapshot()
        hooks.unblock_signals()
        hooks.uninstall()
        after = snapshot()
        hooks.uninstall()  # idempotent
        for fd in pipes.values():
            os.close(fd)
    finally:
        logging.getLogger("some.library").removeHandler(stray)
        waker.close()
        waker_read.close()

    # the copies fileno() gave are closed again, and nothing of the process's is: fds that
    # other threads close meanwhile (zmq's reaper, after an earlier test's kernel client)
    # may be gone, none may be new
    assert set(open_fds()) - set(fds_before) == set()
    assert {"0", "1", "2"} <= set(open_fds())
    unchanged = [k for k in before if during[k] == before[k]]
    assert unchanged == [], f"install did not change: {unchanged}"
    assert {k: after[k] for k in before if after[k] != before[k]} == {}
    assert stray.stream is sys.__stderr__


def test_wake_on_signals_undo_restores_the_previous_fd_once():
    """A GUI turned off undoes its wake-up fd at once; a later uninstall leaves alone
    what was set since (a native loop's own, for instance)."""
    read_end, write_end = socket.socketpair()
    write_end.setblocking(False)
    hooks = InterpreterHooks()
    try:
        before = _wakeup_fd()
        undo = hooks.wake_on_signals(write_end.fileno())
        assert _wakeup_fd() == write_end.fileno()
        undo()
        assert _wakeup_fd() == before
        other_read, other = socket.socketpair()
        other.setblocking(False)
        signal.set_wakeup_fd(other.fileno())
        hooks.uninstall()  # the undo already ran: it must not run again
        assert _wakeup_fd() == other.fileno()
        signal.set_wakeup_fd(before)
        other.close()
        other_read.close()
    finally:
        read_end.close()
        write_end.close()
