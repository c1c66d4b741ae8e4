"""A DAP connection to the debug server (debugpy, in this process): requests and events.

``request`` sends one DAP request and waits for its response; it is called
by the control thread, one request at a time, and by nothing that must not
wait.  Every request goes out under a sequence number of this connection's
own and its response is matched by ``request_seq``: a client's numbers may
repeat (a new session starts at 1 again) and the kernel sends requests of
its own in between, so the client's number is put back on the response
instead.  A response that does not come within the timeout becomes an error
response, so control never waits longer than that (an ``evaluate`` of
``time.sleep(600)`` in a stopped frame, say); when it comes late, it is
dropped.

Events are handed to ``on_event`` on the reader thread, in the order the
server sent them.  That thread is the kernel's own (untraced: it keeps
reading while user code is stopped at a breakpoint).
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..core import dap
from .kernel_threads import kernel_thread

log = logging.getLogger(__name__)

Message = dict[str, Any]


class _Pending:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: Message | None = None


class DapConnection:
    #: seconds a request waits for its response
    TIMEOUT = 10.0

    def __init__(self, sock: socket.socket, on_event: Callable[[Message], None]):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._on_event = on_event
        self._seq = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()  # the pending map
        self._send_lock = threading.Lock()  # one message at a time on the stream
        self._closed = False
        self._reader = kernel_thread(self._read, "debugpy-reader")
        self._reader.start()

    @classmethod
    def connect(cls, host: str, port: int, on_event: Callable[[Message], None]) -> DapConnection:
        return cls(socket.create_connection((host, port), timeout=cls.TIMEOUT), on_event)

    @property
    def closed(self) -> bool:
        return self._closed

    def request(self, command: str, arguments: dict[str, Any] | None = None,
                client_seq: int = 0, timeout: float | None = None) -> Message:
        """Send a request; its response, with ``request_seq`` set back to ``client_seq``."""
        pending = _Pending()
        with self._lock:
            seq = next(self._seq)
            self._pending[seq] = pending
        request = {"type": "request", "seq": seq, "command": command,
                   "arguments": arguments or {}}
        try:
            self._send(request)
            if not pending.done.wait(self.TIMEOUT if timeout is None else timeout):
                raise TimeoutError(f"the debugger did not answer {command} in time")
            if pending.response is None:
                raise ConnectionError("the connection to the debugger closed")
        except (OSError, TimeoutError) as e:
            log.warning("debug request %s failed: %s", command, e)
            return dap.error({"seq": client_seq, "command": command}, str(e))
        finally:
            with self._lock:
                self._pending.pop(seq, None)
        response = dict(pending.response)
        response["request_seq"] = client_seq
        return response

    def _send(self, message: Message) -> None:
        if self._closed:
            raise ConnectionError("the connection to the debugger is closed")
        data = dap.encode(message)
        with self._send_lock:
            self._sock.sendall(data)

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    # -- the reader thread ------------------------------------------------------------
    def _read(self) -> None:
        self._sock.settimeout(None)
        decoder = dap.Decoder()
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                for message in decoder.feed(data):
                    self._dispatch(message)
        except (OSError, dap.DapError) as e:
            if not self._closed:
                log.warning("the connection to the debugger failed: %s", e)
        finally:
            self._closed = True
            with self._lock:
                pending, self._pending = list(self._pending.values()), {}
            for waiter in pending:  # nothing more will come: wake every request
                waiter.done.set()

    def _dispatch(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "response":
            with self._lock:
                waiter = self._pending.get(message.get("request_seq"))
            if waiter is None:
                log.info("dropped a late debugger response to %s", message.get("command"))
                return
            waiter.response = message
            waiter.done.set()
        elif kind == "event":
            try:
                self._on_event(message)
            except Exception:  # the reader must outlive any one event
                log.exception("handling debugger event %s failed", message.get("event"))
        else:
            log.info("dropped a debugger message of type %r", kind)
