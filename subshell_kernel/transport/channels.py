"""How everything above the transport talks to frontends.

``Channels`` is the one object the subshells, handlers, stdin and streams are
handed for sending: replies on shell, input requests on stdin, messages on
iopub.  Every method is safe from any thread and sends in place (see
``sockets.SharedSocket``): nothing waits for another thread to wake.
"""

from __future__ import annotations

from typing import Any

from ..core.protocol import Codec, Message
from .iopub import IOPub
from .sockets import SharedSocket


class Channels:
    def __init__(self, codec: Codec, shell: SharedSocket, stdin: SharedSocket, iopub: IOPub):
        self.codec = codec
        self._shell = shell
        self._stdin = stdin
        self._iopub = iopub
        self.publish = iopub.publish
        self.status = iopub.status

    def reply(self, request: Message, content: dict[str, Any]) -> None:
        """The reply to a shell request, sent to the frontend that sent it."""
        self._shell.send(self.codec.reply_frames(request, content))

    def send_stdin(self, msg: dict[str, Any], idents: list[bytes]) -> None:
        self._stdin.send(self.codec.serialize(msg, idents))
