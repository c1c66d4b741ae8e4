"""A subshell: one thread, one AnyIO event loop, one inbox, requests in order.

The parent subshell runs on the main thread (it receives SIGINT); each child
subshell runs on a thread of its own.  The router thread hands messages in
with ``deliver``, which schedules ``send_nowait`` on this subshell's loop and
returns at once: a busy subshell never makes the router wait.

Invariants:
- Requests to one subshell are handled one at a time, in arrival order.
- Every ``*_request`` gets exactly one reply, sent before its ``idle`` status,
  whatever happens (errors, interrupts, deletion: ``aborted``).
- ``_running`` says what user code runs now: ``None``, ``"sync"`` (blocking
  code: interrupted by KeyboardInterrupt) or ``"async"`` (a top-level
  ``await`` cell: interrupted by cancelling its cancel scope).  It is changed
  and read under ``_lock``, so an interrupt never lands outside user code.
- ``deliver`` appends to ``_incoming`` (a deque: no lock, safe from a signal
  handler) and schedules ``_pull`` on the loop, which moves it into the
  loop's inbox.  So the parent's loop can be replaced between two requests
  (``%gui``: a ``runtime.mainloop.MainLoop`` runs it natively or inside a
  GUI) without losing or refusing a message: the old loop stops pulling and
  its inbox is carried over, in order; what it did not pull stays in
  ``_incoming`` for the next loop, whose first ``_pull`` comes after it has
  taken over ``_call_soon``.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio

from ..core.lifecycle import Cycle, Outbox
from ..core.protocol import Message
from ..transport.loop import call_soon_threadsafe
from .context import current_parent, current_request
from .mainloop import MainLoop
from .threads import clear_pending_exception, raise_in_thread, return_freed_memory

log = logging.getLogger(__name__)

_STOP = object()
INTERRUPTED = object()  # put into an input() waiter to interrupt it


class _ThreadSubshell(threading.local):
    subshell: Subshell | None = None  # the child subshell running on this thread


_this_thread = _ThreadSubshell()
_blocking_sleep = time.sleep


def _interruptible_sleep(seconds: float) -> None:
    """``time.sleep`` that an interrupt ends at once in a child subshell.

    An interrupt reaches a child subshell's thread as an exception raised at
    its next bytecode, and ``time.sleep`` runs none until it returns: a
    ``time.sleep(30)`` in a subshell would take 30 s to stop.  Here it waits on
    the subshell's wake-up event instead; the interrupt sets the event, and
    the exception fires as soon as this function returns to Python code.
    Elsewhere (the main thread, the kernel's and users' own threads) it is
    the original ``time.sleep``.
    """
    sub = _this_thread.subshell
    if sub is None or type(seconds) not in (int, float) or not seconds > 0:
        return _blocking_sleep(seconds)  # also raises its own errors
    wake = sub.wake
    wake.clear()
    deadline = time.monotonic() + seconds
    while not wake.wait(deadline - time.monotonic()):
        if time.monotonic() >= deadline:
            return


interruptible_sleep = _interruptible_sleep  # installed as ``time.sleep`` by ``hooks``


class State(Protocol):
    """What a subshell keeps of its own (``adapter.shell.SubshellState``)."""

    execution_count: int

    def bind(self) -> None:
        """Make this the state of the calling thread (called on the subshell's thread)."""

    def close(self) -> None: ...


#: a shell handler: (subshell, message) -> reply content, or None for a non-request
Handler = Callable[["Subshell", Message], Awaitable[dict[str, Any] | None]]

ABORTED = {"status": "aborted"}


class Subshell:
    """One subshell.  Collaborators are handed in (the kernel builds them):

    ``state``      execution count and history, bound to this thread
    ``handlers``   the shell dispatch table
    ``outbox``     how the lifecycle sends status, replies and flushes output
    ``interrupt_main``  (the parent only) interrupt blocking code on the main thread
    ``main_loop``  (the parent only) runs its loop, natively or hosted by a GUI
    """

    #: seconds an ``await`` cell's loop has to run the cancel before the
    #: interrupt is raised into the thread as for blocking code
    CANCEL_GRACE = 0.2

    def __init__(
        self,
        subshell_id: str | None,
        state: State,
        handlers: Mapping[str, Handler],
        outbox: Outbox,
        backend: str,
        backend_options: dict[str, Any] | None = None,
        interrupt_main: Callable[[], None] | None = None,
        main_loop: MainLoop | None = None,
    ):
        self.id = subshell_id
        self.state = state
        self.handlers = handlers
        self.outbox = outbox
        self.backend = backend
        self.backend_options = backend_options or {}
        self._interrupt_main = interrupt_main
        self._main_loop = main_loop
        self.is_main = subshell_id is None
        #: close the state on this thread when the loop ends (False at shutdown:
        #: the main thread closes it after joining, so finalizers never race SQLite)
        self._release_on_exit = not self.is_main
        self.thread_ident: int | None = None
        self.stopping = False
        self.input_waiter: queue.SimpleQueue | None = None
        self._lock = threading.RLock()
        self._running: str | None = None
        self._scope: anyio.CancelScope | None = None
        self._cancel_landed: anyio.CancelScope | None = None
        self._async_blocked = False  # an await cell that is blocking its loop
        self._abort_remaining = 0
        self._ready = threading.Event()
        self._done = threading.Event()
        #: set by an interrupt: ends an ``_interruptible_sleep`` on this thread
        self.wake = threading.Event()
        self._call_soon = None  # None until the loop runs, and while it is replaced
        self._cell_call_soon = None  # where the running ``await`` cell's cancel is scheduled
        self._send = None
        self._receive = None
        self._incoming: collections.deque = collections.deque()  # delivered, not pulled yet
        self._pulling = False  # this loop's inbox takes what is delivered
        self._carried: list = []  # the inbox, in order, between two loops of the parent
        self._final = False  # the loop has ended for good: deliveries are refused

    # -- lifetime (any thread) ----------------------------------------------------------
    def start_thread(self) -> None:
        """Run a child subshell on a new thread; returns once it accepts messages."""
        thread = threading.Thread(target=self.run, name=f"subshell-{self.id}", daemon=True)
        thread.start()
        self._ready.wait()

    def run(self, on_ready=None) -> None:
        """Run this subshell's loop on the calling thread until ``stop``."""
        try:
            if self._main_loop is not None:
                self._main_loop.run(self._main, on_ready)
            else:
                anyio.run(self._main, on_ready, backend=self.backend,
                          backend_options=self.backend_options)
        finally:
            if self._release_on_exit:
                self.state.close()
                return_freed_memory()
            self._done.set()

    def deliver(self, msg: Any) -> bool:
        """Queue ``msg`` for this subshell; never blocks.  False if its loop has ended."""
        if self._final or self._done.is_set():
            return False
        self._incoming.append(msg)
        call_soon = self._call_soon  # read after the append (see the module's invariants)
        if call_soon is None:  # no loop yet, or between two: the next one pulls it
            return True
        try:
            call_soon(self._pull)
        except RuntimeError:  # that loop has closed: the next one pulls it, if there is one
            return not self._final
        return True

    def stop(self, release: bool = True) -> None:
        """Interrupt what runs, abort what is queued, then end the loop.

        ``release=False`` (shutdown): leave closing the state to the caller.
        """
        self._release_on_exit = self._release_on_exit and release
        self.stopping = True
        self.deliver(_STOP)
        self.interrupt()  # last: in the main thread's signal handler this raises

    def join(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    # -- interrupt (any thread, or the main thread's SIGINT handler) -------------------
    def interrupt(self) -> bool:
        """Interrupt the user code running now, if any; True if there was some."""
        with self._lock:
            running = self._running
            if running is None:
                return False
            if self.input_waiter is not None:  # blocked in input(): wake it with the interrupt
                self.input_waiter.put(INTERRUPTED)
            elif running == "async" and not self._async_blocked:
                scope = self._scope
                self._cell_call_soon(self._cancel_cell, scope)
                timer = threading.Timer(self.CANCEL_GRACE, self._escalate_if_blocked, (scope,))
                timer.daemon = True
                timer.start()
            elif self.is_main:
                if threading.get_ident() == self.thread_ident:  # in the SIGINT handler
                    raise KeyboardInterrupt
                self._interrupt_main()
            else:
                raise_in_thread(self.thread_ident, KeyboardInterrupt)
                self.wake.set()  # a time.sleep returns to Python code, where it fires
            return True

    def _cancel_cell(self, scope: anyio.CancelScope) -> None:
        """On this subshell's loop: the interrupt of an ``await`` cell lands."""
        self._cancel_landed = scope
        scope.cancel()

    def _escalate_if_blocked(self, scope: anyio.CancelScope) -> None:
        """An ``await`` cell whose loop did not run the cancel is blocking its thread
        (``await x; while True: pass``): interrupt it as blocking code instead."""
        with self._lock:
            if self._running != "async" or self._scope is not scope:
                return
            if self._cancel_landed is scope:
                return
            self._async_blocked = True
        self.interrupt()

    def set_running(self, kind: str | None, scope: anyio.CancelScope | None = None,
                    call_soon: Callable[..., object] | None = None) -> None:
        """Say what user code runs now.  An ``"async"`` cell's ``scope`` belongs to the
        subshell's loop, or to the loop ``call_soon`` schedules on (a cell that
        ``%autoawait`` runs on another library's loop, started on this thread)."""
        if kind is not None:
            with self._lock:
                self._running, self._scope = kind, scope
                self._cell_call_soon = call_soon or self._call_soon
            return
        while True:  # leaving user code: a late interrupt must not escape
            try:
                with self._lock:
                    self._running = self._scope = None
                    self._async_blocked = False
                    if not self.is_main:
                        clear_pending_exception(self.thread_ident)
                return
            except KeyboardInterrupt:
                log.info("interrupt arrived as the code ended; ignored")

    # -- the loop ---------------------------------------------------------------------
    async def _main(self, on_ready) -> bool:
        """Serve the inbox; True when it returns for the parent's loop to be replaced."""
        self._open_inbox()
        self.thread_ident = threading.get_ident()
        self.state.bind()
        if not self.is_main:
            _this_thread.subshell = self
        if not self._ready.is_set():
            self._ready.set()
            if on_ready is not None:
                on_ready()
        main_loop = self._main_loop
        async with self._receive:
            async for msg in self._receive:
                if msg is _STOP:
                    break
                await self._handle(msg)
                if main_loop is not None and main_loop.switch_pending:
                    self._hand_over_inbox()
                    return True
            self.stopping = True
            await anyio.lowlevel.checkpoint()  # deliveries scheduled before the stop land
            self._pull()
            while True:  # anything delivered after the stop still gets an answer
                try:
                    msg = self._receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                if msg is not _STOP:
                    await self._handle(msg)
        self._final = True
        return False

    def _open_inbox(self) -> None:
        """On the loop: a new inbox with what the last loop left, then what was delivered."""
        self._send, self._receive = anyio.create_memory_object_stream(math.inf)
        for msg in self._carried:
            self._send.send_nowait(msg)
        self._carried = []
        self._pulling = True
        self._call_soon = call_soon_threadsafe()
        self._pull()  # what arrived while no loop pulled

    def _pull(self) -> None:
        """On the loop: move what was delivered into its inbox, in order."""
        if not self._pulling:  # a call scheduled on a loop that has handed its inbox over
            return
        incoming, send = self._incoming, self._send.send_nowait
        while incoming:
            send(incoming.popleft())

    def _hand_over_inbox(self) -> None:
        """On the loop, before it ends for the next: stop pulling, carry the inbox over."""
        self._pulling = False
        self._call_soon = None
        while True:
            try:
                self._carried.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                return

    async def _handle(self, msg: Message) -> None:
        token = current_parent.set(msg.header)
        request_token = current_request.set(msg)
        try:
            with Cycle(msg, self.outbox) as cycle:
                if self.stopping:
                    cycle.content = ABORTED
                elif self._abort_remaining and msg.msg_type == "execute_request":
                    cycle.content = {**ABORTED, "execution_count": self.state.execution_count}
                else:
                    handler = cycle.handler(self.handlers, "shell")
                    if handler is not None:
                        cycle.content = await self._call(handler, msg)
        finally:
            if self._abort_remaining:
                self._abort_remaining -= 1
            current_parent.reset(token)
            current_request.reset(request_token)

    async def _call(self, handler: Handler, msg: Message) -> dict[str, Any] | None:
        try:
            return await handler(self, msg)
        except BaseException:
            self.set_running(None)  # an interrupt must not land in the reply's send
            raise

    async def abort_queued(self) -> None:
        """Abort the executes queued now (``stop_on_error``); later ones run."""
        self._pull()  # count what has been delivered, pulled or not
        self._abort_remaining = self._receive.statistics().current_buffer_used + 1
