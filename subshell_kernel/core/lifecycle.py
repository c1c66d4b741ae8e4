"""The life of one shell or control message, sans IO.

Every message the kernel handles goes through the same phases, and only
these (``TRANSITIONS`` is the whole table; a step it lacks raises
``LifecycleError``, which is a bug in the kernel, never the client's doing)::

    RECEIVED --busy--> BUSY --reply--> REPLIED --idle--> DONE
                         \\_______________idle_____________/   (not a request)

Rules, for every message, whatever its handler does (returns, raises,
is interrupted, is aborted):

1. ``status: busy`` comes first and ``status: idle`` last, both on iopub and
   both with the message's header as parent.  The time of the busy is the
   reply's ``metadata.started``.
2. A message whose type ends in ``_request`` gets exactly one reply, after
   busy and before idle: the content its handler produced; or an error
   content if the message could not be decoded (``ProtocolError``), has a
   type no handler knows (``UnknownMessageType``), or its handler raised
   (the exception's class name and text).
3. Any other message (``comm_open``, ``comm_msg``, ``comm_close``) gets no
   reply.
4. The request's buffered stream output is flushed before its idle, so a
   frontend that saw idle has seen all the output written until then.

The three places that answer messages (a subshell's loop, the control
thread, and the shell router for a subshell that does not exist) all go
through ``Cycle``; none of them sends busy, a reply or idle by itself.  A
``Cycle`` does its IO only through the ``Outbox`` it is given, so these rules
are tested without sockets or threads.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .protocol import Message, ProtocolError, error_content

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    #: members are singletons: hash by identity, in C (``Enum.__hash__`` is a Python
    #: call, three per message through ``TRANSITIONS``)
    __hash__ = object.__hash__

    RECEIVED = "received"
    BUSY = "busy"
    REPLIED = "replied"
    DONE = "done"


#: (phase, step) -> the next phase; no other step is allowed
TRANSITIONS: dict[tuple[Phase, str], Phase] = {
    (Phase.RECEIVED, "busy"): Phase.BUSY,
    (Phase.BUSY, "reply"): Phase.REPLIED,
    (Phase.BUSY, "idle"): Phase.DONE,
    (Phase.REPLIED, "idle"): Phase.DONE,
}


class LifecycleError(RuntimeError):
    """A step the lifecycle does not allow: a bug in the kernel."""


def is_request(msg_type: str) -> bool:
    return msg_type.endswith("_request")


@dataclass(frozen=True, slots=True)
class Outbox:
    """The IO a ``Cycle`` does, as three callables (each safe from its caller's thread)."""

    #: publish ``status`` with ``execution_state`` on iopub, with this parent header
    status: Callable[[str, dict[str, Any]], None]
    #: send the reply content for this request back to whoever sent it
    reply: Callable[[Message, dict[str, Any]], None]
    #: emit the stream output buffered for this parent header
    flush: Callable[[dict[str, Any]], None]


#: exceptions a handler may raise that become an error reply and end there;
#: anything else (a cancellation of the loop itself) is answered, then re-raised
ANSWERED_EXCEPTIONS = (Exception, KeyboardInterrupt, SystemExit)


class Cycle:
    """One message, from busy to idle: ``with Cycle(msg, outbox) as cycle: ...``.

    Inside the block the caller decides the reply: it sets ``cycle.content``,
    usually from ``cycle.handler(table)`` and the handler it returns.  An
    exception that leaves the block becomes the reply (rule 2) and does not
    propagate, so whoever handles messages outlives any one of them.
    """

    __slots__ = ("content", "msg", "outbox", "phase")

    def __init__(self, msg: Message, outbox: Outbox):
        self.msg = msg
        self.outbox = outbox
        self.phase = Phase.RECEIVED
        #: the reply content (ignored for messages that are not requests)
        self.content: dict[str, Any] | None = None

    def _step(self, step: str) -> None:
        try:
            self.phase = TRANSITIONS[(self.phase, step)]
        except KeyError:
            raise LifecycleError(
                f"{step} after {self.phase.value} for {self.msg.msg_type}"
            ) from None

    def __enter__(self) -> Cycle:
        self._step("busy")
        self.msg.started = time.time()
        self.outbox.status("busy", self.msg.header)
        return self

    def handler(self, table: Mapping[str, Callable], channel: str) -> Callable | None:
        """Decode the rest of the message and find its handler in ``table``.

        None if no handler knows the type (the error reply is then set); a
        message that cannot be decoded raises ``ProtocolError`` into the block.
        """
        msg = self.msg
        msg.decode()
        handler = table.get(msg.msg_type)
        if handler is None:
            log.warning("unknown %s message type %r", channel, msg.msg_type)
            self.content = error_content(
                "UnknownMessageType", f"unknown {channel} message type {msg.msg_type!r}"
            )
        return handler

    def __exit__(self, etype, exc, tb) -> bool:
        msg = self.msg
        if exc is not None:
            self.content = content_for(msg, exc)
        try:
            if is_request(msg.msg_type):
                self._step("reply")
                content = self.content
                if content is None:
                    log.error("no reply content for %s", msg.msg_type)
                    content = error_content("KernelError", "the kernel produced no reply")
                self.outbox.reply(msg, content)
        finally:
            self.outbox.flush(msg.header)
            self._step("idle")
            self.outbox.status("idle", msg.header)
        return exc is None or isinstance(exc, ANSWERED_EXCEPTIONS)


def content_for(msg: Message, exc: BaseException) -> dict[str, Any]:
    """The error reply for an exception that ended the handling of ``msg``."""
    if isinstance(exc, ProtocolError):
        log.warning("bad %s: %s", msg.msg_type, exc)
    elif isinstance(exc, KeyboardInterrupt):  # landed in the kernel's code around a cell
        log.info("%s interrupted before or after its user code", msg.msg_type)
    else:
        log.error("error handling %s", msg.msg_type, exc_info=exc)
    return error_content(type(exc).__name__, str(exc))
