"""How libraries recognise a Jupyter kernel, and what this kernel answers: the one place.

A library that renders for notebooks first asks whether it runs in one.  None
asks the protocol; each looks at what ipykernel happens to look like from
inside.  Each check below is answered here, with something that is true of
this kernel (never by pretending to be ipykernel's code), or is listed with
the reason it cannot be passed honestly.  Process-wide parts (environment,
the tqdm import) are put in place by ``hooks``; the rest is the shell's class
and what ``kernel.py`` exposes as ``get_ipython().kernel``.

=================  ==========================================  ===================================
library            checks                                      this kernel
=================  ==========================================  ===================================
rich, halo,        ``type(get_ipython()).__name__ ==           the shell's class is named
fastprogress,      "ZMQInteractiveShell"`` (huggingface_hub:    ``ZMQInteractiveShell`` (this
huggingface_hub    any class of the MRO)                       module): a shell that talks ZMQ
pandas             ``"zmq" in str(type(get_ipython()))``,       the class name; ``shell.kernel``
                   ``hasattr(shell, "kernel")``                 is the kernel
polars, enlighten, ``"IPKernelApp" in get_ipython().config``    an ``IPKernelApp`` section holding
transformers                                                   the ``connection_file``, as there
tqdm.autonotebook  ``"ipykernel.zmqshell" in sys.modules``,     the name is in ``sys.modules``
(``tqdm.auto``)    at its import                               only while ``tqdm.autonotebook``
                                                               runs (``tqdm_sees_a_kernel``)
plotly             ``type(shell).__module__`` starts with      ``PLOTLY_RENDERER=plotly_mimetype``
                   ``ipykernel.`` (else the renderer adds      unless set: the renderer ipykernel
                   plotly.js as 4.8 MB of HTML)                gets, chosen in plotly's own way
ipywidgets,        ``shell.kernel``, ``get_parent()``,          ``ZMQInteractiveShell`` below;
Output widget      ``set_parent()``; comms from ``comm``        ``comm`` is ours (``adapter.comms``)
ipympl,            ``events.register("post_execute")``,         IPython's events, fired each cell;
matplotlib         ``enable_gui(None)``, ``MPLBACKEND``          MPLBACKEND inline unless set
bokeh              ``output_notebook()``: display_data          display_data with metadata
anywidget          ``comm.create_comm``                         ours
IPython magics     ``shell.kernel.language_info``               ``Kernel.language_info``
notebook path      ``__session__`` (from ``JPY_SESSION_NAME``)  set the same way
terminal tools     ``TERM``, ``CLICOLOR``, ``FORCE_COLOR``,     set as ipykernel sets them: the
                   ``CLICOLOR_FORCE``, ``PAGER``, ``GIT_PAGER``  frontend renders ANSI colour and
                                                               has no pager
loguru             ``isinstance(sys.stdout, ipykernel.         not passed: only ipykernel's own
                   iostream.OutStream)`` for colour            classes pass (``colorize=True``)
click              ``type(stream).__module__`` starts with     not passed: colours are stripped
                   ``ipykernel.``                              unless ``color=True``
bokeh              ``push_notebook`` needs ipykernel's          not passed: ``push_notebook``
                   ``Kernel.initialized()``                    does nothing (ipykernel's class)
=================  ==========================================  ===================================

The shell API ipykernel gives libraries (``get_parent``, ``set_parent``,
``set_thread_parent``) means here what output attribution means in this
kernel (``runtime.context``): the request the calling code works for.  There
is no kernel-wide "current parent" to set, because output always belongs to
the request, or the cell's thread, that produced it.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Token
from typing import Any

from traitlets.config import Config

from ..runtime.context import current_parent, current_request, get_parent
from .shell import KernelShell

#: environment variables: (value, whether a value already set is replaced)
ENVIRONMENT: dict[str, tuple[str, bool]] = {
    "TERM": ("xterm-color", True),
    "CLICOLOR": ("1", True),
    "FORCE_COLOR": ("1", True),
    "CLICOLOR_FORCE": ("1", True),
    "PAGER": ("cat", True),
    "GIT_PAGER": ("cat", True),
    "MPLBACKEND": ("module://matplotlib_inline.backend_inline", False),
    "PLOTLY_RENDERER": ("plotly_mimetype", False),
}


class ZMQInteractiveShell(KernelShell):
    """The shell's concrete class: an IPython shell that talks to frontends over ZMQ.

    Its name is what several libraries compare (module docstring); it must not
    contain "qt" or "spyder" (tqdm reads those as a Qt console).
    """

    @property
    def parent_header(self) -> dict[str, Any]:
        return get_parent() or {}

    def get_parent(self) -> dict[str, Any]:
        """The request the calling code works for, as a message dict (``{}``: none)."""
        return as_parent(get_parent(), current_request.get())

    def set_parent(self, parent: dict[str, Any]) -> None:
        """Output of the calling code (this thread, or this cell) goes to ``parent``'s
        request from now on.  Accepts a message or a header."""
        current_parent.set(_header_of(parent))

    def set_thread_parent(self, parent: dict[str, Any]) -> Token:
        """Like ``set_parent``, undone by ``reset_thread_parent(token)``."""
        return current_parent.set(_header_of(parent))

    def reset_thread_parent(self, token: Token) -> None:
        current_parent.reset(token)


def as_parent(header: dict[str, Any] | None, request: Any = None) -> dict[str, Any]:
    """``header``'s request as ipykernel's ``get_parent()`` gives it: the whole message
    when ``request`` is it; else (in a thread of the user's) its header alone."""
    if header is None:
        return {}
    if request is not None and request.header is header:
        return request.as_dict()
    return {"header": header, "msg_id": header.get("msg_id"), "msg_type": header.get("msg_type"),
            "parent_header": {}, "metadata": {}, "content": {}, "buffers": []}


def _header_of(parent: dict[str, Any] | None) -> dict[str, Any] | None:
    if not parent:
        return None
    header = parent.get("header")
    return header if isinstance(header, dict) else parent


def kernel_parent(shell: ZMQInteractiveShell, control: Any, channel: str | None) -> dict:
    """``get_ipython().kernel.get_parent(channel)``: on ``"control"`` (or from the
    control thread) the control request being handled, else the shell's."""
    if channel == "control" or (channel is None and threading.current_thread() is control.thread):
        return control.current.as_dict() if control.current is not None else {}
    return shell.get_parent()


def parent_idents(control: Any) -> dict[str, list[bytes]]:
    """ipykernel's ``kernel._parent_ident``: who sent the current shell request and
    the last control request (the zmq identities a reply is routed to)."""
    request = current_request.get()
    return {"shell": list(request.idents) if request is not None else [],
            "control": list(control.current.idents) if control.current is not None else []}


def describe_kernel(shell: ZMQInteractiveShell, connection_file: str, session_name: str | None):
    """What a kernel app leaves in the shell: the ``IPKernelApp`` config section and,
    from jupyter_server's ``JPY_SESSION_NAME``, the notebook's path as ``__session__``."""
    shell.config["IPKernelApp"] = Config({"connection_file": connection_file})
    if session_name:
        shell.user_ns["__session__"] = session_name


_IPYKERNEL_SHELL_MODULE = "ipykernel.zmqshell"


@contextmanager
def tqdm_sees_a_kernel(module: types.ModuleType) -> Iterator[None]:
    """Around the first run of ``tqdm.autonotebook``: make its one test true for us.

    It picks the notebook bar only if ``"ipykernel.zmqshell" in sys.modules``.
    Importing the real module would load ipykernel and Tornado (350 ms), and a
    stand-in left in ``sys.modules`` would hide the real ipykernel from user
    code.  So a stand-in is there only while ``tqdm.autonotebook``'s own code
    runs; ``tqdm.notebook`` (and ipywidgets) are imported first, so that
    nothing else is imported in that window.
    """
    if _IPYKERNEL_SHELL_MODULE in sys.modules:
        yield
        return
    try:
        __import__("tqdm.notebook")
    except ImportError:  # tqdm's own code then falls back to the text bar
        yield
        return
    stand_in = types.ModuleType(
        _IPYKERNEL_SHELL_MODULE, "Not ipykernel: subshell_kernel's stand-in while "
        "tqdm.autonotebook checks for a notebook kernel (adapter/recognition.py).")
    sys.modules[_IPYKERNEL_SHELL_MODULE] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(_IPYKERNEL_SHELL_MODULE) is stand_in:
            del sys.modules[_IPYKERNEL_SHELL_MODULE]
