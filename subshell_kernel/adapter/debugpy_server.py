"""debugpy inside the kernel process: its server, and what the kernel uses of its engine.

debugpy is imported here, on the first debug session, never before (importing
its engine, pydevd, takes 0.1-0.15 s and starting it ~15 MB).  It runs *in
process* (``in_process_debug_adapter=True``): pydevd speaks DAP itself on a
loopback TCP socket, with no adapter subprocess.  Everything here that
reaches past debugpy's public API into pydevd is in this module, each with
its reason:

- **Authentication.**  pydevd's in-process server accepts any local
  connection, and a connection can run code as the kernel's user.  A random
  access token is set as soon as the server exists (pydevd then answers
  nothing but ``pydevdAuthorize`` with that token), and once the kernel is
  connected the listening socket is shut, so no other process can connect
  or take the session over.
- **TCP_NODELAY** on pydevd's end: it writes each message's header and body
  in two sends, and Nagle's algorithm with delayed ACKs held every response
  ~40 ms (a handshake took 131 ms, 3 ms with it).
- **Tracing per session.**  A ``KeyboardInterrupt`` raised while a thread
  is stopped at a breakpoint leaves through pydevd's trace function, which
  makes CPython drop that thread's tracing: the kernel puts it back before
  the thread's next cell.  When a session ends, pydevd would go on tracing
  (every Python call ~10x slower on 3.11): each subshell thread drops its
  trace function before its next cell, and the next ``attach`` traces every
  thread again.
- **DAP thread ids**, and a stopped thread's own state: a stop that ends by
  an exception instead of a ``continue`` would leave it marked suspended (it
  would stop again at the next line it runs: at once on Python 3.12+), so an
  interrupt marks it resumed as it raises (``release``); a resumed thread
  waits up to 0.2 s before it notices (``wake``).

``DebugServer.start`` (called by ``hooks.InterpreterHooks.start_debugpy``)
is the process-wide change; ``stop`` undoes it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import threading
import time

log = logging.getLogger(__name__)

#: environment for pydevd, set (by ``hooks``) before it is imported: with
#: Python's frozen stdlib modules it warns on stderr, once per process, that
#: breakpoints in them may be missed; cells are never frozen
PYDEVD_ENVIRONMENT = {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def debugpy_available() -> bool:
    """Is debugpy installed?  (Found without importing it.)"""
    return importlib.util.find_spec("debugpy") is not None


class DebugServer:
    """debugpy's in-process DAP server, started once per process (``start``)."""

    def __init__(self, host: str, port: int, token: str, py_db) -> None:
        self.host = host
        self.port = port
        self._token = token
        self._py_db = py_db
        self._uses_settrace = None

    @classmethod
    def start(cls, host: str = "127.0.0.1") -> DebugServer:
        """Import debugpy, start tracing every thread but the kernel's own, listen."""
        import debugpy
        import debugpy.server  # noqa: F401  (puts debugpy's own copy of pydevd on sys.path)
        from _pydevd_bundle.pydevd_constants import get_global_debugger

        listen_host, port = debugpy.listen((host, 0), in_process_debug_adapter=True)
        debugpy.trace_this_thread(False)  # listen traced its caller (the control thread)
        py_db = get_global_debugger()
        token = os.urandom(32).hex()  # secrets.token_hex, without its import
        py_db.authentication.access_token = token
        if not port:
            raise RuntimeError(f"debugpy {debugpy.__version__} did not say its port (need 1.8.22+)")
        return cls(listen_host, port, token, py_db)

    def authorization(self) -> dict[str, str]:
        """Arguments of the ``pydevdAuthorize`` request each session starts with."""
        return {"debugServerAccessToken": self._token}

    def accepted(self, timeout: float = 5.0) -> None:
        """After the kernel connected: no delay on pydevd's sends; no more connections."""
        deadline = time.monotonic() + timeout
        while not isinstance(getattr(self._py_db.writer, "sock", None), socket.socket):
            if time.monotonic() > deadline:
                log.warning("debugpy did not take the connection in %.0f s", timeout)
                return
            time.sleep(0.002)
        try:
            self._py_db.writer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            log.info("could not set TCP_NODELAY on debugpy's socket: %s", e)
        self._close_listener()

    def _close_listener(self) -> None:
        waiter = getattr(self._py_db, "_waiting_for_connection_thread", None)
        listener = getattr(waiter, "_server_socket", None)
        if waiter is None or listener is None:
            log.info("debugpy's listening socket was not found; the access token guards it")
            return
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes its accept() (close alone does not)
        except OSError:
            pass
        waiter.do_kill_pydev_thread()

    # -- on a thread that runs user code --------------------------------------------------
    def thread_id(self, thread: threading.Thread | None = None) -> int:
        """The DAP ``threadId`` of a thread (the calling one by default)."""
        from _pydevd_bundle._debug_adapter.pydevd_base_schema import BaseSchema
        from _pydevd_bundle.pydevd_constants import get_current_thread_id

        pydevd_id = get_current_thread_id(thread or threading.current_thread())
        return BaseSchema._translate_id_to_dap(pydevd_id)

    def end_abandoned_stop(self) -> bool:
        """After a cell: if the calling thread left a stop without being resumed, reset
        pydevd's state for it; True if so.

        A stop marks the thread suspended with a pending "step into"; ``continue``
        clears both.  A ``KeyboardInterrupt`` out of the stop leaves them set, and
        the thread would stop again at the first line it runs.
        """
        from _pydevd_bundle.pydevd_additional_thread_info import set_additional_thread_info
        from _pydevd_bundle.pydevd_constants import STATE_SUSPEND
        from _pydevd_bundle.pydevd_thread_lifecycle import internal_run_thread

        thread = threading.current_thread()
        info = getattr(thread, "additional_info", None)
        if info is None or info.pydev_state != STATE_SUSPEND:
            return False
        internal_run_thread(thread, set_additional_thread_info)
        return True

    def release(self, thread_ident: int) -> None:
        """An exception is about to be raised into this thread (any thread may call this,
        a signal handler too): if it is stopped at a breakpoint, mark it resumed and wake
        it, so the exception ends the stop and nothing of the stop is left behind."""
        from _pydevd_bundle.pydevd_additional_thread_info import set_additional_thread_info
        from _pydevd_bundle.pydevd_constants import STATE_SUSPEND, get_current_thread_id
        from _pydevd_bundle.pydevd_thread_lifecycle import internal_run_thread

        # lock-free (``threading.enumerate`` takes a lock the interrupted thread may hold)
        thread = threading._active.get(thread_ident)
        info = getattr(thread, "additional_info", None)
        if info is None or info.pydev_state != STATE_SUSPEND:
            return
        internal_run_thread(thread, set_additional_thread_info)
        self._py_db.get_internal_queue_and_event(get_current_thread_id(thread))[1].set()

    def wake(self, thread_id: int) -> None:
        """Wake a stopped thread that was told to resume: it polls every 0.2 s otherwise."""
        from _pydevd_bundle._debug_adapter.pydevd_base_schema import BaseSchema

        try:
            pydevd_id = BaseSchema._translate_id_from_dap(thread_id)
        except KeyError:
            return
        self._py_db.get_internal_queue_and_event(pydevd_id)[1].set()

    def ensure_traced(self) -> None:
        """On a thread, before its cell, while a session runs: put its trace function
        back if it was dropped."""
        if self._settrace_mode() and sys.gettrace() is None:
            self._py_db.enable_tracing()

    def ensure_untraced(self) -> None:
        """On a thread, before its cell, while no session runs: run at full speed."""
        if self._settrace_mode() and sys.gettrace() is not None:
            self._py_db.disable_tracing()

    def _settrace_mode(self) -> bool:
        """Does pydevd trace with ``sys.settrace`` (a trace function per thread)?  Not with
        ``sys.monitoring`` (Python 3.12+), where events without breakpoints cost little."""
        if self._uses_settrace is None:
            from _pydevd_bundle.pydevd_constants import PYDEVD_USE_SYS_MONITORING

            self._uses_settrace = not PYDEVD_USE_SYS_MONITORING
        return self._uses_settrace

    # -- from the control thread, as a session starts and ends ----------------------------
    def trace_all_threads(self) -> None:
        """Trace every thread but the kernel's own, the code they run now included, and
        the threads started from now on (``listen`` did it for the first session)."""
        py_db = self._py_db
        py_db.patch_threads()
        py_db.enable_tracing(py_db.trace_dispatch, apply_to_all_threads=True)
        py_db.set_tracing_for_untraced_contexts()
        py_db.disable_tracing()  # the calling thread is control: never traced

    def stop_tracing_new_threads(self) -> None:
        """At the end of a session: threads started from now on are not traced (those
        running stop being traced at their next cell, ``ensure_untraced``)."""
        if self._settrace_mode():
            from _pydev_bundle.pydev_monkey import undo_patch_thread_modules

            threading.settrace(None)
            undo_patch_thread_modules()

    # -- the undo -----------------------------------------------------------------------
    def stop(self) -> None:
        """Stop tracing, undo pydevd's patches, end its threads (at kernel shutdown)."""
        import pydevd

        pydevd.stoptrace()
