"""The shell router thread: sole reader of the shell and stdin sockets.

It sleeps in ``poll`` (C, no GIL held) on the two sockets' notification file
descriptors and a wake-up pipe.  For each shell message it verifies the
signature, parses the header only, and hands the message on with
``deliver`` (``Subshells.deliver``: into the inbox of the subshell the header
names, never waiting).  A message for a subshell that does not exist is
answered here, through the request lifecycle: busy, the ``UnknownSubshellError``
error reply for a request, idle.

Replies and input requests are *sent in place* by the thread that made them,
through ``sockets.SharedSocket``.  The first design routed them through an
inproc PUSH/PULL "outbox" that this thread forwarded; that hop woke this
thread once per reply, and waiting for the GIL there cost ~150 us of a
~600 us execute round trip.

The sockets' descriptors are edge-triggered (see ``sockets``): this thread
drains a socket until ``recv`` would block after each wake-up, and a sender
that leaves input pending wakes it through the ``WakePipe``.

The router starts before IPython is imported (``boot``), and until ``open``
hands it the subshells' ``deliver`` it *holds* what arrives, in order.  A
request with an ``early`` handler (``kernel_info_request``) that has nothing
held ahead of it is answered here meanwhile: a frontend sees the kernel ready
~0.25 s sooner, and no reply overtakes a request sent before it.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable, Mapping

import zmq

from ..core.lifecycle import Cycle, Outbox
from ..core.protocol import Codec, Message, ProtocolError, error_content
from .kernel_threads import kernel_thread
from .sockets import SharedSocket, WakePipe

log = logging.getLogger(__name__)

_POLLIN = int(zmq.POLLIN)


class Router:
    #: requests received before the first of them is handed on
    BATCH = 64

    def __init__(
        self,
        shell: SharedSocket,
        stdin: SharedSocket,
        wake: WakePipe,
        codec: Codec,
        outbox: Outbox,
        early: Mapping[str, Callable[[], dict]],
    ):
        self.shell = shell
        self.stdin = stdin
        self._wake = wake
        self.codec = codec
        self._outbox = outbox
        self._early = early
        #: ``Subshells.deliver`` and the ``input()`` replies' taker, from ``open`` on
        self._deliver: Callable[[Message], bool] | None = None
        self._on_input_reply: Callable[[Message], None] | None = None
        #: what came before ``open``, in order; ``_lock`` makes ``open``'s hand-over
        #: of it and this thread's routing one sequence
        self._held: list[Message] = []
        self._lock = threading.Lock()
        self._stopping = False
        self.thread = kernel_thread(self._run, "shell-router")

    def start(self) -> None:
        self.thread.start()

    def open(self, deliver: Callable[[Message], bool],
             on_input_reply: Callable[[Message], None]) -> None:
        """From now on hand messages to ``deliver``, the held ones first (in order)."""
        with self._lock:
            self._deliver, self._on_input_reply = deliver, on_input_reply
            held, self._held = self._held, []
            for msg in held:
                self._route_open(msg)

    def stop(self, timeout: float) -> None:
        """Stop reading and close both sockets (after in-flight sends); idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self.thread.ident is None:  # never started (startup failed): close here
            self._close()
            return
        self._wake.wake()  # safe even if the router thread has closed the pipe already
        self.thread.join(timeout)

    def _run(self) -> None:
        shell_fd, stdin_fd, wake_fd = self.shell.fd, self.stdin.fd, self._wake.read_fd
        poller = select.poll()
        for fd in (shell_fd, stdin_fd, wake_fd):
            poller.register(fd, select.POLLIN)
        try:
            while not self._stopping:
                ready = {fd for fd, _ in poller.poll()}
                woken = wake_fd in ready
                if woken:
                    self._wake.clear()
                if woken or stdin_fd in ready:
                    self._drain(self.stdin, self._stdin_message)
                if woken or shell_fd in ready:
                    self._drain(self.shell, self._route)
        except zmq.ContextTerminated:
            return
        finally:
            self._close()

    def _close(self) -> None:
        for sock in (self.shell, self.stdin):
            sock.close(linger=500)
        self._wake.close()

    def _drain(self, sock: SharedSocket, handle) -> None:
        """Receive until nothing waits, in batches: all of a batch is received before
        any of it is handled, so that handing a request to its subshell is the last
        thing this thread does before it sleeps (the subshell then finds the GIL free).

        After the first message, ``EVENTS`` says whether another waits: a
        ``recv`` that finds none raises ``zmq.Again``, which costs 9.5 us against
        4.1 us for ``EVENTS``, and a lone request (the common case) paid it
        before it was handed on.  Reading ``EVENTS`` re-arms the edge-triggered
        descriptor as that ``recv`` would.  When more wait (a pipeline), the
        rest is received until ``recv`` finds none, one failed ``recv`` per batch
        rather than an ``EVENTS`` per message.
        """
        while True:
            batch = []
            frames = sock.recv()
            if frames is not None:
                batch.append(frames)
                if sock.events() & _POLLIN:
                    while len(batch) < self.BATCH:
                        frames = sock.recv()
                        if frames is None:
                            break
                        batch.append(frames)
            for frames in batch:
                self._handle(frames, handle)
            if len(batch) < self.BATCH:
                return

    def _handle(self, frames: list, handle) -> None:
        try:
            msg = self.codec.parse(frames)
        except ProtocolError as e:
            log.warning("dropped a message: %s", e)
            return
        try:
            handle(msg)
        except Exception:  # this thread reads the shell socket: it must not die
            log.exception("error routing %s", msg.msg_type)

    def _route(self, msg: Message) -> None:
        if self._deliver is not None:  # open: no lock needed, it never closes again
            self._route_open(msg)
            return
        with self._lock:
            if self._deliver is not None:
                self._route_open(msg)
            elif (answer := self._early.get(msg.msg_type)) and not self._held:
                with Cycle(msg, self._outbox) as cycle:
                    msg.decode()
                    cycle.content = answer()
            else:
                self._held.append(msg)

    def _route_open(self, msg: Message) -> None:
        if not self._deliver(msg):
            self._unknown_subshell(msg)

    def _unknown_subshell(self, msg: Message) -> None:
        with Cycle(msg, self._outbox) as cycle:
            log.warning("%s for unknown subshell %r", msg.msg_type, msg.subshell_id)
            cycle.content = error_content(
                "UnknownSubshellError", f"Unknown subshell_id {msg.subshell_id!r}"
            )

    def _stdin_message(self, msg: Message) -> None:
        if msg.msg_type != "input_reply" or self._on_input_reply is None:
            log.warning("unexpected %s on stdin; dropped", msg.msg_type)
            return
        try:
            msg.decode()
        except ProtocolError as e:
            log.warning("bad input_reply: %s", e)
            return
        self._on_input_reply(msg)
