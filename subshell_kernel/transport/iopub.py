"""IOPub: the XPUB socket, and the iopub thread that runs the output's background work.

Publishing happens in place: whichever thread publishes sends, under the lock
of a ``sockets.SharedSocket``, so messages leave in the order their publishers
took the lock.  A hand-off per message to another thread (this kernel's first
design, and ipykernel's) woke that thread, which then waited for the GIL
while the publisher kept it; sending in place costs about 5 us per message
and wakes no one.  With replies also sent in place, the kernel's CPU time per
``pass`` request fell from 420 to 333 us.  The C control reader publishes its
statuses the same way, under the same lock (``native_control``: the lock is
then a ``SocketLock``, a mutex that C takes without the GIL).

Everything else that iopub needs runs on one ``iopub`` thread, in one AnyIO
task group on an event loop of the kernel's backend:

- **the flush timer**: a writer that starts a new stream buffer (the first
  write of a burst, never each ``print``) calls ``flush_soon``; the timer
  calls ``on_flush_due`` (the stream router's ``flush_all``)
  ``flush_interval`` seconds later;
- **the fd readers**: what C code and subprocesses write to fds 1 and 2 goes
  into pipes (set up by ``hooks``); one task per pipe awaits it
  (``anyio.wait_readable``) and hands the text to ``on_fd_output``.  The
  thread starts at the boot, before IPython loads, so that subscriptions are
  welcomed at once; the pipes join later (``forward_fds``);
- **the subscriptions**: iopub is an XPUB socket, which hands the kernel each
  subscription and unsubscription (``XPUB_VERBOSER``: every one, not only
  the first or last of each topic); each subscription is answered with an
  ``iopub_welcome`` (JEP 65) on the subscribed topic, so a client knows when
  it is subscribed instead of guessing.  Every subscriber of that topic
  receives the welcome; its parent header is empty.

The thread that finishes an execute request also reads the pipes
(``forward_fd_output``) before the request's idle, so what the cell's C code
and subprocesses wrote is its output before it ends, not a moment after
(nbclient stops listening at the idle).  A pipe is read under its own lock,
by one thread at a time, so its text keeps its order.

``stop`` cancels the task group; then what the pipes still hold is read, and
every buffer is flushed, in order, before the socket closes.

A subscriber that stops reading costs a bounded number of bytes. ZeroMQ
queues per subscriber, up to the socket's high-water mark (``SNDHWM``) of
messages. The mark is set once, from a byte budget: the budget divided by
the largest stream message (``MAX_STREAM_BYTES``, what a runaway print loop
sends), so a stopped subscriber holds at most the budget of stream output.
The mark is not changed later: libzmq's writer learns how far a reader got
only every half-mark of messages, so a mark lowered at run time misjudges a
live subscriber as full.  When a subscriber goes away, the iopub thread
hands the freed heap back to the OS.

A subscriber whose queue is at the mark is behind, not necessarily gone: on
a loaded machine the kernel can publish faster than a reading client (or
the kernel's own zmq I/O thread) keeps up, and a queue of small messages
fills long before the budget's bytes.  So the socket is ``XPUB_NODROP``: a
send that would overflow a queue is refused, and the publisher waits for
the queue to drain (``IOPubSocket``; the C control reader the same way),
up to ``STALL_SECONDS``.  A subscriber still full after that is taken for
stopped: the message is sent lossy (zmq drops it for the full subscriber
alone, every other gets it), and zmq then sets that subscriber aside, so
that no send waits for it, until it reads again.  With a lossy mark (the
socket's default), a reading client lost a message in about one of 15 runs
of the soak test's bursts on this 2-core machine under load, and in every
run with a mark of 64 messages.
"""

from __future__ import annotations

import codecs
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import zmq

from ..core.protocol import Codec, iopub_topic, pack
from .kernel_threads import kernel_thread
from .loop import call_soon_threadsafe
from .sockets import SharedSocket

log = logging.getLogger(__name__)

