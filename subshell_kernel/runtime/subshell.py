"""A subshell: one thread, one AnyIO event loop, one inbox, requests in order.

The parent subshell runs on the main thread (it receives SIGINT); each child
subshell runs on a thread of its own.  The router thread hands messages in
with ``deliver``, which schedules a pull into this subshell's inbox on its
loop and returns at once: a busy subshell never makes the router wait.

Invariants:
- Requests to one subshell are handled one at a time, in arrival order.
- Every ``*_request`` gets exactly one reply, sent before its ``idle`` status,
  whatever happens (errors, interrupts, deletion: ``aborted``).
- ``_running`` says what user code runs now: ``None``, ``"sync"`` (blocking
  code: interrupted by KeyboardInterrupt) or ``"async"`` (a top-level
  ``await`` cell: interrupted by cancelling its cancel scope).  It is changed
  and read under ``_lock``, so an interrupt never lands outside user code.
- While an ``await`` cell runs, its loop is free whenever the cell awaits:
  a task beside the cell takes the comm messages out of the inbox as they
  arrive and handles them then (``comms_beside``), so a cell can await what a
  comm handler resolves.  Other requests keep their place and order.
- ``deliver_comm_if_free`` says whether the loop is free for a comm message
  (``core.comm_routing``) and, if so, queues it in one step under
  ``_route_lock``, so a comm message routed here never waits behind a
  request that started in between.
- ``deliver`` appends to ``_incoming`` (a deque: no lock, safe from a signal
  handler) and schedules ``_pull`` on the loop, which moves it into the
  inbox.  The inbox outlives the loop, so the parent's loop can be replaced
  between two requests (``%gui``: a ``runtime.mainloop.MainLoop`` runs it
  natively or inside a GUI) without losing or refusing a message: the old
  loop stops pulling, what it pulled stays in the inbox in order, and what it
  did not pull stays in ``_incoming`` for the next loop, whose first
  ``_pull`` comes after it has taken over ``_call_soon``.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio

from ..core.lifecycle import Cycle, Outbox
from ..core.protocol import Message
from ..transport.kernel_threads import kernel_timer
from ..transport.loop import call_soon_threadsafe
from .context import current_parent, current_request
from .inbox import Inbox, is_comm
from .mainloop import MainLoop
from .threads import fire_pending_exception, raise_in_thread, return_freed_memory

log = logging.getLogger(__name__)

_STOP = object()
INTERRUPTED = object()  # put into an input() waiter to interrupt it


class _ThreadSubshell(threading.local):
    subshell: Subshell | None = None  # the subshell running on this thread (parent included)


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
    if sub is None or sub.is_main or type(seconds) not in (int, float) or not seconds > 0:
        return _blocking_sleep(seconds)  # also raises its own errors
    wake = sub.wake
    wake.clear()
    deadline = time.monotonic() + seconds
    while not wake.wait(deadline - time.monotonic()):
        if time.monotonic() >= deadline:
            return


interruptible_sleep = _interruptible_sleep  # installed as ``time.sleep`` by ``hooks``


def running_subshell() -> Subshell | None:
    """The subshell whose thread calls this (the parent on the main thread), or None
    (a thread of the kernel's own or of user code)."""
    return _this_thread.subshell


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
    ``before_raise``    called with the thread's id just before ``KeyboardInterrupt`` is
                        raised into the code it runs: a debugger that holds the thread at
                        a breakpoint lets go of it, so the stop ends with the exception
    ``main_loop``  (the parent only) runs its loop, natively or hosted by a GUI
    ``on_comm_done``    called with each comm message once it was handled
                        (``runtime.comm_dispatch``: a comm's messages keep their order)
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
        on_comm_done: Callable[[Message], None] | None = None,
        before_raise: Callable[[int], None] = lambda thread_ident: None,
    ):
        self.id = subshell_id
        self.state = state
        self.handlers = handlers
        self.outbox = outbox
        self.backend = backend
        self.backend_options = backend_options or {}
        self._interrupt_main = interrupt_main
        self._before_raise = before_raise
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
        self._raised = False  # a KeyboardInterrupt was raised into this (child) thread
        #: msg_ids of the executes queued when a cell failed (``stop_on_error``)
        self._aborting: set[str] = set()
        self._ready = threading.Event()
        self._done = threading.Event()
        #: set by an interrupt: ends an ``_interruptible_sleep`` on this thread
        self.wake = threading.Event()
        self._call_soon = None  # None until the loop runs, and while it is replaced
        self._cell_call_soon = None  # where the running ``await`` cell's cancel is scheduled
        self._inbox = Inbox()  # on the loop; it outlives a replaced loop
        self._incoming: collections.deque = collections.deque()  # delivered, not pulled yet
        self._pulling = False  # this loop's inbox takes what is delivered
        self._final = False  # the loop has ended for good: deliveries are refused
        #: comm routing (``deliver_comm_if_free``): each counter has one writer, the
        #: router thread for ``_delivered``, this subshell's thread for the others
        self._route_lock = threading.Lock()
        self._delivered = 0  # messages handed to ``deliver``
        self._started = 0  # messages whose handling began
        self._handling = False  # the request loop is handling a message
        self._beside = False  # an ``await`` cell runs and comm messages are served beside it
        self._on_comm_done = on_comm_done

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
        """Queue ``msg`` for this subshell; never blocks.  False if its loop has ended.

        Messages come from the router thread only (``_STOP`` from any thread)."""
        if self._final or self._done.is_set():
            return False
        if msg is not _STOP:
            self._delivered += 1  # before the hand-off: the queue is never under-counted
        self._incoming.append(msg)
        call_soon = self._call_soon  # read after the append (see the module's invariants)
        if call_soon is None:  # no loop yet, or between two: the next one pulls it
            return True
        try:
            call_soon(self._pull)
        except RuntimeError:  # that loop has closed: the next one pulls it, if there is one
            return not self._final
        return True

    def deliver_comm_if_free(self, msg: Message) -> bool:
        """Queue a comm message if this subshell's loop is free for it: an ``await``
        cell runs (the message is handled beside it), or the subshell is idle with
        nothing queued.  False, and nothing queued, if it is blocked or queued up."""
        with self._route_lock:
            if self._beside:
                free = not self._async_blocked
            else:
                free = not self._handling and self._delivered - self._started <= 0
            return free and self.deliver(msg)

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

    @property
    def running(self) -> str | None:
        """What user code runs now: None, ``"sync"`` or ``"async"`` (read without the lock)."""
        return self._running

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
                kernel_timer(self.CANCEL_GRACE, self._escalate_if_blocked, (scope,)).start()
            elif self.is_main:
                if threading.get_ident() == self.thread_ident:  # in the SIGINT handler
                    self._before_raise(self.thread_ident)
                    raise KeyboardInterrupt
                self._interrupt_main()
            else:
                self._raised = True
                raise_in_thread(self.thread_ident, KeyboardInterrupt)
                self.wake.set()  # a time.sleep returns to Python code, where it fires
                self._before_raise(self.thread_ident)  # it fires in the debugger's wait
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
                    raised, self._raised = self._raised, False
                if raised:  # no new one can come now; one that has not fired fires here
                    fire_pending_exception()
                return
            except KeyboardInterrupt:
                log.info("interrupt arrived as the code ended; ignored")

    # -- the loop ---------------------------------------------------------------------
    async def _main(self, on_ready) -> bool:
        """Serve the inbox; True when it returns for the parent's loop to be replaced."""
        self._pulling = True
        self._call_soon = call_soon_threadsafe()
        self._pull()  # what arrived while no loop pulled
        self.thread_ident = threading.get_ident()
        self.state.bind()
        _this_thread.subshell = self
        if not self._ready.is_set():
            self._ready.set()
            if on_ready is not None:
                on_ready()
        inbox, main_loop = self._inbox, self._main_loop
        while True:
            msg = await inbox.take()
            if msg is _STOP:
                break
            await self._handle(msg, in_turn=True)
            if main_loop is not None and main_loop.switch_pending:
                self._pulling = False  # the next loop pulls; the inbox stays as it is
                self._call_soon = None
                return True
        self.stopping = True
        await anyio.lowlevel.checkpoint()  # deliveries scheduled before the stop land
        self._pull()
        while True:  # anything delivered after the stop still gets an answer
            try:
                msg = inbox.take_nowait()
            except anyio.WouldBlock:
                break
            if msg is not _STOP:
                await self._handle(msg, in_turn=True)
        self._final = True
        return False

    def _pull(self) -> None:
        """On the loop: move what was delivered into the inbox, in order."""
        if not self._pulling:  # a call scheduled on a loop that has handed the inbox over
            return
        incoming, put = self._incoming, self._inbox.put
        while incoming:
            put(incoming.popleft())

    async def _handle(self, msg: Message, in_turn: bool) -> None:
        """Handle one message; ``in_turn``: taken by the request loop (not beside a cell)."""
        if in_turn:
            self._handling = True
        self._started += 1  # after ``_handling``: the router reads them in the other order
        token = current_parent.set(msg.header)
        request_token = current_request.set(msg)
        try:
            with Cycle(msg, self.outbox) as cycle:
                if self.stopping:
                    cycle.content = ABORTED
                elif msg.msg_type == "execute_request" and msg.msg_id in self._aborting:
                    cycle.content = {**ABORTED, "execution_count": self.state.execution_count}
                else:
                    handler = cycle.handler(self.handlers, "shell")
                    if handler is not None:
                        cycle.content = await self._call(handler, msg, in_turn)
        finally:
            self._aborting.discard(msg.msg_id)
            current_parent.reset(token)
            current_request.reset(request_token)
            if in_turn:
                self._handling = False
            if self._on_comm_done is not None and is_comm(msg):
                self._on_comm_done(msg)

    async def _call(self, handler: Handler, msg: Message, in_turn: bool) -> dict[str, Any] | None:
        try:
            return await handler(self, msg)
        except BaseException:
            if in_turn:  # (beside a cell, the cell still runs)
                self.set_running(None)  # an interrupt must not land in the reply's send
            raise

    async def abort_queued(self) -> None:
        """Abort the executes queued now (``stop_on_error``); later ones run."""
        self._pull()  # what has been delivered, pulled or not
        self._aborting.update(m.msg_id for m in self._inbox
                              if getattr(m, "msg_type", None) == "execute_request")

    # -- comm messages beside an ``await`` cell ------------------------------------------
    @asynccontextmanager
    async def comms_beside(self) -> AsyncIterator[None]:
        """While the body (an ``await`` cell) runs, handle comm messages as they arrive.

        The task beside the cell takes only comm messages from the inbox, oldest
        first, so the messages of a comm keep their order and every other request
        keeps its place.  Each message is handled to its end (shielded): ending the
        cell never cuts a comm handler short.  When the body ends, comm messages
        routed here while it ran are handled before it returns, since they were
        sent here because this loop was free.
        """
        async with anyio.create_task_group() as tg:
            with self._route_lock:
                self._beside = True
            tg.start_soon(self._serve_comms)
            try:
                yield
            finally:
                with self._route_lock:
                    self._beside = False
                tg.cancel_scope.cancel()
        await anyio.lowlevel.checkpoint()  # deliveries routed here before that land
        while True:
            try:
                msg = self._inbox.take_nowait(comm_only=True)
            except anyio.WouldBlock:
                break
            await self._handle_beside(msg)

    async def _serve_comms(self) -> None:
        while True:
            await self._handle_beside(await self._inbox.take(comm_only=True))

    async def _handle_beside(self, msg: Message) -> None:
        with anyio.CancelScope(shield=True):
            await self._handle(msg, in_turn=False)
