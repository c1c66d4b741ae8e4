"""The iopub thread: sole owner of the iopub PUB socket.

Any thread publishes by putting serialized frames into one FIFO queue
(``IOPub.publish``); the iopub thread sends them in that order.  Because stream
buffers are flushed *through the same queue* (see ``streams``), a stream
message can never overtake a message its writer queued before it.

The thread also drives the periodic stream flush: a writer that starts a new
buffer calls ``flush_soon``; the thread then flushes all buffers
``flush_interval`` seconds later.  It blocks on the queue with a timeout, so it
wakes only for work (no polling loop).

Why a ``queue.SimpleQueue`` and a plain thread rather than an AnyIO task
group: a hand-off into a blocking queue costs ~26 us, into an AnyIO loop
80-150 us (DESIGN.md section 2), and a PUB socket never reads, so there is
nothing for an event loop to multiplex.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from .protocol import Codec, iopub_topic

log = logging.getLogger(__name__)

_FLUSH = object()
_STOP = object()


class IOPub:
    def __init__(self, socket: zmq.Socket, codec: Codec, flush_interval: float = 0.05):
        self._socket = socket
        self.codec = codec
        self.flush_interval = flush_interval
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="iopub", daemon=True)
        #: called on the iopub thread when a flush is due (set by the stream router)
        self.on_flush_due: Callable[[], None] = lambda: None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Send everything queued so far, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- any thread -----------------------------------------------------------------
    def publish(
        self,
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any] | None,
        metadata: dict[str, Any] | None = None,
        buffers: list | None = None,
    ) -> None:
        msg = self.codec.new_message(msg_type, content, parent, metadata)
        self._queue.put(self.codec.serialize(msg, [iopub_topic(msg_type)], buffers))

    def status(self, state: str, parent: dict[str, Any] | None) -> None:
        self.publish("status", {"execution_state": state}, parent)

    def flush_soon(self) -> None:
        self._queue.put(_FLUSH)

    # -- iopub thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._socket.close(linger=1000)

    def _serve(self) -> None:
        deadline: float | None = None
        get = self._queue.get
        send = self._socket.send_multipart
        while True:
            try:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                item = get(timeout=timeout)
            except queue.Empty:
                deadline = None
                self._flush_due()  # queues stream messages behind everything already queued
                continue
            if item is _FLUSH:
                if deadline is None:
                    deadline = time.monotonic() + self.flush_interval
            elif item is _STOP:
                self._flush_due()
                self._drain(send)
                return
            else:
                try:
                    send(item)
                except zmq.ZMQError as e:  # closed context at exit
                    log.debug("iopub send failed: %s", e)
                    return

    def _flush_due(self) -> None:
        try:
            self.on_flush_due()
        except Exception:  # this thread must outlive any one bad message
            log.exception("stream flush failed")

    def _drain(self, send: Callable) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, list):
                try:
                    send(item)
                except zmq.ZMQError:
                    return
