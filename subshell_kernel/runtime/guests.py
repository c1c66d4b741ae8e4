"""The parent's loop as a guest of a GUI toolkit: trio's guest mode, asyncio stepped.

Both run an async function to completion while the main thread waits in the
toolkit's loop (``runtime.gui.base.Toolkit``), and nothing polls:

- trio: ``trio.lowlevel.start_guest_run``.  Trio waits for I/O on a thread
  of its own and hands each batch of work to the host through
  ``Waker.call_soon_threadsafe``; the toolkit watches the waker's socket.
- asyncio: a stdlib selector loop whose selector (epoll, kqueue) is itself a
  pollable file descriptor: readable whenever one of the loop's descriptors
  is, the self-pipe of ``call_soon_threadsafe`` included.  The toolkit
  watches it, a one-shot timer fires when the loop's next timed callback is
  due, and the waker when callbacks are ready now; a wake-up runs iterations
  of the loop (``loop.stop(); loop.run_forever()``) while callbacks are
  ready, within ``_SteppedLoop.BUDGET``.  No helper thread.  uvloop has no
  such descriptor, so a GUI session always runs on asyncio's own loop.

A GUI loop nested inside a callback of the loop (``plt.pause``, a modal
dialog, ``plt.show(block=True)``) must not re-enter it: the waker's drain is
guarded, and the stepped loop stops watching its descriptor (which stays
readable) until the outer step returns, so a nested loop does not spin.
"""

from __future__ import annotations

import collections
import logging
import math
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .gui.base import Toolkit

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)


class Waker:
    """A socketpair whose read end the toolkit watches; also the signal wake-up fd.

    ``call_soon_threadsafe(fn)`` queues ``fn`` and, when the queue was empty,
    writes one byte: whichever loop watches the read end runs ``fn`` on the
    main thread.  Nothing queued is lost when one GUI loop is left and
    another entered: the byte stays in the socket.  Signals write to it too
    (``signal.set_wakeup_fd``), so the Python handler of a SIGINT runs at once
    even while the main thread waits in Qt or Tk.
    """

    def __init__(self):
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._queue: collections.deque[Callable[[], object]] = collections.deque()
        self._lock = threading.Lock()
        self._armed = False
        self._draining = False

    def fileno(self) -> int:
        """The read end, to watch."""
        return self._read.fileno()

    def signal_fd(self) -> int:
        """The write end, for ``signal.set_wakeup_fd``."""
        return self._write.fileno()

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        with self._lock:
            self._queue.append(fn)
            if self._armed:
                return
            self._armed = True
        self._poke()

    def on_readable(self) -> None:
        """Main thread, from the toolkit: run what is queued (any signal handler has
        run by now: it runs before the first bytecode of this callback).

        Runs one batch, what was queued when it began; what the batch queues waits
        for the next wake-up, so the GUI handles its own events in between.
        """
        try:
            while self._read.recv(4096):
                pass
        except BlockingIOError:
            pass
        if self._draining:  # a nested GUI loop inside one of the callbacks below
            return
        self._draining = True
        try:
            with self._lock:
                batch = list(self._queue)
                self._queue.clear()
            for fn in batch:
                try:
                    fn()
                except BaseException:  # noqa: BLE001  (never into the toolkit)
                    log.exception("error in a callback of the parent's loop")
        finally:
            self._draining = False
            with self._lock:
                self._armed = bool(self._queue)
                if self._armed:
                    self._poke()

    def _poke(self) -> None:
        try:
            self._write.send(b"\0")
        except BlockingIOError:  # full: a wake-up is pending anyway
            pass

    def close(self) -> None:
        self._read.close()
        self._write.close()


def run_trio(toolkit: Toolkit, waker: Waker, fn: Callable[..., Awaitable[Any]], *args) -> Any:
    """Run ``fn(*args)`` on trio, as a guest of ``toolkit``; returns its result."""
    import trio  # the trio backend only

    done: list = []

    def finished(outcome) -> None:
        done.append(outcome)
        toolkit.quit()

    trio.lowlevel.start_guest_run(
        fn, *args,
        run_sync_soon_threadsafe=waker.call_soon_threadsafe,
        done_callback=finished,
        host_uses_signal_set_wakeup_fd=True,  # the waker is the wake-up fd
    )
    while not done:
        run_toolkit(toolkit)
    return done[0].unwrap()


