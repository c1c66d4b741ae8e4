"""Which request is the current code working for?

The parent header of the request being handled lives in a ContextVar, set by
the subshell task that handles it.  Output (stdout, displays, comms) looks it
up at the moment it is produced, so two subshells printing at once attribute
their output to their own requests.

Threads started by user code do not inherit ContextVars on Python < 3.14.  We
record the parent that was current when ``Thread.start()`` was called, and
such a thread's output goes to that request: while the cell runs, that cell;
after it ended, still that cell (frontends that stopped listening drop it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

#: parent header (a dict) of the request being handled in this context
current_parent: ContextVar[dict[str, Any] | None] = ContextVar("current_parent", default=None)
#: the whole request (a ``core.protocol.Message``) being handled in this context: what
#: ``get_ipython().get_parent()`` gives libraries, and whose identities sent it
current_request: ContextVar[Any] = ContextVar("current_request", default=None)

_THREAD_ATTR = "_subshell_kernel_parent"

#: msg_ids of recent ``silent`` executes: their output, from any thread, is dropped
_muted: OrderedDict[str, None] = OrderedDict()
_MUTED_KEPT = 1024


def mute(parent: dict[str, Any]) -> None:
    """Publish nothing but status for this request (``silent=True``)."""
    _muted[parent["msg_id"]] = None
    while len(_muted) > _MUTED_KEPT:
        _muted.popitem(last=False)


def is_muted(parent: dict[str, Any] | None) -> bool:
    return parent is not None and parent.get("msg_id") in _muted


def get_parent() -> dict[str, Any] | None:
    """The parent header output should carry now, from any thread."""
    parent = current_parent.get()
    if parent is None:
        parent = getattr(threading.current_thread(), _THREAD_ATTR, None)
    return parent


def start_with_parent(original_start: Callable[[threading.Thread], None]):
    """A ``Thread.start`` (``hooks`` installs it) after which the thread's output
    goes to the request that was current when it was started."""

    def start(thread: threading.Thread) -> None:
        parent = get_parent()
        if parent is not None:
            setattr(thread, _THREAD_ATTR, parent)
        original_start(thread)

    return start
