"""The control socket read in C, so ``kernel_info`` is answered without the GIL.

A control request answered in Python waits for the GIL.  While the parent runs
CPU-bound code the control thread gets it once per switch interval, and loses
it again at each zmq call: a ``kernel_info`` round trip took 1.37 ms then
(0.53 ms in C; 0.38 ms for ipymini, whose control thread is Rust and
publishes no statuses for control requests).  While a C call holds the GIL
(a long regex, a C extension's loop) a Python control thread does not
answer at all.  ``_native_control.c`` is the control thread's
reader: it waits for the next message with the GIL released and answers a
``kernel_info_request`` there (status busy, reply, status idle: the
lifecycle of ``core/lifecycle.py`` for the one request whose reply never
changes); any other message, and any it is not sure about, goes back to
Python, which handles it as before.  The C source says exactly which
messages it answers.  It publishes the statuses itself, on the iopub socket,
under the lock that the socket's Python users take (``socket_lock``: a
``threading.Lock`` to them, a mutex to C).  Forwarding them through the
iopub thread instead cost that thread 230 us of Python per request, and the
idle round trip was 0.81 ms against 0.66 ms.

The C part is compiled at install (``setup.py``, an optional extension): where
it is missing (no compiler), or where this module cannot find the libzmq
that pyzmq loaded (``libzmq_functions``), or with a signature scheme other
than ``hmac-sha256`` (``reads_control``), control is read in Python only.

Until the control socket's first quiet moment after the open
(``Control.QUIET_MS``) and the warm-up that follows it, the control thread
comes back to Python between messages (to notice that moment); from then on
it waits in C for good.  So in a kernel's first second a cell that holds the
GIL can still delay a control reply.

Where it is used, the kernel's replay history is the C part's
(``ReplayHistory``): ``Codec`` and the C reader add to the same one, so a
message captured on one channel is refused on every other, whoever reads it.

The kernel's other sockets (shell, stdin, iopub) send and receive whole
messages through the C part too (``frames``, used by ``sockets.SharedSocket``):
one call a message instead of one a frame, with the GIL held, since no send
or receive of theirs waits (``_native_frames.c`` says why and what it saved).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import zmq

try:
    from . import _native_control
except ImportError:  # not built (no C compiler at install): control is read in Python
    _native_control = None

log = logging.getLogger(__name__)

#: the libzmq functions the C reader calls, in the order of its ``zmq_api``
ZMQ_FUNCTIONS = ("zmq_poll", "zmq_msg_init", "zmq_msg_recv", "zmq_msg_data", "zmq_msg_size",
                 "zmq_msg_more", "zmq_msg_close", "zmq_send", "zmq_getsockopt", "zmq_errno",
                 "zmq_setsockopt")
#: ``Reader.next`` result codes
MESSAGE, TIMEOUT, REPLAYED, ERROR, INPUT_WAITING = 0, 1, 2, 3, 4


def compiled() -> bool:
    """Whether the C part was built (``SUBSHELL_KERNEL_STRICT`` tests require it)."""
    return _native_control is not None


def reads_control(key: bytes, signature_scheme: str) -> bool:
    """Whether the C reader can check this connection's signatures (it does HMAC-SHA256
    only; an unsigned connection needs none)."""
    return not key or signature_scheme == "hmac-sha256"


@functools.cache
def libzmq_functions() -> tuple[int, ...] | None:
    """The libzmq functions for ``reader`` and ``frames`` (looked for once), or None where
    the C part is not built or pyzmq's libzmq is not found."""
    if _native_control is None:
        return None
    functions = _libzmq_functions()
    if functions is None:
        log.info("libzmq's functions not found: zmq is used through pyzmq only")
    return functions


def frames(functions: tuple[int, ...], socket: zmq.Socket) -> Any:
    """``socket``'s whole messages in one C call each (``_native_frames.c``): ``send(list)
    -> bool`` (whether input waits after it), ``recv() -> list | None`` (None: nothing
    waits).  Used under the socket's lock, never after it is closed."""
    return _native_control.Frames(functions, socket.underlying, _raise_zmq_error)


