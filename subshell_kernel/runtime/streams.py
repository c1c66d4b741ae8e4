"""stdout/stderr that route each write to the request that produced it.

``sys.stdout`` and ``sys.stderr`` are replaced once, at startup, by two
``OutStream`` objects sharing one ``StreamRouter``.  Nothing ever swaps them
per cell, so cells overlapping on several threads cannot nest wrappers.

Invariants:
- Text is buffered per parent request (``msg_id``), never mixed between
  requests: two subshells printing at once produce separate ``stream``
  messages, each with its own parent header.
- Order is kept within a request: switching between stdout and stderr emits
  what was buffered first; a buffer is emitted (under its lock, into the
  iopub FIFO) before any other message its request publishes, because every
  publisher calls ``flush(parent)`` first.
- Each request's buffer has a lock of its own (``_Pending.lock``): threads
  printing for different requests (subshells) never wait for each other.
- Nothing is published for a muted (``silent``) request.
- No stream message carries more than ``max_buffer`` bytes of text (a larger
  buffer, from one huge write, leaves in pieces).
- A buffer is emitted at the latest ``flush_interval`` after its first write
  (the iopub thread's timer, armed by ``flush_soon`` once per buffer), when it
  grows past ``max_buffer`` bytes of UTF-8, or on ``flush``.
- ``publish`` is how every other message of a request leaves: its buffered
  text first, then the message.
- Text read from fd 1 or 2 never splits a line that Python code is writing:
  it is read from the pipe some time after it was written, so it can arrive
  between the pieces of one ``print``; it goes in before that unfinished line.
- ``fileno()`` is a copy of fd 1 or 2 (``hooks`` makes it): with fd capture on,
  of the pipe the iopub thread reads, so what is written there (``faulthandler``,
  ``subprocess.run(stdout=sys.stdout)``) reaches the frontend as fd output does;
  without it, of the original descriptor.  A copy, so that code which closes
  the descriptor it was given closes nothing of the kernel's.
- In a process forked from the kernel (``multiprocessing``), whole lines go
  straight to that descriptor: the kernel's sockets and threads are not the
  child's to use.  The kernel's iopub thread reads the pipe it shares with the
  child and forwards the text, as it does for any subprocess.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from typing import Any

from .context import get_parent, is_muted

Publish = Callable[..., None]  # (msg_type, content, parent, metadata=None, buffers=None)


class _Pending:
    """One request's buffered text.  Its ``lock`` guards every field; ``gone`` is set,
    under it, once the buffer has left ``StreamRouter._pending`` (a writer that found
    it before then starts a new one)."""

    __slots__ = ("chunks", "gone", "line_open", "lock", "name", "parent", "size")

    def __init__(self, parent: dict[str, Any] | None, name: str):
        self.parent = parent
        self.name = name
        self.chunks: list[str] = []
        self.size = 0
        #: the buffer ends in a line Python code is still writing (no newline yet)
        self.line_open = False
        self.lock = threading.Lock()
        self.gone = False

    def insert_before_open_line(self, text: str) -> None:
        joined = "".join(self.chunks)
        start = joined.rfind("\n") + 1
        self.chunks = [piece for piece in (joined[:start], text, joined[start:]) if piece]


class StreamRouter:
    def __init__(self, publish: Publish, flush_soon: Callable[[], None], max_buffer: int = 1 << 16):
        self._publish = publish
        self._flush_soon = flush_soon
        #: guards adding to and removing from ``_pending``; each buffer has a lock of its
        #: own for the rest, so threads that print for different requests do not wait
        #: for each other: with one lock for all, the parent and four subshells printing
        #: at once spent their time queued on it (5 switches a print; 20,000 prints each
        #: took 6 s)
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self.max_buffer = max_buffer
        #: header of the execute request that started most recently: a write to
        #: fd 1 or 2 carries no context, so its text is attributed to this request
        self.fd_parent: dict[str, Any] | None = None

    def publish(self, msg_type: str, content: dict, parent: dict[str, Any] | None,
                metadata: dict | None = None, buffers: list | None = None) -> None:
        """Publish a message of request ``parent`` after the text it has buffered."""
        self.flush(parent)
        self._publish(msg_type, content, parent, metadata, buffers)

    def write_fd_output(self, name: str, text: str) -> None:
        """What C code or a subprocess wrote to fd 1 (``stdout``) or fd 2 (``stderr``)."""
        self.write_for(self.fd_parent, name, text, from_fd=True)

    def write(self, name: str, text: str) -> None:
        self.write_for(get_parent(), name, text)

    def write_for(self, parent: dict[str, Any] | None, name: str, text: str,
                  from_fd: bool = False) -> None:
        """Buffer ``text`` as output of request ``parent`` (None: no request).

        ``from_fd``: the text was read from fd 1 or 2, so it goes in before the
        line Python code is writing, if any (see the module's invariants).
        """
        if parent is None:
            key = ""
        elif is_muted(parent):
            return
        else:
            key = parent["msg_id"]
        while True:
            pending = self._pending.get(key)
            if pending is None:
                with self._lock:
                    pending = self._pending.get(key)
                    if pending is None:
                        pending = self._pending[key] = _Pending(parent, name)
                        self._flush_soon()
            with pending.lock:
                if pending.gone:  # flushed since it was looked up: a new buffer
                    continue
                if pending.name != name:
                    self._emit(pending)
                    pending.name = name
                if not from_fd:
                    pending.chunks.append(text)
                    pending.line_open = not text.endswith("\n")
                elif pending.line_open:
                    pending.insert_before_open_line(text)
                else:
                    pending.chunks.append(text)
                # bytes, as iopub's budget counts them (isascii: no encoding on the hot path)
                pending.size += (len(text) if text.isascii()
                                 else len(text.encode("utf-8", "replace")))
                if pending.size > self.max_buffer:
                    self._emit(pending)
                return

    def flush(self, parent: dict[str, Any] | None) -> None:
        """Emit what ``parent``'s request has buffered (before its next message)."""
        key = parent["msg_id"] if parent else ""
        # Unlocked peek (the common case is nothing buffered).  Sound because a buffer
        # leaves ``_pending`` only after it was sent: a caller that misses it here
        # publishes after it, never before.
        pending = self._pending.get(key)
        if pending is not None:
            self._retire(key, pending)

    def flush_all(self) -> None:
        for key, pending in list(self._pending.items()):
            self._retire(key, pending)

    def _retire(self, key: str, pending: _Pending) -> None:
        """Emit ``pending`` and take it out of ``_pending``: after the send (see the
        unlocked peek in ``flush``), and only once (``gone``)."""
        with pending.lock:
            if pending.gone:
                return
            self._emit(pending)
            with self._lock:
                del self._pending[key]
            pending.gone = True

    def _emit(self, pending: _Pending) -> None:
        if not pending.chunks:
            return
        text = "".join(pending.chunks)
        big = pending.size > self.max_buffer
        pending.chunks = []
        pending.size = 0
        pending.line_open = False
        if not big:
            self._publish("stream", {"name": pending.name, "text": text}, pending.parent)
            return
        # one huge write (print of a 10 MB string) still leaves as messages of at most
        # max_buffer bytes: iopub's budget for a stopped frontend counts on that bound
        step = self.max_buffer if text.isascii() else self.max_buffer // 4
        for start in range(0, len(text), step):
            piece = text[start:start + step]
            self._publish("stream", {"name": pending.name, "text": piece}, pending.parent)


_FDS = {"stdout": 1, "stderr": 2}


class OutStream(io.TextIOBase):
    """A text stream (``sys.stdout`` or ``sys.stderr``) that publishes on iopub."""

    def __init__(self, name: str, router: StreamRouter, fd: int | None = None):
        super().__init__()
        self.name = name
        self._router = router
        self._fd = _FDS[name] if fd is None else fd
        #: False in a process forked from the kernel (``forked``, which ``hooks`` calls
        #: there): a flag, not ``os.getpid()`` per write, which is a system call (glibc
        #: has not cached it since 2.25) and made 100,000 prints 20% slower
        self._in_kernel = True
        self._fork_pending: list[str] = []  # in a fork: the start of a line (_write_in_fork)

    def fileno(self) -> int:
        return self._fd

    def _is_master_process(self) -> bool:
        """Is this the kernel's process, not a fork of it?  (ipykernel's name for the
        question; its tests and a few libraries ask it.)"""
        return self._in_kernel

    def forked(self) -> None:
        """Called in a child just forked from the kernel (``os.register_at_fork``)."""
        self._in_kernel = False
        self._fork_pending = []

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return 0
        if self._in_kernel:
            self._router.write(self.name, text)
        else:
            self._write_in_fork(text)
        return len(text)

    def _write_in_fork(self, text: str) -> None:
        """Whole lines to fd 1 or 2 itself (the copy fileno() gave may have been closed).

        ``print`` writes each argument and separator on its own, and processes
        forked from one cell (a ``multiprocessing`` pool) print at once: written
        as they come, their lines interleaved mid-line.  A line is written in one
        ``write``, which a pipe keeps whole up to ``PIPE_BUF`` (4 KiB) bytes; the
        rest of a line waits for its newline or a ``flush`` (``multiprocessing``
        flushes both streams before a child exits).
        """
        head, newline, tail = text.rpartition("\n")
        if not newline:
            self._fork_pending.append(text)
            return
        data = "".join(self._fork_pending) + head + newline
        self._fork_pending = [tail] if tail else []
        _write_all(_FDS[self.name], data.encode("utf-8", "replace"))

    def writelines(self, lines) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._in_kernel:
            self._router.flush(get_parent())
        elif self._fork_pending:
            data, self._fork_pending = "".join(self._fork_pending), []
            _write_all(_FDS[self.name], data.encode("utf-8", "replace"))

    def close(self) -> None:
        """Closing the kernel's stdout would lose all later output; flush instead."""
        self.flush()

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
