"""The IPython shell, made safe to run cells on several threads at once.

One ``KernelShell`` serves every subshell; the user namespace is shared.
What JEP 91 says is per subshell (execution count, history) lives in a
``SubshellState`` bound to the running thread.  Process-wide hooks that IPython
would swap around each cell (``sys.displayhook``, builtins, the ``_tee``
wrapper of ``sys.stdout.write``) are installed once and never swapped, because
save-and-restore of globals breaks when cells overlap on several threads.

Everything a cell publishes (displays, results, errors) goes through
``KernelShell.publish``, which attaches the current parent header and hands
the message to ``output`` (the stream router), which first sends that
request's buffered stream output, keeping order.

``%gui qt|tk`` and ``%matplotlib qt|tk`` ask ``main_loop``
(``runtime.mainloop.MainLoop``) to host the parent subshell's loop in that GUI
from the next request on; ``%gui`` turns it off.  A GUI that cannot run here
(not installed, no display, not supported) is a ``UsageError``: an error
reply that says which, and nothing changes.

The shell installs nothing in the interpreter by itself: ``hooks`` installs
its display hook and builtins, once, with everything else the kernel changes.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import anyio
from IPython.core.autocall import ExitAutocall
from IPython.core.builtin_trap import BuiltinTrap
from IPython.core.display_trap import DisplayTrap
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_magic, magics_class
from traitlets import default

from ..runtime.context import get_parent, is_muted
from ..runtime.gui import GuiUnavailable
from .debugging import kernel_pdb_class
from .history import KernelHistoryManager
from .transforms import RememberingTransformerManager

#: payloads (pager, set_next_input, ask_exit) of the execute request being run
current_payloads: ContextVar[list | None] = ContextVar("current_payloads", default=None)
#: the cancel scope of the running ``await`` cell: cancelled only by an interrupt
cell_scope: ContextVar[Any] = ContextVar("cell_scope", default=None)
#: the error content of the last exception shown in this context
last_error: ContextVar[dict | None] = ContextVar("last_error", default=None)
#: the error a display formatter raised while showing the cell's value (the reply is
#: then an error, as under ipykernel, although IPython counts the cell a success)
display_error: ContextVar[dict | None] = ContextVar("display_error", default=None)

_PACKAGE_DIRS = tuple(
    os.path.dirname(m.__file__) + os.sep
    for m in (sys.modules[__name__.split(".")[0]], sys.modules["IPython"])
)


class SubshellState:
    """What one subshell keeps of its own: execution count and history.

    A child subshell's history lives in an in-memory database of its own: the
    history file is the parent's (as in any IPython session), a child's history
    ends with the child, and a subshell then costs no SQLite file connection
    and no saving thread (~0.2 MB and a thread each, measured with 100).
    """

    def __init__(self, shell: KernelShell, history_manager: KernelHistoryManager | None = None):
        self.shell = shell
        self.execution_count = 1
        self._history_manager = history_manager

    def bind(self) -> None:
        """Make this the state of the calling thread (a subshell's, as its loop starts)."""
        self.shell.bind_state(self)

    @property
    def history_manager(self) -> KernelHistoryManager:
        if self._history_manager is None:  # created on first use: subshell creation stays cheap
            self._history_manager = KernelHistoryManager(
                shell=self.shell, parent=self.shell, hist_file=":memory:"
            )
        return self._history_manager

    def close(self) -> None:
        if self._history_manager is not None:
            try:
                self._history_manager.end_session()
            finally:
                self._history_manager.close()
            self._history_manager = None


class _ThreadStates(threading.local):
    state: SubshellState | None = None


class _PermanentBuiltinTrap(BuiltinTrap):
    """Builtins (``get_ipython``, ``exit``) installed once, not per cell."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _PermanentDisplayTrap(DisplayTrap):
    """``sys.displayhook`` installed once, not per cell."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class KernelDisplayHook(DisplayHook):
    """Publishes ``execute_result``; keeps no per-call state on the instance."""

    _local = threading.local()

    @property
    def exec_result(self):  # type: ignore[override]
        return getattr(self._local, "exec_result", None)

    @exec_result.setter
    def exec_result(self, value) -> None:
        self._local.exec_result = value

    def __call__(self, result=None):
        __debuggerskip__ = True  # IPython's debugger steps over this frame (adapter.debugging)
        self.check_for_underscore()
        if result is None or self.quiet():
            return
        __debuggerskip__ = False  # noqa: F841  (the reprs called from here are user code)
        self._local.formatting = True
        try:
            format_dict, md_dict = self.compute_format_data(result)
        finally:
            self._local.formatting = False
        self.update_user_ns(result)
        self.fill_exec_result(result)
        if format_dict:
            self.log_output(format_dict)
            self.shell.publish(
                "execute_result",
                {"execution_count": self.prompt_count, "data": format_dict, "metadata": md_dict},
            )


class _SessionShim:
    """What jupyter_client's ``execute_interactive`` uses when run inside a kernel:
    ``display_pub.session.send(display_pub.pub_socket, msg_type, content, parent=...)``."""

    def __init__(self, shell: KernelShell):
        self._shell = shell

    def send(self, socket, msg_type, content=None, parent=None, **kwargs):
        self._shell.publish(msg_type, content or {})


class KernelDisplayPublisher(DisplayPublisher):
    pub_socket = None

    @property
    def session(self) -> _SessionShim:
        return _SessionShim(self.shell)

    @property
    def parent_header(self):
        return get_parent()

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
        content = {"data": data, "metadata": metadata or {}, "transient": transient or {}}
        self.shell.publish("update_display_data" if update else "display_data", content)

    def clear_output(self, wait=False):
        self.shell.publish("clear_output", {"wait": wait})


class KernelExitAutocall(ExitAutocall):
    """``exit``/``quit``: ask the frontend to end the session (``ask_exit`` payload)."""

    def __call__(self, keep_kernel: bool = False):
        self._ip.write_payload({"source": "ask_exit", "keepkernel": keep_kernel})


class KernelShell(InteractiveShell):
    displayhook_class = KernelDisplayHook
    display_pub_class = KernelDisplayPublisher

    #: set by the kernel: ``publish(msg_type, content, parent, metadata, buffers)`` after
    #: the parent's buffered stream output (``runtime.streams.StreamRouter``)
    output: Any = None
    #: the kernel object, as ``get_ipython().kernel`` (ipywidgets and friends look here)
    kernel: Any = None
    #: set by the kernel: the main thread's loop (``runtime.mainloop.MainLoop``)
    main_loop: Any = None
    #: the GUI ``%gui`` last enabled (ipykernel's name for it)
    active_eventloop: str | None = None

    @default("input_transformer_manager")
    def _remembering_transformer_manager(self):
        return RememberingTransformerManager()

    def __init__(self, **kwargs):
        self._states = _ThreadStates()
        self._parent_state: SubshellState | None = None
        super().__init__(**kwargs)
        self._parent_state.shell = self
        # installed once by ``hooks``, never per cell
        self.builtin_trap = _PermanentBuiltinTrap(shell=self)
        self.display_trap = _PermanentDisplayTrap(hook=self.displayhook)

    # -- per-subshell state ---------------------------------------------------------
    def _state(self) -> SubshellState:
        state = self._states.state
        if state is None:
            if self._parent_state is None:  # during InteractiveShell.__init__
                self._parent_state = SubshellState(self)
            state = self._parent_state
        return state

    def bind_state(self, state: SubshellState | None) -> None:
        """Bind the calling thread to ``state`` (None: the parent subshell's)."""
        self._states.state = state

    @property
    def parent_state(self) -> SubshellState:
        return self._parent_state or self._state()

    @property  # type: ignore[override]
    def execution_count(self) -> int:
        return self._state().execution_count

    @execution_count.setter
    def execution_count(self, value: int) -> None:
        self._state().execution_count = value

    def init_history(self):
        """IPython's history, whose writes to SQLite hold up no cell (``adapter.history``)."""
        self.history_manager = KernelHistoryManager(shell=self, parent=self)
        self.configurables.append(self.history_manager)

    @property  # type: ignore[override]
    def history_manager(self):
        return self._state().history_manager

    @history_manager.setter
    def history_manager(self, value) -> None:
        self._state()._history_manager = value

    @property  # type: ignore[override]
    def exiter(self):
        return KernelExitAutocall(self)

    # -- IPython hooks --------------------------------------------------------------
    def init_io(self):
        pass  # the kernel owns sys.stdout/sys.stderr

    @property
    def debugger_cls(self):  # %debug, %pdb
        return kernel_pdb_class()

    def init_magics(self):
        super().init_magics()
        self.register_magics(_GuiMagics)

    def enable_gui(self, gui=None):
        """Host the parent subshell's loop in ``gui``'s loop after this request (None,
        ``inline``: natively).  ``UsageError`` if it cannot; then nothing changes."""
        gui = None if gui in (None, "", "inline") else gui
        with _as_usage_error():
            self._gui_loop(gui).switch(gui)
        self.active_eventloop = gui

    def enable_matplotlib(self, gui=None):
        """``%matplotlib qt|tk``: check the GUI before matplotlib switches backend, so
        that an error says what is missing (matplotlib would only say "headless")."""
        from IPython.core.pylabtools import find_gui_and_backend  # as IPython: on first use

        wanted, _backend = find_gui_and_backend(gui, self.pylab_gui_select)
        if wanted not in (None, "inline"):
            with _as_usage_error():
                self._gui_loop(wanted).prepare(wanted)
        return super().enable_matplotlib(gui)

    def _gui_loop(self, gui: str | None):
        """The main loop, for a GUI change asked from the calling thread."""
        if self.main_loop is None:
            raise UsageError("GUI event loops need a running subshell_kernel")
        if gui != self.active_eventloop and threading.current_thread() is not \
                threading.main_thread():
            raise UsageError("GUI event loops run on the main thread: use %gui or "
                             "%matplotlib in the parent subshell, not in a child subshell")
        return self.main_loop

    def publish(self, msg_type: str, content: dict, metadata=None, buffers=None) -> None:
        parent = get_parent()
        if self.output is None or is_muted(parent):
            return
        self.output.publish(msg_type, content, parent, metadata, buffers)

    def write_payload(self, payload: dict) -> None:
        """Add a payload to the reply; a later one from the same source replaces it
        (``?`` in a loop asks for the same page many times: the frontend shows one)."""
        payloads = current_payloads.get()
        if payloads is None:
            return
        source = payload.get("source")
        for i, earlier in enumerate(payloads):
            if source is not None and earlier.get("source") == source:
                payloads[i] = payload
                return
        payloads.append(payload)

    def set_next_input(self, s, replace=False):
        self.write_payload({"source": "set_next_input", "text": s, "replace": replace})

    def ask_exit(self):
        self.write_payload({"source": "ask_exit", "keepkernel": False})

    def _showtraceback(self, etype, evalue, stb):
        content = {
            "ename": etype.__name__,
            "evalue": str(evalue),
            "traceback": stb,
        }
        last_error.set(content)
        if getattr(self.displayhook._local, "formatting", False):
            display_error.set(content)
        self.publish("error", content)

    def _format_exception_for_storage(self, exception, filename=None, running_compiled_code=False):
        """History keeps the error as already shown: IPython would format the
        traceback a second time (10-30 ms, most of an interrupt's latency)."""
        shown = last_error.get()
        if shown is not None:
            return dict(shown)
        return super()._format_exception_for_storage(exception, filename, running_compiled_code)

    def showtraceback(self, exc_tuple=None, filename=None, tb_offset=None, **kwargs):
        etype, value, tb = exc_tuple or sys.exc_info()
        scope = cell_scope.get()
        if _cancelled_by_interrupt(etype, scope):
            etype, value = KeyboardInterrupt, KeyboardInterrupt()  # an interrupted await cell
        if etype is KeyboardInterrupt:
            tb, tb_offset = user_frames_only(tb), 0
        return super().showtraceback((etype, value, tb), filename, tb_offset, **kwargs)

    def _page(self, strng, start=0, screen_lines=0, pager_cmd=None):
        data = strng if isinstance(strng, dict) else {"text/plain": strng}
        self.write_payload({"source": "page", "data": data, "start": start})


@contextmanager
def _as_usage_error():
    """``GuiUnavailable`` as IPython's ``UsageError``: an error reply, no traceback."""
    try:
        yield
    except GuiUnavailable as e:
        raise UsageError(str(e)) from None


@magics_class
class _GuiMagics(Magics):
    """``%gui`` whose errors are error replies (IPython's logs them and succeeds)."""

    @line_magic
    def gui(self, parameter_s=""):
        """Host the kernel's main loop in a GUI toolkit's event loop.

            %gui qt      # Qt 6 or 5 (PySide6, PyQt6, PyQt5, PySide2)
            %gui qt6     # Qt 6 only;  %gui qt5: Qt 5 only
            %gui tk      # Tk
            %gui         # turn it off

        The GUI loop runs from the next request on, between and during cells;
        windows stay live while the kernel answers.
        """
        self.shell.enable_gui(parameter_s.strip() or None)


def _cancelled_by_interrupt(etype, scope) -> bool:
    """Is this the cancellation with which an interrupt ended an ``await`` cell?

    Only the interrupt cancels the cell's scope (``cell_scope``); inside an
    ``await`` cell we run on the subshell's loop, where AnyIO names the
    backend's cancellation class."""
    return (
        etype is not None
        and scope is not None
        and scope.cancel_called
        and issubclass(etype, anyio.get_cancelled_exc_class())
    )


def user_frames_only(tb):
    """A traceback without the frames of IPython, AnyIO/asyncio/trio, the debugger or
    this kernel, each user frame once.

    An interrupt that ends a stop at a breakpoint is raised in the debugger's wait,
    under the user's frame: the traceback then names that frame a second time, after
    pydevd's (Cython ones too, which have a relative ``.pyx`` name).  Formatting
    pydevd's own large files took ~0.5 s a thread, at each such interrupt."""
    frames = []
    while tb is not None:
        frame = tb.tb_frame
        if not (_is_machinery(frame.f_code.co_filename) or _is_debugger(frame)
                or (frames and frames[-1].tb_frame is frame)):
            frames.append(tb)
        tb = tb.tb_next
    new = None
    for t in reversed(frames):
        # tb_lineno is None for an instruction without a line (3.11+), as where an
        # interrupt lands in compile(); the constructor wants an int
        lineno = t.tb_lineno if t.tb_lineno is not None else t.tb_frame.f_code.co_firstlineno
        new = type(t)(new, t.tb_frame, t.tb_lasti, lineno)
    return new


#: (codeop: IPython compiles each cell through it, and an interrupt can land there)
_MACHINERY_MODULES = ("asyncio", "anyio", "codeop", "contextlib", "outcome", "threading",
                      "trio")
#: top-level names of debugpy's modules (it puts pydevd's on ``sys.path``)
_DEBUGGER_PACKAGES = ("debugpy", "pydevd", "_pydev")


def _is_debugger(frame) -> bool:
    return frame.f_globals.get("__name__", "").startswith(_DEBUGGER_PACKAGES)


def _is_machinery(filename: str) -> bool:
    """Is this a frame of the event loop, IPython or this kernel rather than the user's?

    Looks only at modules already imported (a frame cannot come from another),
    so the first interrupt does not pay for importing trio.
    """
    dirs = list(_PACKAGE_DIRS)
    for name in _MACHINERY_MODULES:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            is_package = os.path.basename(path) == "__init__.py"
            dirs.append(os.path.dirname(path) + os.sep if is_package else path)
    return filename.startswith(tuple(dirs))