def _raise_zmq_error(errno: int) -> None:
    """Raise what pyzmq raises for ``errno``."""
    if errno == zmq.EAGAIN:
        raise zmq.Again(errno)
    if errno == zmq.ETERM:
        raise zmq.ContextTerminated(errno)
    raise zmq.ZMQError(errno)


def socket_lock() -> Any:
    """A lock for the iopub socket that the C reader takes too: a ``threading.Lock``
    to Python (``with``), a mutex to C."""
    return _native_control.SocketLock()


def replay_history() -> Any:
    """The replay history that ``Codec`` and the C reader share (``ReplayHistory``)."""
    return _native_control.ReplayHistory()


def _libzmq_functions() -> tuple[int, ...] | None:
    """The addresses of ``ZMQ_FUNCTIONS`` in the libzmq pyzmq uses, or None.

    pyzmq's wheels carry libzmq as a shared library of their own (a hashed
    name in ``pyzmq.libs``); another build links the system's, or libzmq
    itself.  The one mapped into this process whose version is pyzmq's is it:
    opening a library already loaded returns the loaded one.
    """
    candidates = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                name = os.path.basename(path)
                if name.startswith("libzmq") and path not in candidates:
                    candidates.append(path)
    except OSError:
        return None
    try:  # libzmq built into pyzmq's own module (not there on pyzmq's cffi backend)
        from zmq.backend.cython import _zmq
    except ImportError:
        pass
    else:
        candidates.append(_zmq.__file__)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            functions = tuple(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                              for name in ZMQ_FUNCTIONS)
            major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            lib.zmq_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
        except (OSError, AttributeError):
            continue
        if (major.value, minor.value, patch.value) == zmq.zmq_version_info():
            return functions
    return None


def _json_safe(text: str) -> bool:
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


class NativeControl:
    """``next`` for the control thread: the next message Python must handle."""

    def __init__(self, reader: Any, on_iopub_input: Callable[[], None]):
        self._reader = reader
        self._on_iopub_input = on_iopub_input

    def last_answered(self) -> tuple[int, list[bytes] | None]:
        """How many requests the C reader answered, and the frames of the last one."""
        return self._reader.last_answered()

    def next(self, timeout_ms: int, answer: bool) -> list[bytes] | None:
        """The next control message for Python, or None after ``timeout_ms`` (-1:
        never) with no message at all; answers ``kernel_info`` meanwhile if
        ``answer``.  Raises ``zmq.ZMQError`` as a zmq call would (ETERM at exit)."""
        while True:
            code, value = self._reader.next(timeout_ms, answer)
            if code == MESSAGE:
                return value
            if code == TIMEOUT:
                return None
            if code == REPLAYED:
                log.warning("dropped a control message: replayed signature")
                continue
            if code == INPUT_WAITING:  # as a ``SharedSocket`` send that finds input does
                self._on_iopub_input()
                continue
            raise zmq.ZMQError(value)


def reader(functions: tuple[int, ...], control: zmq.Socket, iopub: zmq.Socket,
           iopub_lock: Any, history: Any, on_iopub_input: Callable[[], None], key: bytes,
           session_id: str, id_prefix: str, version: str,
           kernel_info: bytes, stall_seconds: float,
           retry_seconds: float) -> NativeControl | None:
    """A C reader of ``control`` (``functions`` from ``libzmq_functions``, where
    ``reads_control``) that publishes on ``iopub`` under ``iopub_lock`` (which every
    Python user of ``iopub`` takes too) and checks signatures against ``history``
    (``Codec``'s), or None if our header strings need JSON escapes (they never do: hex
    and digits).  Its statuses wait for a subscriber that is behind as iopub's
    publishers do, for up to ``stall_seconds``, trying again every ``retry_seconds``
    (``iopub.STALL_SECONDS``, ``iopub.RETRY_SECONDS``)."""
    if not all(_json_safe(text) for text in (session_id, id_prefix, version)):
        return None
    try:
        native = _native_control.Reader(control.underlying, iopub.underlying, iopub_lock,
                                        history, functions, key, id_prefix, session_id,
                                        version, kernel_info, stall_seconds,
                                        retry_seconds)
    except (ValueError, TypeError) as e:
        log.warning("control is read in Python: %s", e)
        return None
    return NativeControl(native, on_iopub_input)