def run_asyncio(toolkit: Toolkit, waker: Waker, fn: Callable[..., Awaitable[Any]],
                *args) -> Any:
    """Run ``fn(*args)`` on a new stdlib asyncio loop stepped by ``toolkit``."""
    import asyncio  # here: a trio kernel never imports asyncio

    loop = asyncio.SelectorEventLoop()
    asyncio.set_event_loop(loop)  # as asyncio.Runner does, for get_event_loop()
    stepper = _SteppedLoop(loop, toolkit, waker)
    try:
        task = loop.create_task(fn(*args))
        task.add_done_callback(lambda _task: toolkit.quit())
        stepper.start()
        while not task.done():
            run_toolkit(toolkit)
        stepper.stop()
        return task.result()
    finally:
        stepper.stop()
        _close_loop(loop)
        asyncio.set_event_loop(None)


def run_toolkit(toolkit: Toolkit) -> None:
    try:
        toolkit.run()
    except KeyboardInterrupt:  # a SIGINT handler that raised where no cell runs
        log.info("interrupt in the GUI loop outside any cell; ignored")


class _SteppedLoop:
    """An asyncio loop run one iteration at a time by a toolkit: on its selector's fd,
    on a timer for its next timed callback, and through the waker when callbacks are
    ready now.  (Not a 0 ms timer: a cell would then run inside a Tcl timer
    handler, where a nested Tk loop such as ``plt.pause`` starves Tk's timers.)"""

    #: seconds one wake-up may keep running iterations whose callbacks are ready at
    #: once (a request's chain: delivery, task, reply), before the GUI gets a turn
    BUDGET = 0.002

    def __init__(self, loop: asyncio.AbstractEventLoop, toolkit: Toolkit, waker: Waker):
        self.loop = loop
        self.toolkit = toolkit
        self.waker = waker
        self._soon = False
        self.fd = loop._selector.fileno()  # type: ignore[attr-defined]
        self._watching = False
        self._stopped = False

    def start(self) -> None:
        self._watch(True)
        self._arm()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._watch(False)
            self.toolkit.set_timer(None, self.step)

    def _watch(self, on: bool) -> None:
        if on and not self._watching:
            self.toolkit.watch(self.fd, self.step)
        elif not on and self._watching:
            self.toolkit.unwatch(self.fd)
        self._watching = on

    def _step_soon(self) -> None:
        self._soon = False
        self.step()

    def step(self) -> None:
        loop = self.loop
        if self._stopped or loop.is_closed():
            return
        if loop.is_running():  # a GUI loop nested in one of the loop's callbacks
            self._watch(False)  # the fd stays readable: the nested loop would spin
            return
        try:
            budget = time.monotonic() + self.BUDGET
            while True:
                loop.stop()
                loop.run_forever()  # with stop() first: exactly one iteration
                if not ready(loop) or self._stopped or time.monotonic() > budget:
                    break
        finally:
            if not self._stopped:
                self._watch(True)
                self._arm()

    def _arm(self) -> None:
        loop: Any = self.loop
        if ready(loop):
            self.toolkit.set_timer(None, self.step)
            if not self._soon:
                self._soon = True
                self.waker.call_soon_threadsafe(self._step_soon)
        elif loop._scheduled:
            delay = loop._scheduled[0].when() - loop.time()
            self.toolkit.set_timer(max(0, math.ceil(delay * 1000)), self.step)
        else:
            self.toolkit.set_timer(None, self.step)


def ready(loop: Any) -> bool:
    """Has the loop callbacks to run now?  (``_ready``: asyncio's own, since 3.4.)"""
    return bool(loop._ready)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.Runner.close`` does: cancel what is left, shut down async
    generators and the default executor, close.  The GUI loop has ended: this
    runs the loop natively for the last steps."""
    import asyncio

    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
