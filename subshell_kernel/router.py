"""The shell router thread: sole reader of the shell and stdin sockets.

It sleeps in ``poll`` (C, no GIL held) on the two sockets' notification file
descriptors and a wake-up pipe.  For each shell message it verifies the
signature, parses the header only, and hands the message to the subshell that
the header names (``Subshell.deliver`` never blocks).  A request for an
unknown subshell is answered here: busy, an error reply, idle.

Replies and input requests are *sent in place* by the thread that made them,
through ``sockets.SharedSocket``, which serializes every use of the socket with
a lock (zmq's rule for a socket used by several threads).  The first design routed
them through an inproc PUSH/PULL "outbox" that this thread forwarded; that hop
woke this thread once per reply, and waiting for the GIL there cost
~150 us of a ~600 us execute round trip.

The descriptor zmq gives for a socket is edge-triggered: it signals that the
socket's state changed, and *any* operation on the socket, a send included,
may consume that signal.  Hence two rules: this thread drains a socket until
``recv`` would block after each wake-up, and a sender that finds input pending
after its send (``EVENTS & POLLIN``) writes to the wake-up pipe.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from typing import TYPE_CHECKING

import zmq

from .protocol import Codec, Message, ProtocolError, error_content
from .sockets import SharedSocket

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger(__name__)


class Router:
    #: requests received before the first of them is handed on
    BATCH = 64

    def __init__(self, kernel: Kernel, shell: zmq.Socket, stdin: zmq.Socket, codec: Codec):
        self.kernel = kernel
        self.codec = codec
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self.shell = SharedSocket(shell, on_input=self._wake)
        self.stdin = SharedSocket(stdin, on_input=self._wake)
        self.thread = threading.Thread(target=self._run, name="shell-router", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> None:
        """Stop reading and close both sockets (after in-flight sends); idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self.thread.ident is None:  # never started (startup failed): close here
            self._close()
            return
        self._wake()
        self.thread.join(timeout)

    def _wake(self) -> None:
        # Called by senders under a socket's lock; the router closes the pipe only
        # after closing both sockets (under their locks), so fd is never stale here.
        fd = self._wake_w
        if fd is None:
            return
        try:
            os.write(fd, b"!")
        except BlockingIOError:  # the pipe is full: the router will wake anyway
            pass

    def _run(self) -> None:
        shell_fd, stdin_fd, wake_fd = self.shell.fd, self.stdin.fd, self._wake_r
        poller = select.poll()
        for fd in (shell_fd, stdin_fd, wake_fd):
            poller.register(fd, select.POLLIN)
        try:
            while not self._stopping:
                ready = {fd for fd, _ in poller.poll()}
                woken = wake_fd in ready
                if woken:
                    os.read(wake_fd, 4096)
                if woken or stdin_fd in ready:
                    self._drain(self.stdin, self._stdin_reply)
                if woken or shell_fd in ready:
                    self._drain(self.shell, self._route)
        except zmq.ContextTerminated:
            return
        finally:
            self._close()

    def _close(self) -> None:
        for sock in (self.shell, self.stdin):
            sock.close(linger=500)
        os.close(self._wake_r)
        write_fd, self._wake_w = self._wake_w, None
        os.close(write_fd)

    def _drain(self, sock: SharedSocket, handle) -> None:
        """Receive until nothing waits, in batches: all of a batch is received before
        any of it is handled, so that handing a request to its subshell is the last
        thing this thread does before it sleeps (the subshell then finds the GIL free)."""
        while True:
            batch = []
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
        sub = self.kernel.subshells.get(msg.subshell_id)
        if sub is None or not sub.deliver(msg):
            self._unknown_subshell(msg)

    def _unknown_subshell(self, msg: Message) -> None:
        iopub = self.kernel.iopub
        iopub.status("busy", msg.header)
        if msg.msg_type.endswith("_request"):
            content = error_content(
                "SubshellNotFound", f"no subshell with id {msg.subshell_id!r}"
            )
            self.shell.send(self.codec.reply_frames(msg, content))
        else:
            log.warning("%s for unknown subshell %r dropped", msg.msg_type, msg.subshell_id)
        iopub.status("idle", msg.header)

    def _stdin_reply(self, msg: Message) -> None:
        if msg.msg_type != "input_reply":
            log.warning("unexpected %s on stdin; dropped", msg.msg_type)
            return
        try:
            msg.decode()
        except ProtocolError as e:
            log.warning("bad input_reply: %s", e)
            return
        self.kernel.stdin.on_reply(msg)
