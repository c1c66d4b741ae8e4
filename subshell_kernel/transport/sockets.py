"""zmq sockets: binding them, sharing one between threads, waking a reader.

A zmq socket is not thread-safe, but threads may share one if every use is
separated by a full memory barrier: ``SharedSocket`` takes a lock around each
send, receive and close.  The kernel shares the iopub socket (any thread
publishes, the iopub thread reads subscriptions) and the shell and stdin
sockets (the router thread reads, the thread that answers a request sends its
reply), so no reply or output waits for another thread to wake up and take
the GIL.

The descriptor zmq gives for a socket (``FD``) is edge-triggered: it signals
that the socket's state changed, and *any* operation on the socket, a send
included, may consume that signal.  So a reader drains a socket until
``recv`` would block after each wake-up, and a ``SharedSocket`` that finds
input waiting after a send calls its ``on_input`` to wake the reader.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import zmq

from .kernel_threads import kernel_thread

log = logging.getLogger(__name__)

_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
#: pyzmq's compiled send, below the Python ``Socket.send`` of ``zmq.sugar``, which
#: only adds the DRAFT ``routing_id``/``group`` options and then calls it: a Python
#: call less per frame (28 per ``pass`` request)
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get


def send_frames(socket: zmq.Socket, frames: list) -> None:
    """``socket.send_multipart(frames, NOBLOCK)``, several times faster: the path where the C
    part is not built (with it, ``SharedSocket`` sends a whole message in one C call
    with the GIL held: ``_native_frames.c``, which measured 87 against 110 us for a
    request's four messages; the ctypes trial below lost on the cost of ctypes).

    pyzmq's ``send_multipart`` combines ``enum.Flag`` values in Python for each
    frame and calls ``Socket.send``, a Python method, per frame: 6.5 us for a
    seven-frame message on this machine, against 2.0 us for a loop with a
    plain int flag, and less again calling the compiled send directly.  A
    request sends at least four messages.  Frames are copied (faster than
    zero-copy for small parts).

    pyzmq releases the GIL around each frame, and that stays: sending
    through ``ctypes.PyDLL`` on pyzmq's own libzmq, GIL held (receiving the
    frames after the first as well), took more CPU on the control thread
    per control ``kernel_info`` (idle 391 vs 367 us, parent in a CPU loop
    574 vs 467 us, means of 3 alternated runs) and did not shorten the busy
    round trip (run.py A/B medians, 5 runs: 1.17 vs 1.14 ms).  The thread
    that releases the GIL for a few microseconds nearly always takes it back
    before the waiting thread wakes (about 4 voluntary switches per request
    either way, not one per frame), and a ctypes call costs more than pyzmq's
    compiled one (0.87 against 0.23 us a frame).
    """
    *head, last = frames
    for frame in head:
        _send(socket, frame, _SNDMORE | _NOBLOCK)
    _send(socket, last, _NOBLOCK)



def recv_frames(socket: zmq.Socket, flags: int = 0) -> list[bytes]:
    """``socket.recv_multipart(flags)``, faster: each frame is received as a
    ``zmq.Frame`` whose ``more`` (``zmq_msg_more``) says whether another follows,
    then copied out.  pyzmq's own asks ``getsockopt(RCVMORE)`` per frame, which
    builds a Python enum each time: 18 us against 12 us for a seven-frame
    request on this machine."""
    frames = []
    while True:
        frame = _recv(socket, flags, False)
        frames.append(frame.bytes)
        if not frame.more:
            return frames


class SharedSocket:
    """A zmq socket used by several threads, one at a time, under a lock.

    After ``close``, sends are dropped and ``recv`` returns None.  ``lock`` is a
    ``threading.Lock`` unless given: the iopub socket's is a
    ``native_control.socket_lock()``, which the C control reader takes to
    publish too, and whose ``closed`` tells it the socket is gone.  ``frames``,
    where given (``native_control.frames``), sends and receives a whole message
    in one C call; otherwise pyzmq's calls do, a frame at a time.
    """

    def __init__(self, socket: zmq.Socket, on_input: Callable[[], None] | None = None,
                 lock: Any = None, frames: Any = None):
        self.socket = socket
        self._lock = lock if lock is not None else threading.Lock()
        self._on_input = on_input
        self._frames = frames
        self._closed = False

    @property
    def fd(self) -> int:
        return self.socket.FD

    def send(self, frames: list) -> None:
        with self._lock:
            if self._closed:
                return
            if self._send_whole(frames) and self._on_input is not None:
                self._on_input()

    def _send_whole(self, frames: list) -> bool:
        """Send one message, never waiting (``zmq.Again`` if the socket refuses it,
        nothing of it sent); whether input waits on the socket now.  Lock held."""
        if self._frames is not None:
            return self._frames.send(frames)
        send_frames(self.socket, frames)
        # the compiled getsockopt with an int (``socket.EVENTS`` resolves the
        # name in Python, and sugar's ``get`` wraps the value in an enum)
        return self._on_input is not None and bool(_get(self.socket, _EVENTS) & _POLLIN)

    def events(self) -> int:
        """``EVENTS`` (0 once closed); reading it also makes zmq process the socket's
        pending commands, e.g. freeing the pipe of a peer that went away."""
        with self._lock:
            if self._closed:
                return 0
            return self.socket.getsockopt(_EVENTS)

    def recv(self) -> list | None:
        """The next message, or None if none is waiting (never blocks)."""
        with self._lock:
            if self._closed:
                return None
            if self._frames is not None:
                return self._frames.recv()
            try:
                return recv_frames(self.socket, _NOBLOCK)
            except zmq.Again:
                return None

    def close(self, linger: int) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if hasattr(self._lock, "closed"):
                    self._lock.closed = True
                self.socket.close(linger=linger)


class WakePipe:
    """A pipe that wakes a thread sleeping in ``poll``; safe to use and close from any thread.

    ``wake`` and ``close`` hold one lock, so a wake never writes to a closed
    descriptor, nor to one the process has since reused for something else.
    """

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._write_fd, b"!")
            except BlockingIOError:  # the pipe is full: the reader wakes anyway
                pass

    def clear(self) -> None:
        """Reader side: forget the wake-ups so far."""
        os.read(self.read_fd, 4096)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.read_fd)
                os.close(self._write_fd)


def bind(
    context: zmq.Context, kind: int, connection: dict[str, Any], name: str, ip: str,
    sndhwm: int = 0,
) -> zmq.Socket:
    """Bind the socket ``name`` (shell, iopub, ...) as the connection info says.

    A port of 0 or none binds a free one, and ``connection`` is updated with
    it.  With CurveZMQ keys in the connection info the socket is a Curve
    server: traffic is encrypted and only clients that know the key get in.
    ``sndhwm`` must be set here, before the bind: libzmq gives the pipes of
    the connections a listener accepts the options it had when it was bound.
    """
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 1000)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.RCVHWM, 0)
    public, secret = connection.get("curve_publickey"), connection.get("curve_secretkey")
    if public and secret:
        sock.curve_secretkey = secret.encode() if isinstance(secret, str) else secret
        sock.curve_publickey = public.encode() if isinstance(public, str) else public
        sock.curve_server = True
    transport = connection.get("transport", "tcp")
    ip = connection.get("ip") or ip
    port = int(connection.get(f"{name}_port") or 0)
    if transport == "tcp":
        if port:
            sock.bind(f"tcp://{ip}:{port}")
        else:
            port = sock.bind_to_random_port(f"tcp://{ip}")
    else:
        sock.bind(f"ipc://{ip}-{port or 1}")
    connection[f"{name}_port"] = port
    return sock


def start_heartbeat(sock: zmq.Socket) -> threading.Thread:
    """Echo every heartbeat ping in C (``zmq.proxy`` releases the GIL), on a thread of its own."""

    def echo() -> None:
        try:
            zmq.proxy(sock, sock)
        except zmq.ZMQError:  # ETERM at shutdown
            sock.close(linger=0)

    thread = kernel_thread(echo, "heartbeat")
    thread.start()
    return thread
