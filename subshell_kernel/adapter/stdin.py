"""``input()`` and ``getpass()`` over the stdin channel.

An execute request that allows stdin binds itself (and its subshell) in the
``stdin_request`` ContextVar.  ``input()`` sends an ``input_request`` whose
parent is that request, to the frontend identity that sent it, and blocks
until the ``input_reply`` *whose parent is this input_request* arrives.
Replies are matched by ``parent_header.msg_id``, never by order, so two
subshells waiting in ``input()`` at once each get their own answer.  A reply
without a parent (jupyter_client's ``KernelClient.input`` sends none) goes to
the oldest request sent to the same frontend identity.

The router thread reads the stdin socket and hands each reply to ``on_reply``;
requests are sent in place by the thread calling ``input()`` (``SharedSocket``).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from IPython.core.error import StdinNotImplementedError

from ..core.protocol import Message
from ..runtime.subshell import INTERRUPTED, Subshell

if TYPE_CHECKING:
    from ..transport.channels import Channels

log = logging.getLogger(__name__)

#: the execute request (and its subshell) that input() answers to, if it allows stdin
stdin_request: ContextVar[tuple[Message, Subshell] | None] = ContextVar(
    "stdin_request", default=None
)


class Stdin:
    """``input`` and ``getpass`` (installed as the builtins by ``hooks``)."""

    def __init__(self, channels: Channels, flush: Callable[[dict], None]):
        self._channels = channels
        self._flush = flush
        #: input_request msg_id -> (frontend identity, waiter), oldest first
        self._waiting: dict[str, tuple[list[bytes], queue.SimpleQueue]] = {}

    def input(self, prompt: object = "") -> str:
        return self._ask(str(prompt), password=False)

    def getpass(self, prompt: str = "Password: ", stream=None) -> str:
        return self._ask(prompt, password=True)

    def _ask(self, prompt: str, password: bool) -> str:
        bound = stdin_request.get()
        if bound is None:
            raise StdinNotImplementedError(
                "input() was called, but this frontend does not support input requests "
                "(allow_stdin is false, or the call came from a thread of its own)."
            )
        request, sub = bound
        self._flush(request.header)
        msg = self._channels.codec.new_message(
            "input_request", {"prompt": prompt, "password": password}, request.header
        )
        waiter: queue.SimpleQueue = queue.SimpleQueue()
        msg_id = msg["header"]["msg_id"]
        self._waiting[msg_id] = (request.idents, waiter)
        sub.input_waiter = waiter
        try:
            self._channels.send_stdin(msg, request.idents)
            reply = waiter.get()
        finally:
            sub.input_waiter = None
            del self._waiting[msg_id]
        if reply is INTERRUPTED:
            raise KeyboardInterrupt("interrupted while waiting for input")
        value = reply.content.get("value", "")
        return value if isinstance(value, str) else str(value)

    def on_reply(self, msg: Message) -> None:
        """Router thread: hand an input_reply to the input() waiting for it."""
        parent_id = msg.parent_header.get("msg_id", "")
        pending = self._waiting.get(parent_id) if isinstance(parent_id, str) else None
        if pending is None and not msg.parent_header:
            pending = next((p for p in list(self._waiting.values()) if p[0] == msg.idents), None)
        if pending is None:
            log.warning("input_reply to no pending input_request; dropped")
        else:
            pending[1].put(msg)
