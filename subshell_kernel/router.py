"""The shell router thread: sole owner of the shell and stdin sockets.

It waits in ``zmq.Poller`` (C, no GIL held) on three sockets: shell, stdin,
and the outbox, an inproc PULL into which every subshell thread pushes its
replies and input requests.  For each shell message it verifies the
signature, parses the header only, and hands the message to the subshell that
the header names (``Subshell.deliver`` never blocks).  A request for an
unknown subshell is answered here: busy, an error reply, idle.

Every socket is drained until ``recv`` would block after each wake-up, so no
queued request is stranded (the FD of a zmq socket is edge-triggered).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import zmq

from .protocol import Codec, Message, ProtocolError, error_content

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger(__name__)

SHELL, STDIN, STOP = b"s", b"i", b"x"


class Outbox:
    """Per-thread PUSH sockets into the router's PULL (a zmq socket has one owner)."""

    def __init__(self, context: zmq.Context, address: str):
        self._context = context
        self.address = address
        self._local = threading.local()

    def send(self, channel: bytes, frames: list) -> None:
        sock = getattr(self._local, "socket", None)
        if sock is None:
            sock = self._local.socket = self._context.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(self.address)
        sock.send_multipart([channel, *frames])  # copying beats zero-copy Frames for small parts

    def close_thread_socket(self) -> None:
        sock = getattr(self._local, "socket", None)
        if sock is not None:
            self._local.socket = None
            sock.close()


class Router:
    def __init__(self, kernel: Kernel, shell: zmq.Socket, stdin: zmq.Socket, codec: Codec):
        self.kernel = kernel
        self.shell = shell
        self.stdin = stdin
        self.codec = codec
        self.outbox_in = kernel.context.socket(zmq.PULL)
        self.outbox_in.setsockopt(zmq.RCVHWM, 0)
        self.outbox_in.bind(kernel.outbox.address)
        self.thread = threading.Thread(target=self._run, name="shell-router", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in (self.outbox_in, self.shell, self.stdin):
            poller.register(sock, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self.outbox_in in ready and not self._drain_outbox():
                    return
                if self.shell in ready:
                    self._drain(self.shell, self._route)
                if self.stdin in ready:
                    self._drain(self.stdin, self._stdin_reply)
        except zmq.ContextTerminated:
            return
        finally:
            for sock in (self.outbox_in, self.shell, self.stdin):
                sock.close(linger=500)

    def _drain_outbox(self) -> bool:
        recv = self.outbox_in.recv_multipart
        while True:
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return True
            channel = frames[0]
            if channel == SHELL:
                self.shell.send_multipart(frames[1:])
            elif channel == STDIN:
                self.stdin.send_multipart(frames[1:])
            else:
                return False

    def _drain(self, sock: zmq.Socket, handle) -> None:
        recv = sock.recv_multipart
        while True:
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = self.codec.parse(frames)
            except ProtocolError as e:
                log.warning("dropped a message: %s", e)
                continue
            try:
                handle(msg)
            except Exception:  # this thread owns the shell socket: it must not die
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
            self.shell.send_multipart(self.codec.reply_frames(msg, content))
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
