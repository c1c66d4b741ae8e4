"""A subshell's inbox: messages in arrival order, comm messages also out of turn.

Used only on the subshell's own loop: the router thread appends messages to
a deque and schedules ``Subshell._pull`` with the loop's thread-safe
call-soon, which runs ``put`` on the loop.  The inbox outlives a loop (the
parent's, replaced when a GUI is turned on or off): it is handed over between
two requests, when nothing waits on it, so no waiter belongs to a dead loop.
Items leave only by synchronous pops, so a waiter that is
cancelled loses nothing (an AnyIO memory stream can lose the item handed to a
receiver that is cancelled as it wakes).

Two consumers, never at the same time for the same item:
- the subshell's request loop, which takes the oldest message (``take``);
- while an ``await`` cell runs, the task beside it, which takes the oldest
  *comm* message and leaves every other message where it is
  (``take(comm_only=True)``), so requests keep their order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import anyio

#: message types handled beside a running ``await`` cell
COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})


def is_comm(item: Any) -> bool:
    return getattr(item, "msg_type", None) in COMM_TYPES


class Inbox:
    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._waiters: list[anyio.Event] = []

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def put(self, item: Any) -> None:
        """Append ``item`` and wake every waiter (on the loop)."""
        self._items.append(item)
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.set()

    def take_nowait(self, comm_only: bool = False) -> Any:
        """The oldest item (or oldest comm message); ``anyio.WouldBlock`` if none."""
        items = self._items
        if not comm_only:
            if items:
                return items.popleft()
            raise anyio.WouldBlock
        for i, item in enumerate(items):
            if is_comm(item):
                del items[i]
                return item
        raise anyio.WouldBlock

    async def take(self, comm_only: bool = False) -> Any:
        while True:
            try:
                return self.take_nowait(comm_only)
            except anyio.WouldBlock:
                pass
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            finally:
                if event in self._waiters:
                    self._waiters.remove(event)
