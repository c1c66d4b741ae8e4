"""The kernel's first tenth of a second: its sockets, and the threads that answer on them.

Importing IPython and building its shell is most of a kernel's startup (about
0.3 s on this project's 2-core machine), and the first ``kernel_info_reply``
needs none of it.  So the kernel starts in two steps (``app.py``): ``Boot``,
which imports only the transport, the runtime's output router and the sans-IO
core, then ``kernel.Kernel``, which imports IPython and builds the rest around
the parts made here.  ``Boot``, in order:

1. blocks SIGINT and SIGTERM in the main thread, so that every thread started
   from here on (libzmq's own included) inherits the block and the signals
   reach the main thread; the kernel unblocks them once the parent subshell
   runs (``InterpreterHooks.unblock_signals``);
2. sets the kernel's switch interval, so that the control and router threads
   get the GIL from the main thread, busy importing, within 0.1 ms rather than
   Python's default 5 ms;
3. binds the five sockets and writes the connection file when asked to;
4. starts the iopub thread (the fd pipes join later), the heartbeat, the
   shell router and the control thread.

From then on ``kernel_info_request`` is answered on control and on shell with
``kernel_info``, the one function that builds that reply for the kernel's
whole life, so the early reply is the reply.  Every other request waits, in
the order it came, until the kernel opens the router and control thread
(``Router.open``, ``Control.open``).  Both changes to the interpreter are
undone by ``InterpreterHooks.uninstall``, which is handed ``undo``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import zmq

from . import __version__
from .adapter.debugpy_server import debugpy_available
from .core.kernel_info import kernel_info_content
from .core.lifecycle import Outbox
from .core.protocol import PROTOCOL_VERSION, Codec, Message, pack
from .runtime.streams import StreamRouter
from .runtime.threads import return_freed_memory
from .settings import SubshellKernel
from .transport import native_control, sockets
from .transport.channels import Channels
from .transport.control import Control
from .transport.iopub import RETRY_SECONDS, STALL_SECONDS, IOPub
from .transport.router import Router

log = logging.getLogger(__name__)

#: blocked in every thread but the main thread
KERNEL_SIGNALS = {signal.SIGINT, signal.SIGTERM}
SOCKET_NAMES = ("shell", "iopub", "stdin", "control", "hb")


class Boot:
    """The sockets, the IO parts around them, and the threads already answering.

    Attributes are the parts the kernel builds on: ``context``, ``codec``,
    ``iopub``, ``streams``, ``channels``, ``outbox``, ``router``, ``control``,
    ``ports``; ``undo`` holds what puts the interpreter back.
    """

    def __init__(self, connection: dict[str, Any], settings: SubshellKernel,
                 write_connection_to: os.PathLike | None = None):
        self.connection = connection
        self.settings = settings
        #: the process that launched this one, as it was at the start (``Kernel`` shuts
        #: down when it is gone, even if it died while IPython was loading)
        self.launcher_pid = os.getppid()
        self._debugger_available: bool | None = None
        self.undo = change_interpreter(settings.switch_interval)

        self.context = zmq.Context()
        key = connection.get("key", "")
        key = key.encode() if isinstance(key, str) else key
        scheme = connection.get("signature_scheme", "hmac-sha256")
        # the C part, where it can be used: whole messages in one call on shell, stdin
        # and iopub; and the C control reader, whose replay history is the one it
        # shares with Python, and which publishes on iopub under the lock Python takes
        libzmq = native_control.libzmq_functions() if settings.native_control else None
        zmq_functions = libzmq if native_control.reads_control(key, scheme) else None
        history = None if zmq_functions is None else native_control.replay_history()
        iopub_lock = None if zmq_functions is None else native_control.socket_lock()
        self.codec = Codec(key, scheme, history=history)
        shell_sock, stdin_sock = self._bind(zmq.ROUTER, "shell"), self._bind(zmq.ROUTER, "stdin")
        control_sock, hb_sock = self._bind(zmq.ROUTER, "control"), self._bind(zmq.ROUTER, "hb")
        budget = IOPub.high_water_mark(settings.iopub_subscriber_budget)
        iopub_sock = self._bind(zmq.XPUB, "iopub", budget)
        if write_connection_to is not None:
            _write_private_json(write_connection_to, connection)
            log.warning("wrote connection file %s", write_connection_to)
        self.ports = {f"{name}_port": connection[f"{name}_port"] for name in SOCKET_NAMES}

        def frames(socket: zmq.Socket):
            return None if libzmq is None else native_control.frames(libzmq, socket)

        self.iopub = iopub = IOPub(iopub_sock, self.codec.fork(), settings.backend,
                                   settings.flush_interval, iopub_lock, frames(iopub_sock))
        self.streams = streams = StreamRouter(iopub.publish, iopub.flush_soon)
        self.wake = sockets.WakePipe()
        shell = sockets.SharedSocket(shell_sock, self.wake.wake, frames=frames(shell_sock))
        stdin = sockets.SharedSocket(stdin_sock, self.wake.wake, frames=frames(stdin_sock))
        self.channels = channels = Channels(self.codec, shell, stdin, iopub)
        self.outbox = Outbox(channels.status, channels.reply, self.flush_output)
        self.router = Router(shell, stdin, self.wake, self.codec.fork(), self.outbox,
                             early={"kernel_info_request": self.early_kernel_info})
        native = None
        if zmq_functions is not None:
            # packed once: kernel_info is the same for the kernel's whole life
            native = native_control.reader(
                zmq_functions, control_sock, iopub_sock, iopub_lock, history,
                iopub.subscriptions_waiting, key, self.codec.session_id,
                self.codec.id_prefix, PROTOCOL_VERSION, pack(self.kernel_info()),
                STALL_SECONDS, RETRY_SECONDS)
        self.control = Control(control_sock, self.codec.fork(),
                               {"kernel_info_request": self.answer_kernel_info},
                               channels.status, streams.flush, native)
        self.heartbeat_socket = hb_sock
        self.kernel_info()  # its one lookup (is debugpy there?) done here, not in a reply

    def start(self) -> None:
        """Start answering: ``kernel_info`` at once, the rest once the kernel opens.

        The iopub thread starts too, without being waited for (its loop's imports
        take ~70 ms); an early ``kernel_info`` reply first welcomes the
        subscriptions waiting (``early_kernel_info``).
        """
        self.iopub.start(self.streams.flush_all, return_freed_memory)
        sockets.start_heartbeat(self.heartbeat_socket)
        self.router.start()
        self.control.start()
        self.iopub.status("starting", None)

    def _bind(self, kind: int, name: str, sndhwm: int = 0) -> zmq.Socket:
        return sockets.bind(self.context, kind, self.connection, name, self.settings.ip, sndhwm)

    def flush_output(self, parent: dict[str, Any]) -> None:
        """Before a request's idle: its buffered output, and for the execute request that
        fd output goes to, what the fd pipes hold now (``IOPub.forward_fd_output``)."""
        if parent is self.streams.fd_parent:
            self.iopub.forward_fd_output()
        self.streams.flush(parent)

    def kernel_info(self) -> dict[str, Any]:
        """The ``kernel_info_reply`` content, the same from the first reply on."""
        if self._debugger_available is None:  # looked up once, without importing it
            self._debugger_available = debugpy_available()
        features = ["kernel subshells", "debugger"] if self._debugger_available \
            else ["kernel subshells"]
        return kernel_info_content(__version__, self.settings.backend, features,
                                   debugger=self._debugger_available)

    def early_kernel_info(self) -> dict[str, Any]:
        """The reply while the kernel loads: a subscription made before the request
        is welcomed (``iopub_welcome``) before it, as a client that waits for
        ``kernel_info`` and then reads iopub expects, whether or not the iopub
        loop runs yet."""
        self.iopub.welcome_waiting()
        return self.kernel_info()

    def answer_kernel_info(self, _subshell: None, _msg: Message) -> dict[str, Any]:
        return self.early_kernel_info()


def change_interpreter(switch_interval: float) -> list[Callable[[], None]]:
    """Steps 1 and 2 of the module docstring; returns what undoes them, in order."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, KERNEL_SIGNALS)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval)
    return [lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old_mask),
            lambda: sys.setswitchinterval(old_interval)]


def _write_private_json(path: os.PathLike, data: dict) -> None:
    """Write ``data`` to a file only its owner can read (it holds the key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
