"""Comms (widgets) through the ``comm`` package, safe under concurrent subshells.

A ``comm_msg`` is handled on the subshell named in its header, whichever
subshell opened the comm: JupyterLab sends widget messages on a subshell of
their own, and that is what keeps widgets responsive during a long cell.
Comm handlers therefore run concurrently with user code, so every change to
the manager's tables happens under one lock.

Messages a comm publishes carry the parent header of the request being
handled on the publishing thread (the cell that created a widget, or the
``comm_msg`` being answered).  They are published even from a ``silent``
execute: a widget's frontend half must learn of it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from comm.base_comm import BaseComm, CommManager

from ..runtime.context import get_parent

log = logging.getLogger(__name__)


class KernelComm(BaseComm):
    """A comm whose messages leave through ``output`` (``comm_class`` binds it)."""

    output: Any = None  # runtime.streams.StreamRouter

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        if self.output is None:
            return
        content: dict[str, Any] = {"data": {} if data is None else data, "comm_id": self.comm_id}
        content.update(keys)
        self.output.publish(msg_type, content, get_parent(), metadata, buffers)


def comm_class(output: Any) -> type[KernelComm]:
    """The class ``comm.create_comm`` returns in this kernel (``hooks`` installs it)."""
    return type("KernelComm", (KernelComm,), {"output": output})


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
