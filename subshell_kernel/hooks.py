"""Every change the kernel makes to the interpreter, installed and undone here.

A kernel has to change process-wide state: where ``print`` goes, what
``input()`` does, what the SIGINT handler is.  All of it is done by
``InterpreterHooks``, in this one module, so a reader sees at once what the
kernel changes and a test can undo it all (``uninstall``) and find the
interpreter as it was.  The implementations live with their concern; this
module only puts them in place:

=====================================  ==============================================
``sys.stdout``, ``sys.stderr``         ``runtime.streams.OutStream``: output goes to
                                       the request that wrote it; ``fileno()`` is a
                                       copy of fd 1 or 2, closed at uninstall
fds 1 and 2                            pipes the iopub thread reads: output of C code
                                       and subprocesses (``redirect_fds``)
logging handlers on fd 2               moved to a copy of the original fd 2, and the
                                       kernel's own log goes there (never to a frontend)
``threading.Thread.start``             remembers the request that started the thread
                                       (``runtime.context.start_with_parent``)
``time.sleep``                         ends at once on interrupt in a child subshell
                                       (``runtime.subshell.interruptible_sleep``)
``builtins.input``, ``getpass.getpass``  ask the frontend (``adapter.stdin``)
``comm.create_comm``,                  the kernel's comms (``adapter.comms``)
``comm.get_comm_manager``
``sys.displayhook``, ``get_ipython``,  IPython's, installed once rather than around
``exit``, ``quit`` builtins            each cell (cells overlap on several threads)
``sys.setswitchinterval``              subshells stay responsive beside CPU-bound code
                                       (set first by ``boot``, before IPython loads)
``os.register_at_fork``                in a child forked from the kernel, ``sys.stdout``
                                       and ``sys.stderr`` write to fds 1 and 2 (it
                                       cannot be unregistered: uninstall disarms it)
SIGINT, SIGTERM handlers               interrupt, shutdown; both are blocked in every
                                       thread the kernel starts (``boot`` blocks them
                                       before it starts one; ``unblock_signals``)
``os.environ``                         what libraries and terminal tools read to
                                       recognise a notebook (``TERM``, ``FORCE_COLOR``,
                                       ``MPLBACKEND``, ``PLOTLY_RENDERER``, ...:
                                       ``adapter.recognition.ENVIRONMENT``)
``sys.path``                           ``''`` (the current directory, wherever
                                       ``os.chdir`` goes) before site-packages, in
                                       place of the launch directory ``-m`` put first
``sys.meta_path``                      ``adapter.imports.ImportWatch``: code around the
                                       import of ``tqdm.autonotebook`` and ``pdb``
``pdb.Pdb``, ``pdb.set_trace``         once ``pdb`` is imported: the kernel's debugger,
                                       which an interrupt ends (``adapter.debugging``)
``warnings`` filters                   trio's warning that its wakeup fd replaced the
                                       main loop's: for the length of a cell that
                                       ``%autoawait trio`` runs, it does, and puts the
                                       old one back (``adapter.autoawait``)
``signal.set_wakeup_fd``               while a GUI loop hosts the parent's loop: the
                                       waker's socket, so a signal wakes Qt or Tk at
                                       once (``wake_on_signals``, undone when the GUI
                                       is turned off)
the handler of ``main_pause.SIGNAL``   parks the main thread at a safe point while a
(a real-time signal)                   figure comm handler runs on a child subshell
                                       (``runtime.main_pause``)
the collector's permanent generation  every object that exists once the kernel is
                                       built (``gc.freeze``, ``freeze_startup_objects``);
                                       ``gc.get_objects`` and ``gc.get_referrers``
                                       first thaw it for good.  Uninstall puts those
                                       two back and leaves the rest frozen, so the
                                       process exits without collecting it
debugpy (pydevd), from the first       the trace function of every thread but the
debug session on (``start_debugpy``)   kernel's own, ``threading.settrace``,
                                       ``_thread.start_new_thread``, ``sys.settrace``
                                       (pydevd's patches; undone by its ``stoptrace``)
                                       and ``PYDEVD_DISABLE_FILE_VALIDATION``
=====================================  ==============================================

IPython itself, when the kernel creates its shell, also puts its user
namespace in ``sys.modules["__main__"]`` and registers an ``atexit`` handler;
those are IPython's and stay.
"""

from __future__ import annotations

import builtins
import functools
import gc
import getpass
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import comm

from .adapter import autoawait, debugging, recognition
from .adapter.debugpy_server import PYDEVD_ENVIRONMENT, DebugServer
from .adapter.imports import ImportWatch, is_initializing
from .boot import KERNEL_SIGNALS
from .runtime.context import start_with_parent
from .runtime.main_pause import SIGNAL as PAUSE_SIGNAL
from .runtime.main_pause import MainPause
from .runtime.streams import OutStream, StreamRouter
from .runtime.subshell import interruptible_sleep

_PACKAGE = __name__.rpartition(".")[0]
#: the ``gc`` functions that list what the collector tracks: frozen objects are not in
#: their answers, so each thaws them first (``freeze_startup_objects``)
GC_VIEWS = ("get_objects", "get_referrers")


