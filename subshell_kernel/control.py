"""The control thread: sole owner of the control socket.

It answers ``kernel_info``, ``shutdown``, ``interrupt`` and the subshell
requests of JEP 91 itself, without ever waiting on a subshell's loop, so it
answers while every subshell is busy.  Its handlers are plain functions in a
dispatch table; each returns the reply content.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import zmq

from .protocol import Codec, Message, ProtocolError, error_content
from .sockets import send_frames

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger(__name__)


def kernel_info(kernel: Kernel, msg: Message) -> dict[str, Any]:
    return kernel.kernel_info()


def shutdown(kernel: Kernel, msg: Message) -> dict[str, Any]:
    restart = bool(msg.content.get("restart", False))
    kernel.request_shutdown(restart)
    return {"status": "ok", "restart": restart}


def interrupt(kernel: Kernel, msg: Message) -> dict[str, Any]:
    """Kernel-level interrupt; our extension: ``content.subshell_id`` names one subshell."""
    if "subshell_id" in msg.content:
        target = msg.content["subshell_id"]
        sub = kernel.subshells.get(target)
        if sub is None:
            return error_content("SubshellNotFound", f"no subshell with id {target!r}")
        sub.interrupt()
    else:
        kernel.interrupt_all()
    return {"status": "ok"}


def create_subshell(kernel: Kernel, msg: Message) -> dict[str, Any]:
    return {"status": "ok", "subshell_id": kernel.subshells.create()}


def delete_subshell(kernel: Kernel, msg: Message) -> dict[str, Any]:
    subshell_id = msg.content.get("subshell_id")
    if not isinstance(subshell_id, str) or not kernel.subshells.delete(subshell_id):
        return error_content("SubshellNotFound", f"no subshell with id {subshell_id!r}")
    return {"status": "ok"}


def list_subshell(kernel: Kernel, msg: Message) -> dict[str, Any]:
    return {"status": "ok", "subshell_id": kernel.subshells.ids()}


CONTROL_HANDLERS = {
    "kernel_info_request": kernel_info,
    "shutdown_request": shutdown,
    "interrupt_request": interrupt,
    "create_subshell_request": create_subshell,
    "delete_subshell_request": delete_subshell,
    "list_subshell_request": list_subshell,
}


class Control:
    #: how long the control socket must stay quiet before the warm-up runs
    WARM_UP_AFTER_MS = 300

    def __init__(self, kernel: Kernel, socket: zmq.Socket, codec: Codec):
        self.kernel = kernel
        self.socket = socket
        self.codec = codec
        self.thread = threading.Thread(target=self._run, name="control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        warmed_up = False
        while True:
            try:
                if not warmed_up and not self.socket.poll(self.WARM_UP_AFTER_MS):
                    # the first quiet moment, however late it comes: prepare the
                    # traceback formatter on this idle thread (40 ms of CPU that the
                    # first error or interrupt of a session would otherwise pay)
                    self.kernel.warm_up_tracebacks()
                    warmed_up = True
                frames = self.socket.recv_multipart()
            except zmq.ZMQError as e:  # ETERM at shutdown: the owner closes its socket
                log.debug("control thread ends: %s", e)
                self.socket.close(linger=500)
                return
            try:
                msg = self.codec.parse(frames)
            except ProtocolError as e:
                log.warning("dropped a control message: %s", e)
                continue
            self._handle(msg)

    def _handle(self, msg: Message) -> None:
        iopub = self.kernel.iopub
        iopub.status("busy", msg.header)
        try:
            msg.decode()
            handler = CONTROL_HANDLERS.get(msg.msg_type)
            if handler is None:
                log.warning("unknown control message type %r", msg.msg_type)
                reply = error_content(
                    "UnknownMessageType", f"unknown control message type {msg.msg_type!r}"
                )
            else:
                reply = handler(self.kernel, msg)
        except ProtocolError as e:
            reply = error_content("ProtocolError", str(e))
        except Exception as e:
            log.exception("error handling %s", msg.msg_type)
            reply = error_content(type(e).__name__, str(e))
        if msg.msg_type.endswith("_request"):
            frames = self.codec.reply_frames(msg, reply)
            send_frames(self.socket, frames)
            if msg.msg_type == "shutdown_request":
                iopub.publish("shutdown_reply", reply, msg.header)
        iopub.status("idle", msg.header)
        if msg.msg_type == "shutdown_request":
            self.kernel.finish_shutdown()
