"""Which threads are stopped, from debugpy's events, and what the kernel announces.

debugpy reports each stop (``stopped``) and each resumption (``continued``)
of one thread.  The kernel keeps the stopped threads (``debugInfo``'s
``stoppedThreads``) and passes the events on, with three rules of its own:

- A thread whose stopped cell ends without being resumed (an interrupt or a
  subshell delete raised ``KeyboardInterrupt`` out of the stop) gets no
  ``continued`` from debugpy: the kernel announces one (``left``).
- A ``continued`` for a thread that is not stopped is dropped, so each stop
  is ended exactly once, whichever of debugpy and the kernel says so first.
- When a thread is resumed by ``continue`` (or leaves its stop) while others
  stay stopped, the stop of the most recent of them is announced again:
  JupyterLab shows one stopped thread at a time (the last ``stopped``), and
  would otherwise show none while a subshell still waits at a breakpoint.
  Not after a step: that thread stops again at once.

Safe from any thread: events come on the DAP reader thread, ``left`` on the
thread of the cell, ``resuming`` and ``ids`` on control.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]


def continued_event(thread_id: int) -> Event:
    return {"type": "event", "seq": 0, "event": "continued",
            "body": {"threadId": thread_id, "allThreadsContinued": False}}


class StoppedThreads:
    def __init__(self, announce: Callable[[Event], None]):
        self._announce = announce
        self._lock = threading.Lock()
        #: DAP thread id -> its ``stopped`` event, oldest stop first
        self._stopped: dict[int, Event] = {}
        self._stepping: set[int] = set()

    def ids(self) -> list[int]:
        with self._lock:
            return list(self._stopped)

    def clear(self) -> None:
        with self._lock:
            self._stopped.clear()
            self._stepping.clear()

    def resuming(self, thread_id: int, stepping: bool) -> None:
        """The client asked ``thread_id`` to continue (or to step)."""
        with self._lock:
            if stepping:
                self._stepping.add(thread_id)
            else:
                self._stepping.discard(thread_id)

    def on_event(self, event: Event) -> None:
        """An event from debugpy: book it, announce it (or drop it, see the rules)."""
        kind = event.get("event")
        body = event.get("body") if isinstance(event.get("body"), dict) else {}
        thread_id = body.get("threadId")
        if kind == "stopped":
            with self._lock:
                self._stopped.pop(thread_id, None)
                self._stopped[thread_id] = event
                self._stepping.discard(thread_id)
        elif kind == "continued":
            if body.get("allThreadsContinued"):
                self.clear()
                self._announce(event)
            else:
                self._end(thread_id, event)
            return
        elif kind == "thread" and body.get("reason") == "exited":
            with self._lock:
                self._stopped.pop(thread_id, None)
                self._stepping.discard(thread_id)
        self._announce(event)

    def left(self, thread_id: int) -> None:
        """``thread_id`` finished its cell: if it was still stopped, its stop has ended."""
        with self._lock:
            if thread_id not in self._stopped:
                return
        self._end(thread_id, continued_event(thread_id))

    def _end(self, thread_id: Any, event: Event) -> bool:
        """End one thread's stop with ``event``; False if it was not stopped."""
        with self._lock:
            if self._stopped.pop(thread_id, None) is None:
                return False
            stepping = thread_id in self._stepping
            self._stepping.discard(thread_id)
            still = None
            if not stepping and self._stopped:
                still = next(reversed(self._stopped.values()))
        self._announce(event)
        if still is not None:
            self._announce(still)
        return True
