"""Output written to file descriptors 1 and 2 by C code and subprocesses.

``print`` goes through ``sys.stdout``; but a C extension, ``os.system`` or a
child process writes to fd 1 or 2 directly, and in a kernel that output would
land in the terminal that launched it, unseen.  We point fds 1 and 2 at pipes
and a reader thread forwards what arrives as ``stream`` output.

A write to a file descriptor carries no context, so it is attributed to the
execute request that started most recently (``Kernel.last_execute``), and to
no request when none has run yet.  The kernel's own log keeps the original
stderr (a duplicate of fd 2 taken before the redirection).
"""

from __future__ import annotations

import codecs
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from .streams import StreamRouter

log = logging.getLogger(__name__)


class FdCapture:
    def __init__(
        self, router: StreamRouter, parent_of_fd_output: Callable[[], dict[str, Any] | None]
    ):
        self._router = router
        self._parent = parent_of_fd_output
        #: duplicates of the original fds 1 and 2 (the terminal, or where the launcher pointed)
        self.original: dict[int, int] = {}
        self._original_stderr = None

    def start(self) -> None:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            self.original[fd] = os.dup(fd)
            os.dup2(write_end, fd)
            os.close(write_end)
            threading.Thread(
                target=self._forward, args=(read_end, name), name=f"fd{fd}-capture", daemon=True
            ).start()
        self._keep_logging_on_original_stderr()

    def original_stderr(self):
        """A text stream on the original fd 2 (for the kernel's log)."""
        if self._original_stderr is None:
            self._original_stderr = os.fdopen(self.original[2], "w", buffering=1, closefd=False)
        return self._original_stderr

    def _keep_logging_on_original_stderr(self) -> None:
        original = self.original_stderr()
        for logger in (logging.getLogger(), *logging.Logger.manager.loggerDict.values()):
            for handler in getattr(logger, "handlers", ()):
                stream = getattr(handler, "stream", None)
                if stream is sys.__stderr__ or stream is sys.__stdout__:
                    handler.setStream(original)

    def _forward(self, read_end: int, name: str) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                data = os.read(read_end, 65536)
            except OSError:
                return
            if not data:
                return
            text = decoder.decode(data)
            if text:
                self._router.write_for(self._parent(), name, text)
