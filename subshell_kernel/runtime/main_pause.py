"""Hold the main thread still, at a point outside given libraries, while another thread works.

Why: matplotlib is not thread-safe (its mathtext parser, text layout caches,
``rcParams`` and figure registry are shared by every figure).  An ipympl
canvas' ``draw`` or ``resize`` that runs on a child subshell while the
parent builds figures breaks both (parse errors, blank figures, crashes);
locking a few functions only moves the race.  So such a handler runs inside
``MainPause.held()``: the main thread waits at a *safe point*, a moment when
no frame of its stack belongs to an unsafe module (matplotlib and the
libraries around it, and the code that holds locks the handler also takes:
the kernel's output path, ``logging``, the import system).  Between two
figure calls is such a moment; so is a ``time.sleep``, or an idle loop.

How (all on the worker's side except 2):

1. The worker posts a request and sends ``SIGNAL`` to the main thread.
2. Python runs ``on_signal`` on the main thread at its next bytecode
   boundary (a blocking call such as ``time.sleep`` is interrupted, the
   handler runs, the call resumes: PEP 475).  Its stack is safe: it parks
   until the worker is done.  It is not: it marks the outermost unsafe frame
   for a ``return`` trace event (``sys.settrace``, ``frame.f_trace``) and
   returns; the main thread parks when that frame returns.  If a tracer is
   already set (a debugger), it does not touch it, and the worker asks again
   every ``POLL``; it also asks again now and then while waiting for a return,
   and the main thread arms the trace anew if it was lost.  A signal that
   comes while the main thread is in this module's own code (a park ending) is
   answered as if it came in the code below.
3. Meanwhile the worker samples the main thread's stack (``sys._current_frames``,
   every ``POLL`` s).  A safe stack there means the main thread is in a C call
   outside the unsafe modules (a long numpy call, a blocked read) or between
   bytecodes of safe code: the worker goes ahead at once (``forced``).  The
   signal is still pending, and Python handles it before it runs the first
   bytecode of any function it calls, so the main thread parks before it can
   enter matplotlib's Python code.
4. The worker runs its code, then releases the main thread.

Invariants:
- One pause at a time (``_lock``); the main thread itself never waits for one.
- Between two pauses the main thread runs at least as long as it was held
  (up to ``MAX_GAP``): a flood of figure messages slows a running cell down
  by half at most, never starves it.
- The main thread is parked for ``PARK_LIMIT`` s at most: a handler that
  deadlocks on something the parked thread holds cannot hang the kernel (it
  is logged as an error).
- An interrupt that reaches the parked main thread (``KeyboardInterrupt``
  from the SIGINT handler) is raised when the worker is done, not before, so
  the main thread never runs figure code (a cell's ``finally``, the inline
  backend's post-cell flush) beside the worker.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

#: a real-time signal no library uses by convention (SIGUSR2 where there are none)
SIGNAL = signal.SIGRTMIN + 4 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2

#: modules whose frames on the main thread's stack may hold a lock the worker needs
LOCK_HOLDERS = (
    "subshell_kernel.transport",  # the shared sockets
    "subshell_kernel.runtime.streams",  # per-request output buffers
    "subshell_kernel.adapter.comms",  # the comm manager's tables
    "logging",
    "importlib",
)


class _Request:
    __slots__ = ("deferred", "done", "forced", "parked")

    def __init__(self) -> None:
        self.parked = threading.Event()  # the main thread waits for ``done``
        self.done = threading.Event()  # the worker finished
        self.forced = False  # the worker went ahead: the main thread parks wherever it is
        self.deferred = False  # the main thread will park when an unsafe frame returns


class MainPause:
    #: seconds between the worker's looks at the main thread's stack
    POLL = 0.005
    #: longest the main thread stays parked, whatever the worker does
    PARK_LIMIT = 10.0
    #: longest the main thread is given to run between two pauses
    MAX_GAP = 0.25
    #: every this many polls a deferred request is signalled again (see ``_serve``)
    RECHECK = 50

    def __init__(self, unsafe_modules: Iterable[str]):
        self._unsafe = tuple(unsafe_modules)
        self._verdicts: dict[str, bool] = {}  # module name -> unsafe?
        self._lock = threading.Lock()
        self._request: _Request | None = None
        self._main_ident = threading.main_thread().ident
        self._enabled = False
        self._released_at = 0.0  # (monotonic) the last pause ended
        self._last_hold = 0.0  # and lasted this long
        self._handling = False  # main thread: answering a request (signals may nest)
        self._missed = False  # main thread: a signal came while it was answering
        self._armed: FrameType | None = None  # main thread: the frame whose return parks it

    # -- installation (``hooks``: ``on_signal`` becomes the handler of ``SIGNAL``) -------------
    def enable(self) -> None:
        self._enabled = True

    def disable(self, timeout: float = 1.0) -> None:
        """No new pause (before the signal handler is removed); waits for one in progress."""
        got = self._lock.acquire(timeout=timeout)
        self._enabled = False
        if got:
            self._lock.release()

    # -- the worker's side -------------------------------------------------------------------
    @contextmanager
    def held(self) -> Iterator[None]:
        """Run the body while the main thread waits at a safe point (see the module doc).

        On the main thread itself, or before ``enable``, the body just runs.
        """
        if threading.get_ident() == self._main_ident or not self._enabled:
            yield
            return
        while not self._lock.acquire(timeout=self.POLL * 10):  # timed: an interrupt lands
            pass
        request = _Request()
        held_at = time.monotonic()
        try:
            if not self._enabled:
                yield
                return
            self._let_main_run()
            self._request = request
            self._wait_until_held(request)
            held_at = time.monotonic()
            yield
        finally:
            request.done.set()
            self._request = None
            if request.parked.is_set() or request.forced:
                self._released_at = time.monotonic()
                self._last_hold = self._released_at - held_at
            self._lock.release()

    def _let_main_run(self) -> None:
        """Sleep until the main thread ran as long as the last pause held it."""
        gap = min(self._last_hold, self.MAX_GAP)
        while (left := self._released_at + gap - time.monotonic()) > 0:
            time.sleep(min(left, self.POLL * 10))

    def _wait_until_held(self, request: _Request) -> None:
        self._signal_main()
        polls = 0
        while not request.parked.wait(self.POLL):
            frame = sys._current_frames().get(self._main_ident)
            if frame is None or self.is_safe(frame):
                request.forced = True  # it parks when it next runs Python code
                if not request.parked.is_set():
                    self._signal_main()
                return
            polls += 1
            # not deferred: a tracer is set (a debugger), the main thread ignores the
            # signal for now; deferred: it checks that its return trace is still there
            if not request.deferred or polls % self.RECHECK == 0:
                self._signal_main()

    def _signal_main(self) -> None:
        try:
            signal.pthread_kill(self._main_ident, SIGNAL)
        except (ProcessLookupError, OSError):  # the main thread is gone (shutdown)
            pass

    # -- safe points -------------------------------------------------------------------------
    def is_safe(self, frame: FrameType | None) -> bool:
        """No frame of this stack belongs to an unsafe module (this module's own are skipped)."""
        while frame is not None:
            if self._is_unsafe(frame):
                return False
            frame = frame.f_back
        return True

    def _is_unsafe(self, frame: FrameType) -> bool:
        module = frame.f_globals.get("__name__") or ""
        verdict = self._verdicts.get(module)
        if verdict is None:
            verdict = self._verdicts[module] = module != __name__ and any(
                module == prefix or module.startswith(prefix + ".") for prefix in self._unsafe
            )
        return verdict

    def _outermost_unsafe(self, frame: FrameType | None) -> FrameType | None:
        outer = None
        while frame is not None:
            if self._is_unsafe(frame):
                outer = frame
            frame = frame.f_back
        return outer

    # -- the main thread's side --------------------------------------------------------------
    def on_signal(self, signum, frame) -> None:
        """The ``SIGNAL`` handler (main thread): park now, or when the unsafe frames return.

        A signal handled while this module's own code runs (a park ending) is
        answered as if it came in the code below: those frames hold nothing.  One
        that comes while a request is being answered is answered by that loop."""
        if self._handling:
            self._missed = True
            return
        at_safe_point = False
        while frame is not None and frame.f_globals.get("__name__") == __name__:
            if frame.f_code.co_name == "on_event":  # in a return trace: its frame is done
                at_safe_point = True
            frame = frame.f_back
        self._answer(frame, at_safe_point)

    def _answer(self, frame: FrameType | None, at_safe_point: bool) -> None:
        self._handling = True
        try:
            while True:
                self._missed = False
                self._serve(frame, at_safe_point)
                if not self._missed:
                    return
        finally:
            self._handling = False

    def _serve(self, frame: FrameType | None, at_safe_point: bool) -> None:
        """Answer the newest request: park now, or once the outermost unsafe frame returns.

        After a park, this point is still safe: a request that came meanwhile is
        answered by parking again here."""
        while True:
            request = self._request
            if request is None or request.done.is_set() or request.parked.is_set():
                return
            outer = None
            if not (at_safe_point or request.forced):
                outer = self._outermost_unsafe(frame)
            if outer is not None:
                self._park_on_return(request, outer, frame)
                return
            self._park(request)
            at_safe_point = True

    def _park_on_return(self, request: _Request, outer: FrameType, frame: FrameType) -> None:
        """Have the main thread park when ``outer`` (the outermost unsafe frame) returns:
        everything outside it is safe code, so its return is a safe point."""
        current = sys.gettrace()
        if current is not None and current is not _no_local_trace:
            return  # someone traces this thread (a debugger): the worker asks again
        if request.deferred and current is _no_local_trace and _on_stack(self._armed, frame):
            return  # armed, and the armed frame has not returned yet

        def on_event(frame: FrameType, event: str, arg) -> object:
            if event != "return":
                return on_event
            frame.f_trace = None
            _stop_tracing()
            self._answer(frame, at_safe_point=True)
            return None

        outer.f_trace_lines = False
        outer.f_trace = on_event
        self._armed = outer
        sys.settrace(_no_local_trace)  # 'return' events reach outer.f_trace from now on
        request.deferred = True

    def _park(self, request: _Request) -> None:
        """Wait (on the main thread) until the worker is done, ``PARK_LIMIT`` at most."""
        _stop_tracing()
        self._armed = None
        request.parked.set()
        deadline = time.monotonic() + self.PARK_LIMIT
        interrupted: BaseException | None = None
        while True:
            try:
                if request.done.wait(max(0.0, deadline - time.monotonic())):
                    break
                log.error("a figure comm handler held the main thread for %.0f s; "
                          "resuming it", self.PARK_LIMIT)
                break
            except KeyboardInterrupt as e:  # raised once the worker is done
                interrupted = e
        if interrupted is not None:
            raise interrupted


def _on_stack(target: FrameType | None, frame: FrameType | None) -> bool:
    while frame is not None:
        if frame is target:
            return True
        frame = frame.f_back
    return False


def _no_local_trace(frame, event, arg):
    """The global trace while a park waits for a return: no frame is traced but the one
    marked (its ``f_trace``), so the cost is one call per new frame, until the park."""
    return None


def _stop_tracing() -> None:
    if sys.gettrace() is _no_local_trace:
        sys.settrace(None)