_SUBSCRIBE, _UNSUBSCRIBE = 1, 0  # first byte of an XPUB subscription message
#: the largest stream message (``runtime.streams.StreamRouter.max_buffer``, in bytes)
MAX_STREAM_BYTES = 1 << 16
#: seconds after a subscriber left before the freed heap is handed back (twice: the
#: pipe's teardown takes a few exchanges of commands between zmq's threads)
RELEASE_DELAYS = (0.2, 1.0)
#: the contents of the statuses sent twice per request, packed once
_STATUS_CONTENT = {state: pack({"execution_state": state}) for state in ("busy", "idle")}
_STATUS_TOPIC = iopub_topic("status")
#: how long a publisher waits for a subscriber whose queue is full before that subscriber
#: is taken for stopped, and how long it sleeps between tries meanwhile
STALL_SECONDS = 1.0
RETRY_SECONDS = 0.001
_EVENTS = int(zmq.EVENTS)


class IOPubSocket(SharedSocket):
    """The XPUB socket: a publisher waits for a subscriber that is behind (module doc).

    Invariants: Python publishers send one at a time, in the order they took
    ``_order``, waits included, so a wait reorders nothing they publish.  A
    waiting publisher sleeps without the socket's own lock, so the C control
    reader (which takes only that lock, and waits the same way) and the
    subscription reader go on meanwhile.  ``XPUB_NODROP`` is on whenever
    the socket's lock is free.  Once ``stop_waiting`` was called (shutdown),
    nothing waits.
    """

    def __init__(self, socket: zmq.Socket, **options: Any):
        super().__init__(socket, **options)
        socket.setsockopt(zmq.XPUB_NODROP, 1)
        self._order = threading.Lock()
        self._waits = True

    def stop_waiting(self) -> None:
        self._waits = False

    def send(self, frames: list) -> None:
        with self._order:
            with self._lock:
                if self._closed:
                    return
                try:
                    waiting = self._send_whole(frames)
                except zmq.Again:  # a subscriber's queue is full
                    waiting = None if self._waits else self._send_lossy(frames)
            if waiting is None:
                waiting = self._wait_and_send(frames)
            if waiting and self._on_input is not None:
                self._on_input()

    def _wait_and_send(self, frames: list) -> bool:
        """``_order`` held, the socket's lock not: try again every ``RETRY_SECONDS``."""
        deadline = time.monotonic() + STALL_SECONDS
        try:
            while time.monotonic() < deadline:
                time.sleep(RETRY_SECONDS)
                with self._lock:
                    if self._closed:
                        return False
                    self.socket.getsockopt(_EVENTS)  # take in how far the readers got
                    try:
                        return self._send_whole(frames)
                    except zmq.Again:
                        pass
        except BaseException:  # an interrupt in the wait: it lands, the message is not lost
            with self._lock:
                if not self._closed:
                    self._send_lossy(frames)
            raise
        log.warning("an iopub subscriber's queue stayed full for %.1f s: it misses messages "
                    "until it catches up", STALL_SECONDS)
        with self._lock:
            return not self._closed and self._send_lossy(frames)

    def _send_lossy(self, frames: list) -> bool:
        """Send to every subscriber but those whose queue is full (socket lock held).

        zmq then sets a subscriber that missed it aside (a send with ``XPUB_NODROP``
        no longer waits for it) until it reads again."""
        self.socket.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            return self._send_whole(frames)
        finally:
            self.socket.setsockopt(zmq.XPUB_NODROP, 1)


