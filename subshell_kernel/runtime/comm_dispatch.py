"""Hands each comm message to the subshell that should run it (``core.comm_routing``).

Runs on the router thread (``Subshells.deliver``), so it never waits: it
reads the comm's owner (a lookup the comm manager hands in, since the runtime
knows subshells, not comms), asks the owner whether its loop is free, and
delivers.

Order: the messages of one comm that were routed but not yet handled all
sit on one subshell (``_pending``); a new message of that comm goes there
too, whatever the owner does meanwhile, so no two messages of a comm run at
once or out of order.  Each subshell calls ``done`` after it handled a comm
message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.comm_routing import NO_OWNER, Owner, OwnerId, Via, route
from ..core.protocol import Message, ProtocolError

if TYPE_CHECKING:
    from .subshell import Subshell

class CommDispatch:
    def __init__(self, owner_of: Callable[[str], OwnerId]):
        #: comm_id -> the subshell id that owns it, or ``NO_OWNER``
        self._owner_of = owner_of
        self._lock = threading.Lock()
        #: comm_id -> [subshell holding its unhandled messages, how many]
        self._pending: dict[str, list] = {}
        #: id(message) -> (its comm_id, its subshell), for the messages counted in ``_pending``
        self._counted: dict[int, tuple] = {}

    def deliver(self, msg: Message, addressed: Subshell,
                lookup: Callable[[str | None], Subshell | None]) -> bool:
        """Deliver ``msg``, a comm message whose header names ``addressed``;
        False if the subshell it went to has ended."""
        try:
            comm_id = msg.decode().content.get("comm_id")
        except ProtocolError:
            comm_id = None  # the handler reports it
        if not isinstance(comm_id, str):
            return addressed.deliver(msg)
        with self._lock:
            pending = self._pending.get(comm_id)
        holder = pending[0] if pending and not pending[0].stopping else None
        owner = None
        if holder is None:
            owner_id = self._owner_of(comm_id)
            owner = None if owner_id is NO_OWNER else lookup(owner_id)
            if owner is None:
                state = Owner.NONE if owner_id is NO_OWNER else Owner.GONE
            elif owner is addressed:
                state = Owner.BLOCKED  # the same subshell either way: it queues there
            else:
                self._count(msg, comm_id, owner)
                if owner.deliver_comm_if_free(msg):  # checks and queues in one step
                    state = Owner.FREE
                else:
                    self._uncount(msg)
                    state = Owner.BLOCKED
        else:
            state = Owner.NONE  # not consulted: the pending messages decide
        via = route(state, pending=holder is not None)
        if via is Via.OWNER:
            return True  # queued by ``deliver_comm_if_free``
        target = {Via.PENDING: holder, Via.OWNER: owner, Via.HEADER: addressed}[via]
        self._count(msg, comm_id, target)
        if target.deliver(msg):
            return True
        self._uncount(msg)
        return False

    def _count(self, msg: Message, comm_id: str, target: Subshell) -> None:
        with self._lock:
            pending = self._pending.get(comm_id)
            if pending is None or pending[0] is not target:  # (a holder that is stopping)
                pending = self._pending[comm_id] = [target, 0]
            pending[1] += 1
            self._counted[id(msg)] = (comm_id, target)

    def _uncount(self, msg: Message) -> None:
        with self._lock:
            comm_id, target = self._counted.pop(id(msg), (None, None))
            pending = self._pending.get(comm_id) if comm_id is not None else None
            if pending is not None and pending[0] is target:
                pending[1] -= 1
                if pending[1] <= 0:
                    del self._pending[comm_id]

    def done(self, msg: Message) -> None:
        """A subshell handled ``msg`` (on its thread)."""
        self._uncount(msg)

    def pending(self, comm_id: str) -> int:
        """How many messages of ``comm_id`` were routed and not yet handled."""
        with self._lock:
            pending = self._pending.get(comm_id)
            return pending[1] if pending else 0
