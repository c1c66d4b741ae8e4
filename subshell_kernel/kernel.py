"""The kernel: binds the sockets, starts the threads, runs the parent subshell.

Threads (see docs/architecture.md; shell, stdin and iopub are shared under
a lock by the threads that send on them, ``sockets.SharedSocket``):

    main          parent subshell (AnyIO loop, uvloop if installed), SIGINT handler
    shell-router  the only reader of shell + stdin ROUTER
    control       control ROUTER (owned)
    iopub-flush   timer: sends buffered stream output flush_interval after it starts
    heartbeat     hb ROUTER (owned), echoed by zmq.proxy in C
    subshell-<id> one child subshell each (AnyIO loop)
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import sys
import threading
import time
import uuid
from typing import Any

import zmq
from traitlets import Bool, Enum, Float, Unicode
from traitlets.config import LoggingConfigurable

from . import __version__, comms
from .context import get_parent, propagate_parent_to_threads
from .control import Control
from .fdcapture import FdCapture
from .iopub import IOPub
from .protocol import PROTOCOL_VERSION, Codec
from .router import Router
from .shell import KernelShell, SubshellState
from .stdin import Stdin
from .streams import OutStream, StreamRouter
from .subshell import Subshell, install_interruptible_sleep

log = logging.getLogger(__name__)


_KERNEL_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Subshells:
    """The registry of subshells; the parent subshell is ``get(None)``."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.parent: Subshell | None = None
        self._children: dict[str, Subshell] = {}
        self._lock = threading.Lock()

    def get(self, subshell_id: str | None) -> Subshell | None:
        if subshell_id is None:
            return self.parent
        if not isinstance(subshell_id, str):
            return None
        return self._children.get(subshell_id)

    def create(self) -> str:
        subshell_id = str(uuid.uuid4())
        sub = Subshell(self.kernel, subshell_id, SubshellState(self.kernel.shell))
        sub.start_thread()
        with self._lock:
            self._children[subshell_id] = sub
        return subshell_id

    def delete(self, subshell_id: str) -> bool:
        """Stop a subshell without waiting for it (a busy one is interrupted)."""
        with self._lock:
            sub = self._children.pop(subshell_id, None)
        if sub is None:
            return False
        sub.stop()
        return True

    def ids(self) -> list[str]:
        return list(self._children)

    def children(self) -> list[Subshell]:
        return list(self._children.values())


