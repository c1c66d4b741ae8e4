"""The kernel: builds the parts, hands each the collaborators it uses, runs until shutdown.

``boot.Boot`` has bound the sockets and answers ``kernel_info`` already; the
kernel imports IPython, builds the rest and opens the router and control
thread to every request once the parent's loop runs.

Threads (the map in docs/architecture.md says what each waits in):

    main           the parent subshell's AnyIO loop (uvloop if installed), or with
                   ``%gui qt|tk`` the GUI loop hosting it (``runtime.mainloop``); SIGINT, SIGTERM
    shell-router   the only reader of the shell and stdin sockets
    control        owns the control socket
    iopub          an AnyIO loop whose task group runs the flush timer, the fd 1 and
                   fd 2 readers and the XPUB subscriptions; publishers send in place
    heartbeat      echoes pings with zmq.proxy, in C
    subshell-<id>  one child subshell each (AnyIO loop)
    parent-watch   only when launched by jupyter_client: exits if the launcher died
    exit-watchdog  from a shutdown request on: ends the process if shutdown hangs
    (trio I/O)     only on trio with a GUI on: trio's guest mode waits for I/O there
    (a timer)      0.2 s after an interrupt of an ``await`` cell, escalates if the
                   loop is blocked (``Subshell.interrupt``)
    debugpy-reader from the first debug session on: reads debugpy's DAP messages and
                   publishes its events; with debugpy's own threads (``pydevd.*``)

Every thread but the main thread and the subshells' is the kernel's own and is
never traced by a debugger (``transport/kernel_threads.py``).

Nothing below the kernel imports it: the parts get what they use (the
``Channels``, the registry, a dispatch table, callables) when they are built.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from IPython.core.profiledir import ProfileDir
from traitlets.config import LoggingConfigurable

from . import __version__
from .adapter import recognition
from .adapter.cells import CellCompiler
from .adapter.comms import FIGURE_MODULES, KernelCommManager, comm_class
from .adapter.debugger import Debugger
from .adapter.handlers import ShellHandlers
from .adapter.recognition import ZMQInteractiveShell
from .adapter.shell import SubshellState
from .adapter.stdin import Stdin
from .boot import Boot
from .hooks import InterpreterHooks
from .runtime.comm_dispatch import CommDispatch
from .runtime.kernel_requests import KernelRequests
from .runtime.main_pause import LOCK_HOLDERS, MainPause
from .runtime.mainloop import MainLoop
from .runtime.registry import Subshells
from .runtime.streams import StreamRouter
from .runtime.subshell import Subshell
from .transport.kernel_threads import kernel_thread, mark_untraced

log = logging.getLogger(__name__)

#: exit status when the shutdown watchdog had to end the process
WATCHDOG_EXIT_STATUS = 3


class Kernel(LoggingConfigurable):
    """A Jupyter kernel for Python on AnyIO, with subshells (JEP 91)."""

    def __init__(self, boot: Boot, **kwargs):
        super().__init__(**kwargs)
        self.boot = boot
        self.settings = settings = boot.settings
        self.backend = settings.backend
        self.connection = boot.connection
        self.connection_file = settings.connection_file
        self.iopub, self.streams, self.channels = boot.iopub, boot.streams, boot.channels
        self.router, self.control = boot.router, boot.control
        self.kernel_info = boot.kernel_info
        self.hooks = InterpreterHooks(undo_first=boot.undo)
        self._shutdown_answered = threading.Event()
        self._shutting_down = False
        self._stopped_children: list[Subshell] = []
        self._exited = threading.Event()

    # -- startup ----------------------------------------------------------------------
    def _loop_options(self, parent: bool) -> dict[str, Any]:
        """``anyio.run`` options for a subshell's loop (``parent``: the main thread's)."""
        if parent and self.backend == "asyncio" and self.settings.use_uvloop:
            try:
                import uvloop  # noqa: F401  (optional: only its presence is checked)
            except ImportError:
                return {}
            return {"use_uvloop": True}
        return {}

    def start(self) -> None:
        """Build the rest around ``boot``'s parts; run on the main thread until shutdown."""
        try:
            self._build()
        except BaseException:
            # fds 1 and 2 back from their pipes, so that the traceback reaches the terminal
            self.hooks.uninstall()
            raise
        if os.environ.get("JPY_PARENT_PID"):
            kernel_thread(self._exit_with_launcher, "parent-watch").start()
        try:
            self.subshells.parent.run(on_ready=self._open)
        finally:
            self._cleanup()

    def _build(self) -> None:
        boot, hooks, settings = self.boot, self.hooks, self.settings
        iopub, streams, channels = self.iopub, self.streams, self.channels
        fd_pipes = hooks.redirect_fds() if settings.capture_fd_output else {}
        hooks.log_to_original_stderr()
        outbox = boot.outbox
        self.stdin = Stdin(channels, streams.flush)
        self.shell = self._make_shell(streams)
        self.comm_manager = KernelCommManager()
        self.comm_dispatch = CommDispatch(self.comm_manager.owner_of)
        self.main_pause = MainPause(FIGURE_MODULES + LOCK_HOLDERS)
        self.subshells = subshells = Subshells(self._new_child, self.comm_dispatch)
        requests = KernelRequests(subshells, self.kernel_info, self.request_shutdown,
                                  streams.publish, boot.ports)
        self.handlers = ShellHandlers(self.shell, self.comm_manager, streams,
                                      requests.shell_table(), self.main_pause)
        self._outbox = outbox
        self.debugger = Debugger(self.shell, iopub.publish, hooks.start_debugpy)
        self.main_loop = MainLoop(self.backend, self._loop_options(parent=True),
                                  hooks.wake_on_signals)
        self.shell.main_loop = self.main_loop
        subshells.parent = Subshell(
            None, self.shell.parent_state, self.handlers.table, outbox, self.backend,
            self._loop_options(parent=True), interrupt_main=subshells.interrupt_main_thread,
            main_loop=self.main_loop, on_comm_done=self.comm_dispatch.done,
            before_raise=self.debugger.release,
        )
        self._control_table = {**requests.control_table(), "debug_request": self.debugger.handle}
        hooks.install(
            streams=streams, input=self.stdin.input, getpass_=self.stdin.getpass,
            comm_class=comm_class(streams, subshells.cells_running),
            comm_manager=self.comm_manager, shell=self.shell,
            switch_interval=settings.switch_interval, on_sigint=subshells.on_sigint,
            on_sigterm=self._on_sigterm, main_pause=self.main_pause,
        )
        if fd_pipes:
            iopub.forward_fds(fd_pipes, streams.write_fd_output)
        hooks.freeze_startup_objects()  # last: everything so far is the kernel's

    def _make_shell(self, streams: StreamRouter) -> ZMQInteractiveShell:
        options: dict[str, Any] = {}
        if self.settings.profile_dir:
            options["profile_dir"] = ProfileDir.create_profile_dir(self.settings.profile_dir)
        # every cell is named by the hash of its source, debugger or not (adapter/cells.py)
        shell = ZMQInteractiveShell.instance(parent=self, compiler_class=CellCompiler,
                                             **options)
        save_thread = getattr(shell.history_manager, "save_thread", None)
        if save_thread is not None:  # IPython's history writer: never stopped by a debugger
            mark_untraced(save_thread)
        shell.output = streams
        shell.kernel = self
        shell.loop_runner = self.backend  # %autoawait names the kernel's own loop
        recognition.describe_kernel(shell, self.connection_file,
                                    os.environ.get("JPY_SESSION_NAME"))
        shell.set_hook("show_in_pager",
                       lambda sh, data, start=0, screen_lines=0: sh._page(data, start))
        return shell

    def _new_child(self, subshell_id: str) -> Subshell:
        return Subshell(subshell_id, SubshellState(self.shell), self.handlers.table, self._outbox,
                        self.backend, self._loop_options(parent=False),
                        on_comm_done=self.comm_dispatch.done,
                        before_raise=self.debugger.release)

    def _open(self) -> None:
        """The parent's loop runs: hand every request on from now on (held ones first)."""
        self.router.open(self.subshells.deliver, self.stdin.on_reply)
        self.control.open(self._control_table, on_quiet=self.warm_up,
                          on_answered=self._on_control_answered)
        log.info("subshell_kernel %s ready (%s backend)", __version__, self.backend)
        self.hooks.unblock_signals()

    def warm_up(self) -> None:
        """Format one traceback off the hot path: IPython loads its formatter lazily,
        which made the first error or interrupt of a session ~40 ms slower.  Not once
        shutting down: the interrupted cells' tracebacks would wait for the GIL."""
        if self._shutting_down:
            return
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.shell.InteractiveTB.structured_traceback(*sys.exc_info())

    # -- used by libraries (``get_ipython().kernel``: adapter/recognition.py) ------------
    def get_parent(self, channel: str | None = None) -> dict[str, Any]:
        """The request being handled, as ipykernel returns it (ipywidgets' Output uses it)."""
        return recognition.kernel_parent(self.shell, self.control, channel)

    @property
    def _parent_ident(self) -> dict[str, list[bytes]]:
        """ipykernel's private name, which JupyterLab extensions still read."""
        return recognition.parent_idents(self.control)

    @property
    def language_info(self) -> dict[str, Any]:
        return self.kernel_info()["language_info"]

    # -- shutdown -----------------------------------------------------------------------
    def request_shutdown(self, restart: bool = False, answered_on_control: bool = False) -> None:
        """Stop every subshell without waiting; the process exits within 2 s.

        A shutdown request's reply is sent after this returns: on control, the
        control thread says so (``_on_control_answered``); on shell, the subshell
        that handles it sends it before it stops, and ``_cleanup`` joins it.
        """
        if self._shutting_down:
            return
        self._shutting_down = True
        if not answered_on_control:
            self._shutdown_answered.set()
        self._shutdown_deadline = time.monotonic() + 1.8
        self._stopped_children = self.subshells.stop_children()
        kernel_thread(self._exit_watchdog, "exit-watchdog").start()
        self.subshells.parent.stop()  # last: from a signal handler it may raise KeyboardInterrupt

    def _on_control_answered(self, msg) -> None:
        if msg.msg_type == "shutdown_request" and self._shutting_down:
            self._shutdown_answered.set()  # the main thread may close the sockets now

    def _on_sigterm(self, signum, frame) -> None:
        self.request_shutdown()

    def _exit_with_launcher(self) -> None:
        """Shut down when the process that launched us (a jupyter_client, which sets
        JPY_PARENT_PID) dies without shutting us down: an orphaned kernel would
        otherwise run forever.  Checked once a second, off every hot path."""
        launcher = self.boot.launcher_pid  # read at the boot: it may have died since
        while os.getppid() == launcher:
            if self._exited.wait(1.0):
                return
        log.warning("the process that launched this kernel is gone; shutting down")
        self.request_shutdown()

    def _exit_watchdog(self) -> None:
        """However stuck a thread is (a C call, a socket), exit by the deadline, and say so:
        a shutdown that needed the watchdog is not a clean one."""
        self._exited.wait(max(0.0, self._shutdown_deadline - time.monotonic()))
        if not self._exited.is_set():
            log.error("shutdown did not complete within 1.8 s; the watchdog ends the process "
                      "(exit status %d)", WATCHDOG_EXIT_STATUS)
            os._exit(WATCHDOG_EXIT_STATUS)

    def _cleanup(self) -> None:
        """Main thread, after the parent subshell's loop ended: close in owner order."""
        self._shutdown_answered.wait(1.0)
        self.main_loop.close()  # the GUI loop has ended with the parent's: close its windows
        deadline = time.monotonic() + 0.8
        for sub in self._stopped_children:
            if sub.join(max(0.0, deadline - time.monotonic())):
                sub.state.close()  # here, not on its thread: finalization must not race SQLite
        self.router.stop(1.0)
        self.debugger.close()
        self.comm_manager.close_all_quietly()
        # fds 1 and 2 back first: nothing new goes into the pipes; debugpy stops, if it ran
        self.hooks.uninstall()
        self.iopub.stop(1.0)  # forwards what the pipes hold, flushes, closes the socket
        # every socket is closed by its owner thread (control and heartbeat on ETERM)
        self.boot.context.term()
        self._exited.set()

