"""The launcher's life beside the kernel it started: the kernel is its child;
the launcher serves the communication port until the kernel has exited, then
closes it (so the gateway's next poll is refused: the kernel is gone).

Why a child process and not ``exec``: the listener then lives exactly as long
as the kernel, with nothing of its own inside the kernel process, and it can
end a kernel that does not exit after a shutdown.

Signals: the launcher is the leader of its own process group, which the
kernel shares, so a gateway that signals the group (Enterprise Gateway does
without a communication port) reaches the kernel directly.  SIGINT is
therefore not forwarded (that would interrupt twice); the launcher catches it
only so that it does not die, and so that the kernel does not inherit a
SIGINT that ``nohup ... &`` left ignored (a caught signal is reset to its
default on ``exec``).  SIGTERM to the launcher alone is forwarded: the kernel
shuts down cleanly, once however often it is asked.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from .listener import Request, read_request

#: after {"shutdown": 1}: seconds the kernel has to exit before SIGTERM, then before SIGKILL
SHUTDOWN_GRACE = 5.0
TERM_GRACE = 3.0


def log(text: str) -> None:
    print(f"[subshell_kernel.launcher {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr,
          flush=True)


class Supervisor:
    def __init__(self, kernel: subprocess.Popen, comm: socket.socket,
                 shutdown_grace: float = SHUTDOWN_GRACE):
        self.kernel = kernel
        self.comm = comm
        self.shutdown_grace = shutdown_grace
        self._term_at: float | None = None  # when to send SIGTERM
        self._kill_at: float | None = None  # when to send SIGKILL

    # -- signals to the launcher -------------------------------------------------------
    @staticmethod
    def catch_signals_before_start() -> None:
        """Before the kernel starts: catch SIGINT (reset to default in the kernel by
        ``exec``) and SIGHUP (the SSH session that started us may close)."""
        signal.signal(signal.SIGINT, lambda *_: None)
        signal.signal(signal.SIGHUP, lambda *_: None)

    def forward_sigterm(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._terminate("SIGTERM to the launcher"))

    # -- requests on the communication port ----------------------------------------------
    def handle(self, request: Request) -> None:
        if request.signum:
            self._signal(request.signum)
            if request.signum in (signal.SIGTERM, signal.SIGKILL):
                self._terminate(None)
        if request.shutdown and self._term_at is None and self._kill_at is None:
            log("shutdown requested")
            self._term_at = time.monotonic() + self.shutdown_grace

    def _signal(self, signum: int) -> None:
        if self.kernel.poll() is None:
            log(f"signal {signal.Signals(signum).name} to the kernel")
            try:
                self.kernel.send_signal(signum)
            except ProcessLookupError:
                pass

    def _terminate(self, reason: str | None) -> None:
        if reason:
            log(reason)
            self._signal(signal.SIGTERM)
        if self._kill_at is None:
            self._term_at = None
            self._kill_at = time.monotonic() + TERM_GRACE

    def _escalate(self) -> None:
        now = time.monotonic()
        if self._term_at is not None and now >= self._term_at:
            self._terminate("the kernel did not exit after the shutdown request")
        elif self._kill_at is not None and now >= self._kill_at:
            self._signal(signal.SIGKILL)
            self._kill_at = None

    def _timeout(self) -> float:
        due = [t for t in (self._term_at, self._kill_at) if t is not None]
        return max(0.0, min(due) - time.monotonic()) if due else 1.0

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        """Serve the communication port until the kernel exits; its exit status."""
        self.comm.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self.comm, selectors.EVENT_READ)
            exited = _exit_notifier(self.kernel.pid)
            if exited is not None:
                selector.register(exited, selectors.EVENT_READ)
            try:
                while self.kernel.poll() is None:
                    # a short wait without a pidfd: the kernel's exit is noticed within 0.2 s
                    timeout = self._timeout() if exited is not None else min(self._timeout(), 0.2)
                    for key, _ in selector.select(timeout):
                        if key.fileobj is self.comm:
                            request, raw = read_request(self.comm)
                            if request is None:
                                log(f"ignored a request that is not one: {raw[:80]!r}")
                            else:
                                self.handle(request)
                    self._escalate()
            finally:
                if exited is not None:
                    os.close(exited)
        self.comm.close()  # from here on the gateway's poll is refused
        return self.kernel.returncode


def _exit_notifier(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux >= 5.3)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
