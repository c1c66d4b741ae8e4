"""The control thread: sole owner of the control socket.

It answers the control requests (kernel info, shutdown, interrupt, the
subshell requests of JEP 91) with the handlers it is handed, through the
request lifecycle, and never waits on a subshell's loop: it answers while
every subshell is busy.  Handlers are plain functions ``(None, msg) ->
content`` in a dispatch table.

It starts before IPython is imported (``boot``) with the handlers that need
nothing more (``kernel_info``); a request of another type waits until
``open`` hands it the whole table, and the requests behind it wait in order.

Where the C reader is built (``native_control``), the thread waits for
messages in it, and once the kernel is open it answers ``kernel_info``
there, without the GIL; every other message comes back here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import zmq

from ..core.lifecycle import Cycle, Outbox
from ..core.protocol import Codec, Message, ProtocolError
from .kernel_threads import kernel_thread
from .native_control import NativeControl
from .sockets import recv_frames, send_frames

log = logging.getLogger(__name__)

ControlHandler = Callable[[None, Message], dict[str, Any]]


class Control:
    #: how long the control socket must stay quiet before ``on_quiet`` runs
    QUIET_MS = 300

    def __init__(
        self,
        socket: zmq.Socket,
        codec: Codec,
        handlers: Mapping[str, ControlHandler],
        status: Callable[[str, dict], None],
        flush: Callable[[dict], None],
        native: NativeControl | None = None,
    ):
        self.socket = socket
        self._native = native
        self.codec = codec
        self.handlers = handlers
        self._outbox = Outbox(status, self._reply, flush)
        self._on_quiet: Callable[[], None] = lambda: None
        self._on_answered: Callable[[Message], None] = lambda msg: None
        self._opened = threading.Event()
        self._opened_at = 0.0  # time.monotonic() of ``open``
        self._current: Message | None = None
        #: how many requests the C reader had answered when ``_current`` came
        self._answered_before = 0
        self._native_last: tuple[int, Message | None] = (0, None)
        self.thread = kernel_thread(self._run, "control")

    @property
    def current(self) -> Message | None:
        """The control request being handled, or the last one handled, here or by the C
        reader (``get_ipython().kernel.get_parent("control")``)."""
        if self._native is None:
            return self._current
        answered, frames = self._native.last_answered()
        if answered <= self._answered_before or frames is None:
            return self._current
        if self._native_last[0] != answered:  # verified by the C reader already
            self._native_last = (answered, self.codec.parse(frames, verify=False).decode())
        return self._native_last[1]

    def start(self) -> None:
        self.thread.start()

    def open(
        self,
        handlers: Mapping[str, ControlHandler],
        on_quiet: Callable[[], None],
        on_answered: Callable[[Message], None],
    ) -> None:
        """Answer every request with ``handlers`` from now on (any thread).

        ``on_quiet`` runs once the socket has been quiet for ``QUIET_MS``;
        ``on_answered`` after each reply.
        """
        self.handlers = handlers
        self._on_quiet, self._on_answered = on_quiet, on_answered
        self._opened_at = time.monotonic()
        self._opened.set()

    def _reply(self, msg: Message, content: dict[str, Any]) -> None:
        send_frames(self.socket, self.codec.reply_frames(msg, content))

    def _receive(self, timeout_ms: int) -> list[bytes] | None:
        """The next message to handle here, None after ``timeout_ms`` (-1: never) quiet."""
        if self._native is not None:
            # kernel_info is answered in C once open: before, the early reply welcomes
            # waiting subscriptions first (``Boot.early_kernel_info``)
            return self._native.next(timeout_ms, self._opened.is_set())
        if timeout_ms >= 0 and not self.socket.poll(timeout_ms):
            return None
        return recv_frames(self.socket)

    def _run(self) -> None:
        quiet_done = False
        while True:
            try:
                frames = self._receive(-1 if quiet_done else self.QUIET_MS)
                if frames is None:
                    # the first quiet moment once open, however late it comes: work
                    # that the kernel wants off the hot path (see Kernel.warm_up); not
                    # at the open itself, when a frontend's first cell is on its way
                    if self._opened.is_set() and \
                            time.monotonic() - self._opened_at >= self.QUIET_MS / 1000:
                        quiet_done = True
                        try:
                            self._on_quiet()
                        except Exception:
                            log.exception("warm-up failed")
                    continue
            except zmq.ZMQError as e:  # ETERM at shutdown: the owner closes its socket
                log.debug("control thread ends: %s", e)
                self.socket.close(linger=500)
                return
            try:
                msg = self.codec.parse(frames)
            except ProtocolError as e:
                log.warning("dropped a control message: %s", e)
                continue
            if msg.msg_type not in self.handlers:
                self._opened.wait()  # only before open: the kernel is still loading
            self._current = msg
            if self._native is not None:
                self._answered_before = self._native.last_answered()[0]
            with Cycle(msg, self._outbox) as cycle:
                handler = cycle.handler(self.handlers, "control")
                if handler is not None:
                    cycle.content = handler(None, msg)
            self._on_answered(msg)
