"""The communication port: what the gateway asks of the launcher (sans IO but
for reading one connection).

The gateway opens a TCP connection to the port the launcher reported, writes
one JSON object and closes it:

    {"signum": 0}     a liveness poll (every few seconds): that the
                      connection was accepted is the answer
    {"signum": N}     send signal N to the kernel (2 interrupts it, 15 and 9
                      end it)
    {"shutdown": 1}   the kernel was asked to shut down; the launcher ends
                      once it has (and ends it if it does not)

A refused connection means the kernel is gone, so the launcher listens for
exactly as long as the kernel lives.  Anything else (an empty message, bad
JSON, a list, an unknown signal, a connection that sends nothing) is ignored:
the listener must outlive whatever a port scanner or an older server sends.
"""

from __future__ import annotations

import json
import signal
import socket
from dataclasses import dataclass

#: a request is a few bytes; more than this is not one
MAX_REQUEST = 64 * 1024
READ_TIMEOUT = 2.0
_SIGNALS = frozenset(int(s) for s in signal.Signals)


@dataclass(frozen=True)
class Request:
    signum: int = 0  # 0: a poll
    shutdown: bool = False


def parse_request(data: bytes) -> Request | None:
    """The request in ``data``, or None for anything that is not one."""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    signum = body.get("signum", 0)
    if isinstance(signum, str) and signum.strip().isdigit():
        signum = int(signum)
    if isinstance(signum, bool) or not isinstance(signum, int):
        return None
    if signum and signum not in _SIGNALS:
        return None
    return Request(signum=signum, shutdown=bool(body.get("shutdown")))


def read_request(listening: socket.socket) -> tuple[Request | None, bytes]:
    """Accept one connection and read it to its end (or ``MAX_REQUEST`` bytes,
    or ``READ_TIMEOUT`` s); returns the request and the bytes read."""
    try:
        conn, _ = listening.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return None, b""
    data = b""
    try:
        conn.settimeout(READ_TIMEOUT)
        while len(data) < MAX_REQUEST:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        conn.close()
    return parse_request(data), data
