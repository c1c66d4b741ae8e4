"""The Debug Adapter Protocol's wire format and messages, sans IO.

On the wire, each DAP message is a header, ``Content-Length: <n>\\r\\n\\r\\n``
(other header fields are allowed and ignored), then ``n`` bytes of UTF-8
JSON.  ``encode`` writes one; ``Decoder`` reads any number of them from
bytes that arrive in pieces of any size.

A Jupyter ``debug_request`` carries a DAP request as its content and its
``debug_reply`` a DAP response: ``response`` builds the responses the kernel
answers itself, ``check_request`` validates what a client sent.
"""

from __future__ import annotations

import json
from typing import Any

_SEPARATOR = b"\r\n\r\n"
_LENGTH = b"content-length"
#: a header longer than this is not DAP (the stream is corrupt or not DAP at all)
MAX_HEADER = 1024


class DapError(ValueError):
    """The bytes are not DAP, or a request is malformed."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Decoder:
    """Reassembles DAP messages from a byte stream: ``feed`` returns the complete ones."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._length: int | None = None  # of the body being read, once its header was

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages = []
        while True:
            if self._length is None:
                end = self._buffer.find(_SEPARATOR)
                if end < 0:
                    if len(self._buffer) > MAX_HEADER:
                        raise DapError(f"no DAP header in the first {MAX_HEADER} bytes")
                    return messages
                self._length = _content_length(bytes(self._buffer[:end]))
                del self._buffer[: end + len(_SEPARATOR)]
            if len(self._buffer) < self._length:
                return messages
            body = bytes(self._buffer[: self._length])
            del self._buffer[: self._length]
            self._length = None
            try:
                message = json.loads(body)
            except ValueError as e:
                raise DapError(f"a DAP body is not JSON: {e}") from None
            if not isinstance(message, dict):
                raise DapError("a DAP message is not a JSON object")
            messages.append(message)


def _content_length(header: bytes) -> int:
    for line in header.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == _LENGTH:
            try:
                length = int(value.strip())
            except ValueError:
                break
            if length >= 0:
                return length
    raise DapError(f"a DAP header without a valid Content-Length: {header[:80]!r}")


def check_request(content: Any) -> dict[str, Any]:
    """The DAP request a ``debug_request`` carries, or DapError saying what is wrong."""
    if not isinstance(content, dict):
        raise DapError("a debug_request's content must be a DAP request (a JSON object)")
    command = content.get("command")
    if not isinstance(command, str) or not command:
        raise DapError("a DAP request needs a command (a string)")
    seq = content.get("seq", 0)
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise DapError("a DAP request's seq must be an integer")
    arguments = content.get("arguments", {})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise DapError("a DAP request's arguments must be an object")
    return {**content, "type": "request", "seq": seq, "arguments": arguments}


def response(
    request: dict[str, Any],
    body: dict[str, Any] | None = None,
    success: bool = True,
    message: str | None = None,
) -> dict[str, Any]:
    """A DAP response to ``request``, answered by the kernel itself."""
    reply: dict[str, Any] = {
        "type": "response",
        "seq": 0,
        "request_seq": request.get("seq", 0),
        "success": success,
        "command": request.get("command", ""),
    }
    if message is not None:
        reply["message"] = message
    if body is not None:
        reply["body"] = body
    return reply


def error(request: dict[str, Any], message: str) -> dict[str, Any]:
    return response(request, body={}, success=False, message=message)