class IOPub:
    @staticmethod
    def high_water_mark(subscriber_budget: int) -> int:
        """The ``SNDHWM`` to bind the iopub socket with: messages ZeroMQ holds for a
        subscriber before it drops for that subscriber alone."""
        return max(1, subscriber_budget // MAX_STREAM_BYTES)

    def __init__(self, socket: zmq.Socket, codec: Codec, backend: str, flush_interval: float,
                 lock: Any = None, frames: Any = None):
        socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription, not only the first
        #: ``lock``: the socket's lock, when C code publishes too (``native_control``);
        #: ``frames``: its whole messages in one C call (``SharedSocket``)
        self._socket = IOPubSocket(socket, on_input=self.subscriptions_waiting, lock=lock,
                                   frames=frames)
        self._zmq_fd = socket.FD
        self.codec = codec
        self.backend = backend
        self.flush_interval = flush_interval
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._call_soon: Callable[..., object] | None = None
        self._cancel: Callable[[], None] | None = None
        self._flush_requested = False  # before the loop runs
        self._tasks: anyio.abc.TaskGroup | None = None
        self._fd_readers: dict[str, tuple[threading.Lock, codecs.IncrementalDecoder]] = {}
        self._on_fd_output: Callable[[str, str], None] | None = None
        self._fd_names: dict[int, str] = {}

    # -- any thread -----------------------------------------------------------------
    def publish(
        self,
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any] | None,
        metadata: dict[str, Any] | None = None,
        buffers: list | None = None,
    ) -> None:
        self._send(self.codec.frames(msg_type, content, parent, metadata,
                                     [iopub_topic(msg_type)], buffers))

    def status(self, state: str, parent: dict[str, Any] | None) -> None:
        content = _STATUS_CONTENT.get(state)
        if content is None:
            content = pack({"execution_state": state})
        self._send(self.codec.frames("status", content, parent, None, [_STATUS_TOPIC]))

    def flush_soon(self) -> None:
        """Arm the flush timer (once per burst: the first write to an empty buffer)."""
        if not self._schedule(self._arm_timer):
            self._flush_requested = True

    def _send(self, frames: list) -> None:
        try:
            self._socket.send(frames)
        except zmq.ZMQError as e:  # the context is closing at exit
            log.debug("iopub send failed: %s", e)

    def _schedule(self, fn: Callable[[], None]) -> bool:
        call_soon = self._call_soon
        if call_soon is None:
            return False
        try:
            call_soon(fn)
        except RuntimeError:  # the loop has ended (shutdown)
            return False
        return True

    def subscriptions_waiting(self) -> None:
        """A publisher's send found a subscription waiting (any thread): that send may
        have consumed the FD's edge, so the reader task would not wake for it."""
        self._schedule(self._read_subscriptions)

    # -- lifetime (main thread) -----------------------------------------------------
    def start(
        self, on_flush_due: Callable[[], None], release_memory: Callable[[], None] = lambda: None,
    ) -> None:
        """Start the iopub thread (``boot``: subscriptions are welcomed from then on);
        returns at once."""
        self._on_flush_due = on_flush_due
        self._release_memory = release_memory
        self._thread = kernel_thread(self._run, "iopub")
        self._thread.start()

    def wait_running(self) -> None:
        """Return once the task group runs (RuntimeError if it never does)."""
        if not self._ready.wait(10) or self._tasks is None:
            raise RuntimeError("the iopub thread did not start")

    def forward_fds(self, fd_pipes: Mapping[str, int],
                    on_fd_output: Callable[[str, str], None]) -> None:
        """Read the fd 1 and fd 2 pipes from now on; waits until the task group runs.

        Set once, before any thread reads them (``forward_fd_output`` reads
        nothing before)."""
        self.wait_running()
        for fd in fd_pipes.values():
            os.set_blocking(fd, False)
        self._fd_readers = {name: (threading.Lock(), _decoder()) for name in fd_pipes}
        self._on_fd_output = on_fd_output
        self._fd_names = {fd: name for name, fd in fd_pipes.items()}  # after the readers
        for pipe in fd_pipes.items():
            self._schedule(lambda pipe=pipe: self._send_pipe.send_nowait(pipe))

    def stop(self, timeout: float = 1.0) -> None:
        """Cancel the task group, forward what is left, close the socket (idempotent).
        A subscriber that is behind is not waited for any more."""
        self._socket.stop_waiting()
        if self._thread is not None and self._cancel is not None:
            self._schedule(self._cancel)
            self._thread.join(timeout)
        self._socket.close(linger=1000)

    # -- the iopub thread -----------------------------------------------------------
    def _run(self) -> None:
        try:
            anyio.run(self._main, backend=self.backend)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        send_flush, receive_flush = anyio.create_memory_object_stream[None](float("inf"))
        self._send_flush = send_flush
        self._send_pipe, receive_pipes = \
            anyio.create_memory_object_stream[tuple[str, int]](float("inf"))
        self._send_release, receive_releases = anyio.create_memory_object_stream[None](
            float("inf"))
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            self._cancel = tasks.cancel_scope.cancel
            tasks.start_soon(self._flush_timer, receive_flush)
            tasks.start_soon(self._subscriptions)
            tasks.start_soon(self._read_pipes, receive_pipes)
            tasks.start_soon(self._releases, receive_releases)
            self._call_soon = call_soon_threadsafe()
            if self._flush_requested:
                self._arm_timer()
            self._ready.set()
        # cancelled: forward what the pipes still hold, then flush everything, in order
        self.forward_fd_output()
        self._flush_due()

    def _arm_timer(self) -> None:
        try:
            self._send_flush.send_nowait(None)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _flush_timer(self, requests) -> None:
        async for _ in requests:
            await anyio.sleep(self.flush_interval)
            while True:  # requests that came during the wait are served by this flush
                try:
                    requests.receive_nowait()
                except anyio.WouldBlock:
                    break
            self._flush_due()

    def _flush_due(self) -> None:
        try:
            self._on_flush_due()
        except Exception:  # the task group must outlive any one bad message
            log.exception("stream flush failed")

    async def _subscriptions(self) -> None:
        while True:
            self._read_subscriptions()
            await anyio.wait_readable(self._zmq_fd)

    def _read_subscriptions(self) -> None:
        left = False
        while (frames := self._socket.recv()) is not None:
            event = frames[0]
            if event[:1] == bytes([_SUBSCRIBE]):
                self._welcome(event[1:])
            elif event[:1] == bytes([_UNSUBSCRIBE]):
                left = True
        if left:  # a subscriber went away (or dropped a topic): its pipe may have held a lot
            # through the loop (this may run in a loop callback or on another thread,
            # where no task can be started); before the loop runs there is nothing to free
            self._schedule(lambda: self._send_release.send_nowait(None))

    def welcome_waiting(self) -> None:
        """Welcome the subscriptions waiting now (any thread, also before the iopub
        loop runs): ``boot`` calls it before each ``kernel_info`` reply it gives while
        the kernel loads, so a client that subscribed first is welcomed first."""
        self._read_subscriptions()

    async def _releases(self, requests) -> None:
        async for _ in requests:
            self._tasks.start_soon(self._release_later)

    async def _release_later(self) -> None:
        # zmq frees a departed peer's pipe (and the messages it still held) as the
        # socket processes its commands, which reading EVENTS makes it do; the freed
        # heap then goes back to the OS
        for delay in RELEASE_DELAYS:
            await anyio.sleep(delay)
            self._socket.events()
            self._release_memory()

    def _welcome(self, topic: bytes) -> None:
        try:
            subscription = topic.decode("utf-8")
        except UnicodeDecodeError:  # JEP 65: no welcome for a topic that is not UTF-8
            log.warning("subscription to a topic that is not UTF-8: no iopub_welcome")
            return
        msg = self.codec.new_message("iopub_welcome", {"subscription": subscription}, None)
        self._send(self.codec.serialize(msg, [topic]))

    async def _read_pipes(self, pipes) -> None:
        """A reader task for each pipe ``forward_fds`` hands in."""
        async for name, fd in pipes:
            self._tasks.start_soon(self._forward_fd, name, fd)

    async def _forward_fd(self, name: str, fd: int) -> None:
        while self._read_fd(name, fd):
            await anyio.wait_readable(fd)

    def forward_fd_output(self) -> None:
        """Forward what the fd pipes hold now (any thread: see the module docstring).

        Asks first which pipes hold anything (or have lost their writers), in one
        ``poll``: reading an empty pipe raises ``BlockingIOError``, and this runs
        before every execute request's idle, when the pipes are almost always
        empty (9.8 us for the two pipes that way, 1.8 us with the poll).  A new
        poll object each time: one object polled by two threads at once raises.

        A pipe found empty may have been emptied a moment ago by the iopub
        thread, which forwards what it read under the pipe's lock: taking that
        lock waits until the text is forwarded, so it still comes before what
        the caller sends next (the idle).
        """
        if not self._fd_names:
            return
        poller = select.poll()
        for fd in self._fd_names:
            poller.register(fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(0)}
        for fd, name in self._fd_names.items():
            if fd in ready:
                self._read_fd(name, fd)
            else:
                with self._fd_readers[name][0]:  # a read in progress elsewhere ends first
                    pass

    def _read_fd(self, name: str, fd: int) -> bool:
        """Forward what pipe ``fd`` holds now; False once its writers are all gone."""
        lock, decoder = self._fd_readers[name]
        with lock:
            return self._read_fd_locked(name, fd, decoder)

    def _read_fd_locked(self, name: str, fd: int, decoder) -> bool:
        chunks = []
        open_ = True
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                open_ = False
                break
            if not data:
                open_ = False
                break
            chunks.append(data)
        text = decoder.decode(b"".join(chunks), final=not open_)
        if text and self._on_fd_output is not None:
            try:
                self._on_fd_output(name, text)
            except Exception:
                log.exception("forwarding fd output failed")
        return open_


def _decoder():
    return codecs.getincrementaldecoder("utf-8")(errors="replace")
