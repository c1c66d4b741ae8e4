"""Comms (widgets) through the ``comm`` package, safe under concurrent subshells.

Each comm remembers its *owner*: the subshell whose thread created it or last
published on it (a user's own thread changes nothing).  The router asks
``KernelCommManager.owner_of`` where a comm message should run
(``core.comm_routing``): on the owner while its loop is free, else on the
subshell the message's header names.  So a widget created by a long cell
still answers from JupyterLab's comm subshell, and a reply a cell ``await``s
reaches that cell's own loop.

Figure comms (``is_figure``: an ipympl canvas or toolbar, whose handlers
draw with matplotlib) belong to the parent, where figures are built; when
one runs on a child subshell (the parent is blocked), its handler runs with
the main thread parked at a point outside matplotlib (``runtime.main_pause``,
applied by ``adapter.handlers``).

The ``comm`` package fires IPython's ``pre_execute``/``post_execute`` around
each message handler, so that a callback's inline figures are shown when it
ends; the backends then show *every* pending pyplot figure.  While a cell
runs (in any subshell) those figures are that cell's, and a handler beside
it would show them as its own output and take them from the cell, so then
the handler runs without the two events (``KernelComm.handle_msg``).

Comm handlers run concurrently with user code, so every change to the
manager's tables happens under one lock.  Messages a comm publishes carry the
parent header of the request being handled on the publishing thread (the
cell that created a widget, or the ``comm_msg`` being answered).  They are
published even from a ``silent`` execute: a widget's frontend half must
learn of it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from comm.base_comm import BaseComm, CommManager

from ..core.comm_routing import NO_OWNER, OwnerId
from ..runtime.context import get_parent
from ..runtime.subshell import running_subshell

log = logging.getLogger(__name__)

#: packages whose comm handlers draw with matplotlib (the object behind the callback)
FIGURE_PACKAGES = ("ipympl", "matplotlib")
#: what those handlers use, and so what the main thread must be outside of meanwhile
FIGURE_MODULES = ("matplotlib", "mpl_toolkits", "matplotlib_inline", "ipympl", "PIL")


def _user_subshell() -> OwnerId:
    sub = running_subshell()
    return NO_OWNER if sub is None else sub.id


class KernelComm(BaseComm):
    """A comm whose messages leave through ``output`` (``comm_class`` binds it)."""

    output: Any = None  # runtime.streams.StreamRouter
    #: whether a cell runs now, in any subshell (``comm_class`` binds it)
    cells_running: Callable[[], bool] = staticmethod(lambda: False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: the subshell that created it or last published on it (``NO_OWNER``: none)
        self.owner: OwnerId = _user_subshell()
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        sub = running_subshell()
        if sub is not None:
            self.owner = sub.id
        if self.output is None:
            return
        content: dict[str, Any] = {"data": {} if data is None else data, "comm_id": self.comm_id}
        content.update(keys)
        self.output.publish(msg_type, content, get_parent(), metadata, buffers)

    def handle_msg(self, msg: dict) -> None:
        if self._msg_callback is not None and self.cells_running():
            self._msg_callback(msg)  # no post_execute: pending figures are the cell's
        else:
            super().handle_msg(msg)


def comm_class(output: Any, cells_running: Callable[[], bool]) -> type[KernelComm]:
    """The class ``comm.create_comm`` returns in this kernel (``hooks`` installs it)."""
    return type("KernelComm", (KernelComm,),
                {"output": output, "cells_running": staticmethod(cells_running)})


def is_figure(c: BaseComm | None) -> bool:
    """Whether ``c``'s messages are handled by a figure (its callback is a method of an
    object from ``FIGURE_PACKAGES``, as ipywidgets binds ``Widget._handle_msg``)."""
    owner = getattr(getattr(c, "_msg_callback", None), "__self__", None)
    module = type(owner).__module__ if owner is not None else ""
    return module.partition(".")[0] in FIGURE_PACKAGES


class KernelCommManager(CommManager):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()

    def register_comm(self, c: BaseComm) -> str:
        with self._lock:
            return super().register_comm(c)

    def unregister_comm(self, c: BaseComm) -> None:
        with self._lock:
            self.comms.pop(c.comm_id, None)

    def close_all_quietly(self) -> None:
        """At shutdown: mark every comm closed, sending nothing (the frontend learns
        of the end from the kernel's).  A library that closes its comms at exit
        (matplotlib's ``Gcf.destroy_all`` closing ipympl canvases, after the hooks
        are undone) then finds them closed, not unknown to the ``comm`` package's
        own manager, which raised KeyError into the terminal."""
        with self._lock:
            comms = list(self.comms.values())
        for c in comms:
            c.close(deleting=True)

    def owner_of(self, comm_id: str) -> OwnerId:
        """Where the comm's messages should run when that subshell's loop is free
        (any thread; never waits): its owner, the parent for a figure comm."""
        c = self.comms.get(comm_id)
        if c is None:
            return NO_OWNER
        if is_figure(c):
            return None
        return getattr(c, "owner", NO_OWNER)

    def is_figure(self, comm_id: Any) -> bool:
        return isinstance(comm_id, str) and is_figure(self.comms.get(comm_id))

    def comm_close(self, stream, ident, msg) -> None:
        comm_id = msg["content"].get("comm_id")
        with self._lock:
            c = self.comms.pop(comm_id, None)
        if c is None:
            log.warning("comm_close for unknown comm %r", comm_id)
            return
        c._closed = True
        try:
            c.handle_close(msg)
        except Exception:
            log.exception("error in comm_close handler of %s", comm_id)