class Kernel(LoggingConfigurable):
    """A Jupyter kernel for Python on AnyIO, with subshells (JEP 91)."""

    backend = Enum(
        ["asyncio", "trio"], default_value="asyncio", config=True,
        help="The AnyIO backend of every subshell's event loop (and of top-level await).",
    )
    flush_interval = Float(
        0.05, config=True, help="Seconds after a first write before buffered output is sent."
    )
    use_uvloop = Bool(
        True, config=True,
        help="With the asyncio backend, run the parent subshell's loop on uvloop when it is "
        "installed: a request then costs ~10% less CPU (290 against 320 us for `pass`).  "
        "Child subshells keep asyncio's own loop: a uvloop loop holds ~0.3 MB (a 256 KB "
        "read buffer), three times a subshell's whole budget.",
    )
    ip = Unicode("127.0.0.1", config=True, help="Address to bind when not in the connection file.")
    switch_interval = Float(
        0.0001, config=True,
        help="sys.setswitchinterval: how long a thread may hold the GIL while others wait. "
        "While the parent runs CPU-bound code, a subshell request loses the GIL to it "
        "several times (each zmq call releases it) and waits this long each time: a "
        "subshell round trip took 46 ms at Python's 5 ms default, 13 ms at 1 ms, 1.9 ms "
        "at 0.2 ms and 1.3 ms at 0.1 ms.  Two CPU-bound threads ran no slower at 0.1 ms "
        "(within 0.5%, median of 5 runs).",
    )
    capture_fd_output = Bool(
        True, config=True,
        help="Forward what C code and subprocesses write to file descriptors 1 and 2.",
    )

    def __init__(self, connection: dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.connection = connection
        self.context = zmq.Context()
        key = connection.get("key", "")
        key = key.encode() if isinstance(key, str) else key
        self.codec = Codec(key, connection.get("signature_scheme", "hmac-sha256"))
        self.subshells = Subshells(self)
        self._control_done = threading.Event()
        self._shutting_down = False
        self._sigint_parent_only = False
        self._exited = threading.Event()
        #: header of the execute request that started most recently (fd output goes there)
        self.last_execute: dict[str, Any] | None = None

    # -- startup ----------------------------------------------------------------------
    def backend_options(self, parent: bool) -> dict[str, Any]:
        """``anyio.run`` options for a subshell's loop (``parent``: the main thread's)."""
        if parent and self.backend == "asyncio" and self.use_uvloop:
            try:
                import uvloop  # noqa: F401
            except ImportError:
                return {}
            return {"use_uvloop": True}
        return {}

    def _bind(self, kind: int, name: str) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 1000)
        if kind != zmq.PUB:
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        public, secret = self.connection.get("curve_publickey"), self.connection.get("curve_secretkey")
        if public and secret:  # CurveZMQ: encrypted, and only clients with the keys get in
            sock.curve_secretkey = secret.encode() if isinstance(secret, str) else secret
            sock.curve_publickey = public.encode() if isinstance(public, str) else public
            sock.curve_server = True
        transport = self.connection.get("transport", "tcp")
        ip = self.connection.get("ip") or self.ip
        port = int(self.connection.get(f"{name}_port") or 0)
        if transport == "tcp":
            if port:
                sock.bind(f"tcp://{ip}:{port}")
            else:
                port = sock.bind_to_random_port(f"tcp://{ip}")
        else:
            path = f"{ip}-{port or 1}"
            sock.bind(f"ipc://{path}")
        self.connection[f"{name}_port"] = port
        return sock

    def start(self, write_connection_to: os.PathLike | None = None) -> None:
        """Run the kernel on the calling (main) thread until shutdown."""
        # threads inherit the signal mask: ours are started with SIGINT/SIGTERM blocked,
        # so those signals always wake the main thread (unblocked in _start_io)
        signal.pthread_sigmask(signal.SIG_BLOCK, _KERNEL_SIGNALS)
        shell_sock = self._bind(zmq.ROUTER, "shell")
        stdin_sock = self._bind(zmq.ROUTER, "stdin")
        control_sock = self._bind(zmq.ROUTER, "control")
        iopub_sock = self._bind(zmq.PUB, "iopub")
        hb_sock = self._bind(zmq.ROUTER, "hb")
        if write_connection_to is not None:
            _write_private_json(write_connection_to, self.connection)
            log.warning("wrote connection file %s", write_connection_to)

        self.iopub = IOPub(iopub_sock, self.codec, self.flush_interval)
        self.streams = StreamRouter(self.iopub)
        log_stream = sys.__stderr__
        if self.capture_fd_output:
            capture = FdCapture(self.streams, lambda: self.last_execute)
            capture.start()
            log_stream = capture.original_stderr()
        _log_to(log_stream)
        self.stdin = Stdin(self)
        self._init_shell()
        self.router = Router(self, shell_sock, stdin_sock, self.codec.fork())
        self.control = Control(self, control_sock, self.codec.fork())
        self._heartbeat = threading.Thread(
            target=_echo, args=(hb_sock,), name="heartbeat", daemon=True
        )

        parent = Subshell(self, None, self.shell.parent_state)
        self.subshells.parent = parent
        signal.signal(signal.SIGINT, self.on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        sys.setswitchinterval(self.switch_interval)
        self.iopub.start()
        self._heartbeat.start()
        if os.environ.get("JPY_PARENT_PID"):
            threading.Thread(target=self._exit_with_launcher, name="parent-watch",
                             daemon=True).start()
        try:
            parent.run(on_ready=self._start_io)
        finally:
            self._cleanup()

    def _start_io(self) -> None:
        self.router.start()
        self.control.start()
        self.iopub.status("starting", None)
        log.info("subshell_kernel %s ready (%s backend)", __version__, self.backend)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _KERNEL_SIGNALS)

    def warm_up_tracebacks(self) -> None:
        """Format one traceback off the hot path: IPython loads its formatter lazily,
        which made the first error or interrupt of a session ~40 ms slower."""
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.shell.InteractiveTB.structured_traceback(*sys.exc_info())

    def _init_shell(self) -> None:
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        propagate_parent_to_threads()
        install_interruptible_sleep()
        sys.stdout = OutStream("stdout", self.streams)
        sys.stderr = OutStream("stderr", self.streams)
        shell = KernelShell.instance(parent=self)
        shell.publisher = self.iopub.publish
        shell.stream_flusher = self.streams.flush
        shell.kernel = self
        shell.set_hook("show_in_pager", lambda sh, data, start=0, screen_lines=0: sh._page(data, start))
        self.shell = shell
        self.comm_manager = comms.install(self)
        self.stdin.install()

    # -- used by subshells and libraries ---------------------------------------------
    def send_shell(self, frames: list) -> None:
        self.router.shell.send(frames)

    def send_stdin(self, frames: list) -> None:
        self.router.stdin.send(frames)

    def publish_now(self, msg_type: str, content: dict, metadata=None, buffers=None) -> None:
        """Publish with the current parent, after its buffered output (even if silent)."""
        parent = get_parent()
        self.streams.flush(parent)
        self.iopub.publish(msg_type, content, parent, metadata, buffers)

    def get_parent(self, channel: str = "shell") -> dict[str, Any]:
        """The request being handled, as ipykernel returns it (ipywidgets' Output uses it)."""
        return {"header": get_parent() or {}}

    def kernel_info(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "protocol_version": PROTOCOL_VERSION,
            "implementation": "subshell_kernel",
            "implementation_version": __version__,
            "language_info": {
                "name": "python",
                "version": platform.python_version(),
                "mimetype": "text/x-python",
                "codemirror_mode": {"name": "ipython", "version": 3},
                "pygments_lexer": "ipython3",
                "nbconvert_exporter": "python",
                "file_extension": ".py",
            },
            "banner": f"Python {sys.version.split()[0]} on subshell_kernel {__version__} "
            f"({self.backend})",
            "help_links": [
                {"text": "Python", "url": "https://docs.python.org/3/"},
                {"text": "IPython", "url": "https://ipython.readthedocs.io/"},
            ],
            "supported_features": ["kernel subshells"],
            "debugger": False,
        }

    # -- interrupt ----------------------------------------------------------------------
    def interrupt_all(self) -> None:
        """Interrupt every busy subshell (from any thread)."""
        for sub in self.subshells.children():
            sub.interrupt()
        self.subshells.parent.interrupt()

    def signal_parent_interrupt(self) -> None:
        """Raise KeyboardInterrupt in blocking code on the main thread, via SIGINT."""
        self._sigint_parent_only = True
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def on_sigint(self, signum, frame) -> None:
        """SIGINT handler (main thread): a signal-mode interrupt reaches every subshell."""
        if self._sigint_parent_only:
            self._sigint_parent_only = False
        else:
            for sub in self.subshells.children():
                sub.interrupt()
        self.subshells.parent.interrupt()  # raises KeyboardInterrupt into a blocking cell

    # -- shutdown -----------------------------------------------------------------------
    def request_shutdown(self, restart: bool = False) -> None:
        """Stop every subshell without waiting; the process exits within 2 s."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self._shutdown_deadline = time.monotonic() + 1.8
        self._stopped_children = self.subshells.children()
        for subshell_id in self.subshells.ids():
            self.subshells.delete(subshell_id)
        threading.Thread(target=self._exit_watchdog, name="exit-watchdog", daemon=True).start()
        self.subshells.parent.stop()  # last: from a signal handler it may raise KeyboardInterrupt

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def finish_shutdown(self) -> None:
        """The shutdown reply has been sent: the main thread may close the sockets."""
        self._control_done.set()

    def _on_sigterm(self, signum, frame) -> None:
        self.finish_shutdown()
        self.request_shutdown()

    def _exit_with_launcher(self) -> None:
        """Shut down when the process that launched us (a jupyter_client, which sets
        JPY_PARENT_PID) dies without shutting us down: an orphaned kernel would
        otherwise run forever.  Checked once a second, off every hot path."""
        launcher = os.getppid()
        while not self._exited.wait(1.0):
            if os.getppid() != launcher:
                log.warning("the process that launched this kernel is gone; shutting down")
                self.finish_shutdown()
                self.request_shutdown()
                return

    def _exit_watchdog(self) -> None:
        """However stuck a thread is (a C call, a socket), exit by the deadline."""
        self._exited.wait(max(0.0, self._shutdown_deadline - time.monotonic()))
        if not self._exited.is_set():
            log.warning("shutdown did not complete in time; exiting")
            os._exit(0)

    def _cleanup(self) -> None:
        """Main thread, after the parent subshell's loop ended: close in owner order."""
        self._control_done.wait(1.0)
        deadline = time.monotonic() + 0.8
        children = getattr(self, "_stopped_children", [])
        for sub in children:
            if sub.join(max(0.0, deadline - time.monotonic())):
                sub.state.close()  # here, not on its thread: finalization must not race SQLite
        self.router.stop(1.0)
        self.iopub.stop(1.0)  # flushes buffered output and closes the socket
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        # every socket is closed by its owner thread (control and heartbeat on ETERM)
        self.context.term()
        self._exited.set()


def _log_to(stream) -> None:
    """The kernel's own log goes to the terminal that started it, never to a frontend.

    Without a handler, records would reach ``logging.lastResort``, which writes
    to ``sys.stderr``: the OutStream of whatever request is current.
    """
    package_log = logging.getLogger(__name__.rpartition(".")[0])
    if not package_log.handlers:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("[subshell_kernel] %(levelname)s | %(message)s"))
        package_log.addHandler(handler)
        package_log.setLevel(logging.WARNING)
        package_log.propagate = False


def _write_private_json(path: os.PathLike, data: dict) -> None:
    """Write ``data`` to a file only its owner can read (it holds the key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)


def _echo(sock: zmq.Socket) -> None:
    """Heartbeat: echo every ping in C (``zmq.proxy`` releases the GIL)."""
    try:
        zmq.proxy(sock, sock)
    except zmq.ZMQError:  # ETERM at shutdown
        sock.close(linger=0)
