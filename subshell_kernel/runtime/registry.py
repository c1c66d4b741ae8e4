"""The registry of subshells, and how an interrupt reaches them.

``Subshells.parent`` runs on the main thread; children each on a thread of
their own, created by ``create`` with the factory the kernel hands in.

SIGINT is always handled on the main thread (every other thread is started
with it blocked).  It comes either from a frontend (signal interrupt mode:
interrupt every busy subshell) or from the kernel itself, to raise
``KeyboardInterrupt`` into blocking code of the parent subshell only
(``interrupt_main_thread``); a flag tells the two apart.
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Callable

from ..core.protocol import Message
from .comm_dispatch import CommDispatch
from .inbox import is_comm
from .subshell import Subshell


class Subshells:
    def __init__(self, new_child: Callable[[str], Subshell], comms: CommDispatch | None = None):
        self._new_child = new_child
        #: routes comm messages by their comm's owner (None: by header, like the rest)
        self._comms = comms
        self.parent: Subshell | None = None
        self._children: dict[str, Subshell] = {}
        self._lock = threading.Lock()
        self._sigint_parent_only = False

    # -- lookup (any thread) ------------------------------------------------------------
    def get(self, subshell_id: str | None) -> Subshell | None:
        """The subshell a header names (None: the parent); None if there is no such one."""
        if subshell_id is None:
            return self.parent
        if not isinstance(subshell_id, str):
            return None
        return self._children.get(subshell_id)

    def deliver(self, msg: Message) -> bool:
        """Hand ``msg`` to the subshell its header names (a comm message: to the one
        ``core.comm_routing`` chooses); False if the named one does not exist."""
        sub = self.get(msg.subshell_id)
        if sub is None:
            return False
        if self._comms is not None and is_comm(msg):
            return self._comms.deliver(msg, sub, self.get)
        return sub.deliver(msg)

    def cells_running(self) -> bool:
        """Whether user code runs now in any subshell (a cell, sync or ``await``)."""
        return self.parent.running is not None or any(
            sub.running is not None for sub in self.children())

    def ids(self) -> list[str]:
        return list(self._children)

    def children(self) -> list[Subshell]:
        return list(self._children.values())

    # -- lifetime (control thread, or the main thread at shutdown) -----------------------
    def create(self) -> str:
        """Start a child subshell; returns its id once it accepts messages."""
        subshell_id = str(uuid.uuid4())
        sub = self._new_child(subshell_id)
        sub.start_thread()
        with self._lock:
            self._children[subshell_id] = sub
        return subshell_id

    def delete(self, subshell_id: str, release: bool = True) -> bool:
        """Stop a child subshell without waiting for it (a busy one is interrupted)."""
        with self._lock:
            sub = self._children.pop(subshell_id, None)
        if sub is None:
            return False
        sub.stop(release)
        return True

    def stop_children(self) -> list[Subshell]:
        """Stop every child subshell (shutdown); returns them, for the caller to join
        and release."""
        children = self.children()
        for subshell_id in self.ids():
            self.delete(subshell_id, release=False)
        return children

    # -- interrupt ------------------------------------------------------------------------
    def interrupt_all(self) -> None:
        """Interrupt every busy subshell (from any thread)."""
        for sub in self.children():
            sub.interrupt()
        self.parent.interrupt()

    def interrupt_main_thread(self) -> None:
        """Raise KeyboardInterrupt in blocking code on the main thread, via SIGINT."""
        self._sigint_parent_only = True
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def on_sigint(self, signum, frame) -> None:
        """The SIGINT handler (main thread): from a frontend it reaches every subshell."""
        if self._sigint_parent_only:
            self._sigint_parent_only = False
        else:
            for sub in self.children():
                sub.interrupt()
        self.parent.interrupt()  # raises KeyboardInterrupt into a blocking cell