class InterpreterHooks:
    def __init__(self, undo_first: list[Callable[[], None]] = ()) -> None:
        #: ``undo_first``: what ``boot`` changed before IPython loaded, undone last
        self._undo: list[Callable[[], None]] = list(undo_first)
        #: where the kernel's own log goes: fd 2 as it was before ``redirect_fds``
        self.original_stderr = sys.__stderr__

    def _set(self, owner: Any, name: str, value: Any) -> None:
        old = getattr(owner, name)
        setattr(owner, name, value)
        self._undo.append(lambda: setattr(owner, name, old))

    # -- before the kernel starts its threads ----------------------------------------
    def unblock_signals(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, KERNEL_SIGNALS)

    def redirect_fds(self) -> dict[str, int]:
        """Point fds 1 and 2 at pipes; returns their read ends by stream name.

        Logging handlers that wrote to the original stderr or stdout keep
        writing there (through a copy of the original fd 2).
        """
        pipes: dict[str, int] = {}
        originals: dict[int, int] = {}
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            originals[fd] = os.dup(fd)
            os.dup2(write_end, fd)
            os.close(write_end)
            pipes[name] = read_end

        def restore() -> None:
            for fd, original in originals.items():
                os.dup2(original, fd)
                os.close(original)

        self._undo.append(restore)
        stream = os.fdopen(originals[2], "w", buffering=1, closefd=False)
        self.original_stderr = stream
        for logger in (logging.getLogger(), *logging.Logger.manager.loggerDict.values()):
            for handler in getattr(logger, "handlers", ()):
                if getattr(handler, "stream", None) in (sys.__stderr__, sys.__stdout__):
                    old = handler.setStream(stream)
                    self._undo.append(lambda h=handler, old=old: h.setStream(old))
        return pipes

    def log_to_original_stderr(self) -> None:
        """The kernel's own log goes to the terminal that started it, never to a frontend.

        Without a handler, records would reach ``logging.lastResort``, which
        writes to ``sys.stderr``: the OutStream of whatever request is current.
        """
        package_log = logging.getLogger(_PACKAGE)
        if package_log.handlers:
            return
        handler = logging.StreamHandler(self.original_stderr)
        handler.setFormatter(logging.Formatter("[subshell_kernel] %(levelname)s | %(message)s"))
        level, propagate = package_log.level, package_log.propagate
        package_log.addHandler(handler)
        package_log.setLevel(logging.WARNING)
        package_log.propagate = False

        def undo() -> None:
            package_log.removeHandler(handler)
            package_log.setLevel(level)
            package_log.propagate = propagate

        self._undo.append(undo)

    # -- the rest, once the kernel's parts exist --------------------------------------
    def install(
        self,
        *,
        streams: StreamRouter,
        input: Callable[..., str],
        getpass_: Callable[..., str],
        comm_class: type,
        comm_manager: Any,
        shell: Any,
        switch_interval: float,
        on_sigint: Callable,
        on_sigterm: Callable,
        main_pause: MainPause,
    ) -> None:
        outs: list[OutStream] = []
        for fd, name in ((1, "stdout"), (2, "stderr")):
            copy = os.dup(fd)  # what fileno() gives (runtime.streams)
            self._undo.append(lambda copy=copy: os.close(copy))
            outs.append(OutStream(name, streams, copy))
            self._set(sys, name, outs[-1])
        # (a fork handler cannot be unregistered: uninstall empties what it acts on)
        os.register_at_fork(after_in_child=lambda: [out.forked() for out in outs])
        self._undo.append(outs.clear)
        self._set(threading.Thread, "start", start_with_parent(threading.Thread.start))
        self._set(time, "sleep", interruptible_sleep)
        self._set(builtins, "input", input)
        self._set(getpass, "getpass", getpass_)
        self._set(comm, "create_comm", comm_class)
        self._set(comm, "get_comm_manager", lambda: comm_manager)
        shell.builtin_trap.activate()
        self._undo.append(shell.builtin_trap.deactivate)
        self._set(sys, "displayhook", shell.displayhook)
        old_interval = sys.getswitchinterval()
        sys.setswitchinterval(switch_interval)
        self._undo.append(lambda: sys.setswitchinterval(old_interval))
        for signum, handler in ((signal.SIGINT, on_sigint), (signal.SIGTERM, on_sigterm)):
            old = signal.signal(signum, handler)
            self._undo.append(lambda signum=signum, old=old: signal.signal(signum, old))
        old_pause = signal.signal(PAUSE_SIGNAL, main_pause.on_signal)
        self._undo.append(lambda: signal.signal(PAUSE_SIGNAL, old_pause))
        main_pause.enable()
        self._undo.append(main_pause.disable)  # undone first: no pause signals a default handler
        for name, (value, replace) in recognition.ENVIRONMENT.items():
            if replace or name not in os.environ:
                self._set_env(name, value)
        self._put_cwd_on_path()
        filters = warnings.filters[:]
        warnings.filterwarnings("ignore", message=autoawait.TRIO_WAKEUP_WARNING,
                                category=RuntimeWarning)
        self._undo.append(lambda: warnings.filters.__setitem__(slice(None), filters))
        watch = ImportWatch({
            "tqdm.autonotebook": recognition.tqdm_sees_a_kernel,
            "pdb": self._then_patch_pdb,
            "IPython.core.debugger": self._then_patch_pdb,
        })
        sys.meta_path.insert(0, watch)
        self._undo.append(lambda: sys.meta_path.remove(watch))
        self._patch_pdb()

    def freeze_startup_objects(self) -> None:
        """Move every object the collector tracks now (the standard library, IPython, the
        kernel's own, ~37,000 once built) to its permanent generation (``gc.freeze``).

        A full collection then walks only what user code made: 0.1 ms instead of 30 ms
        in an idle kernel.  So does the interpreter's finalization: the process exits
        25-50 ms after a ``shutdown_request`` instead of 150-270 ms, which is what a
        kernel restart waits for.  User objects are made later and stay collectable:
        what a cell or a user module leaves open is flushed at exit as before.

        Frozen objects are missing from what ``gc.get_objects`` and ``gc.get_referrers``
        return (the user namespace would not show as a referrer in objgraph or the
        debugger), so the first call to either thaws them for good, and the interpreter
        is from then on what it would have been (a ``gc.freeze`` of user code's own,
        made before that first call, is thawed with them).  Called once the kernel is
        built, before the parent's loop exists: the loop a GUI replaces stays
        collectable.
        """
        originals = {name: getattr(gc, name) for name in GC_VIEWS}

        def put_views_back() -> None:
            for name, function in originals.items():
                setattr(gc, name, function)

        def thaw() -> None:
            put_views_back()
            gc.unfreeze()

        def thawing_first(function: Callable) -> Callable:
            @functools.wraps(function)
            def view(*args, **kwargs):
                thaw()
                return function(*args, **kwargs)
            return view

        gc.freeze()
        for name, function in originals.items():
            setattr(gc, name, thawing_first(function))
        self._undo.append(put_views_back)

    def _set_env(self, name: str, value: str) -> None:
        old = os.environ.get(name)
        os.environ[name] = value
        self._undo.append(lambda: os.environ.__setitem__(name, old) if old is not None
                          else os.environ.pop(name, None))

    def _put_cwd_on_path(self) -> None:
        """``''`` on ``sys.path``, as IPython puts it: before site-packages, so a module
        beside the notebook imports (also after ``os.chdir``) and the standard library
        is not shadowed.  ``python -m`` put the launch directory first; it goes."""
        old = list(sys.path)
        if sys.path and sys.path[0] == os.getcwd():
            del sys.path[0]
        if "" not in sys.path and not sys.flags.safe_path:
            site = [i for i, p in enumerate(sys.path)
                    if os.path.basename(p) in ("site-packages", "dist-packages")]
            sys.path.insert(site[0] if site else 0, "")
        self._undo.append(lambda: sys.path.__setitem__(slice(None), old))

    @contextmanager
    def _then_patch_pdb(self, module):
        yield
        self._patch_pdb()

    def _patch_pdb(self) -> None:
        """``pdb.Pdb`` and ``pdb.set_trace`` become the kernel's, once ``pdb`` is imported
        and IPython's debugger (which imports ``pdb``) is not half-way through its own
        import: the one that finishes last patches."""
        pdb = sys.modules.get("pdb")
        if pdb is None or getattr(pdb, "set_trace", None) is debugging.set_trace:
            return
        if is_initializing(sys.modules.get("IPython.core.debugger")) and not hasattr(
            sys.modules["IPython.core.debugger"], "InterruptiblePdb"
        ):
            return  # IPython's debugger is importing pdb: patched when it is done
        self._set(pdb, "set_trace", debugging.set_trace)  # first: a re-entry returns above
        self._set(pdb, "Pdb", debugging.kernel_pdb_class())

    def wake_on_signals(self, fd: int) -> Callable[[], None]:
        """Make every signal write a byte to ``fd`` (``signal.set_wakeup_fd``), so the
        loop watching it wakes and the signal's Python handler runs at once (main
        thread only).  Returns the undo; ``uninstall`` runs it too if still due."""
        old = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        done = False

        def undo() -> None:
            nonlocal done
            if not done:
                done = True
                signal.set_wakeup_fd(old)

        self._undo.append(undo)
        return undo

    def start_debugpy(self) -> DebugServer:
        """Start debugpy's in-process server (the first debug session asks for it, on the
        control thread): from then on every thread but the kernel's own is traced."""
        for name, value in PYDEVD_ENVIRONMENT.items():
            if name not in os.environ:
                os.environ[name] = value
                self._undo.append(lambda name=name: os.environ.pop(name, None))
        server = DebugServer.start()
        self._undo.append(server.stop)
        return server

    def uninstall(self) -> None:
        """Undo every hook, the last installed first (idempotent)."""
        while self._undo:
            self._undo.pop()()
        self.original_stderr = sys.__stderr__
