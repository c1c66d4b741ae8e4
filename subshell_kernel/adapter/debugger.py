"""The Jupyter debugger: ``debug_request`` on control, ``debug_event`` on iopub.

Each ``debug_request`` carries a DAP request; ``Debugger.handle`` (in the
control thread's dispatch table) answers it with a DAP response, either
itself (the Jupyter extensions and what needs no suspended frame) or by
forwarding it to debugpy's in-process server (``debugpy_server``) over a DAP
connection (``transport.dap``).  Events from debugpy go out on iopub as
``debug_event`` from the connection's reader thread, as they arrive.

Nothing of debugpy is imported until the first ``initialize``: a kernel that
is never debugged pays for this module only (no import, no thread, no trace
function).  ``debugInfo`` and ``dumpCell``, which JupyterLab sends to every
kernel whose spec says ``debugger: true``, start nothing either.

Semantics with subshells (``jep/debugger.md``): breakpoints stop the parent
subshell (DAP thread 1, the main thread) and every child subshell
(``subshell-<id>``); only the thread that hit one stops, the others and every
kernel thread keep running; ``continue`` and the steps act on the one thread
they name; an interrupt or a delete ends the stopped cell with
``KeyboardInterrupt`` and the kernel announces that thread ``continued``.
"""

from __future__ import annotations

import ast
import linecache
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from IPython.core.inputtransformer2 import leading_empty_lines

from ..core import dap
from ..core.protocol import Message
from ..transport.dap import DapConnection
from . import cells
from .debug_events import StoppedThreads
from .debug_variables import GROUPS, NamespaceVariables, rich_expression, rich_representation, shown
from .debugpy_server import DebugServer

log = logging.getLogger(__name__)

Request = dict[str, Any]
Response = dict[str, Any]

#: modules whose frames a stack trace or a step never shows: the kernel, IPython, event loops
HIDDEN_MODULES = (
    "subshell_kernel", "IPython", "asyncio", "anyio", "trio", "outcome", "sniffio", "uvloop",
    "zmq", "traitlets", "comm", "threading", "contextlib", "selectors", "concurrent", "codeop",
)
#: attach arguments the kernel sets whatever the client asks (see jep/debugger.md)
ATTACH_OVERRIDES = {
    "stopAllThreadsOnSuspend": False,  # a stop stops one subshell, never the others
    "steppingResumesAllThreads": False,
    "redirectOutput": False,  # output is the kernel's: stream messages of the request
    "subProcess": False,
}
STEPS = ("next", "stepIn", "stepOut", "stepBack", "reverseContinue", "goto")


class Debugger:
    """Answers debug requests (control thread); publishes debugpy's events (reader thread).

    ``shell``         the KernelShell (user namespace, rich display, input transforms)
    ``publish``       ``publish(msg_type, content, parent)`` on iopub, from any thread
    ``start_server``  starts debugpy's server once per process (``hooks`` undoes it)
    """

    def __init__(self, shell, publish: Callable[..., None],
                 start_server: Callable[[], DebugServer]):
        self._shell = shell
        self._publish = publish
        self._start_server = start_server
        self._server: DebugServer | None = None
        self._dap: DapConnection | None = None
        self._started = False  # attached: breakpoints are live
        self._hooked = False  # the IPython event callbacks are registered
        self._initialized = threading.Event()
        self._breakpoints: dict[str, list[dict]] = {}
        self._stopped = StoppedThreads(self._announce)
        self._variables: NamespaceVariables | None = None
        self._removed_transforms: list[tuple[int, Any]] = []
        self._parent: dict[str, Any] | None = None  # the debug_request being answered, or last
        self._commands: dict[str, Callable[[Request], Response]] = {
            "initialize": self._initialize,
            "attach": self._attach,
            "configurationDone": self._configuration_done,
            "disconnect": self._disconnect,
            "dumpCell": self._dump_cell,
            "debugInfo": self._debug_info,
            "setBreakpoints": self._set_breakpoints,
            "inspectVariables": self._inspect_variables,
            "variables": self._variables_request,
            "richInspectVariables": self._rich_inspect_variables,
            "copyToGlobals": self._copy_to_globals,
            "modules": self._modules,
            "source": self._source,
            "continue": self._continue,
            **dict.fromkeys(STEPS, self._step),
        }

    # -- the control handler ----------------------------------------------------------
    def handle(self, sub: None, msg: Message) -> Response:
        """The ``debug_request`` handler: a DAP response for every request, never an exception."""
        try:
            request = dap.check_request(msg.content)
        except dap.DapError as e:
            content = msg.content if isinstance(msg.content, dict) else {}
            return dap.error({"seq": content.get("seq", 0), "command": content.get("command", "")},
                             str(e))
        self._parent = msg.header
        handler = self._commands.get(request["command"], self._forward)
        try:
            return handler(request)
        except Exception as e:  # a bad argument, a failed start: the client is told why
            log.info("debug request %s failed", request["command"], exc_info=True)
            return dap.error(request, f"{type(e).__name__}: {e}")

    def _forward(self, request: Request, arguments: dict | None = None) -> Response:
        if self._dap is None or self._dap.closed:
            return dap.error(request, "the debugger is not started: send initialize first")
        return self._dap.request(request["command"], request["arguments"] if arguments is None
                                 else arguments, client_seq=request["seq"])

    # -- session ----------------------------------------------------------------------
    def _initialize(self, request: Request) -> Response:
        if self._server is None:
            self._server = self._start_server()
        if self._dap is None or self._dap.closed:
            self._dap = DapConnection.connect(self._server.host, self._server.port,
                                              self._on_event)
            self._server.accepted()
        authorized = self._dap.request("pydevdAuthorize", self._server.authorization())
        if not authorized.get("success"):
            return dap.error(request, f"debugpy refused the kernel: {authorized.get('message')}")
        return self._forward(request)

    def _attach(self, request: Request) -> Response:
        arguments = dict(request["arguments"])
        arguments.update(ATTACH_OVERRIDES)
        if not arguments.setdefault("justMyCode", False):
            arguments["debugOptions"] = [*_list(arguments.get("debugOptions")), "DebugStdLib"]
        arguments["rules"] = [*_list(arguments.get("rules")), *_hidden_rules()]
        self._initialized.clear()
        reply = self._forward(request, arguments)
        if not reply.get("success"):
            return reply
        if not self._initialized.wait(DapConnection.TIMEOUT):
            log.warning("debugpy sent no 'initialized' event")
        # the kernel ends the configuration itself: JupyterLab never sends configurationDone
        self._dap.request("configurationDone")
        # listing the threads once numbers them: the main thread (the parent subshell) is 1
        self._dap.request("threads")
        self._begin_session()
        return reply

    def _configuration_done(self, request: Request) -> Response:
        return dap.response(request)  # sent by the kernel at attach

    def _disconnect(self, request: Request) -> Response:
        if not self._started:
            return dap.response(request)
        # never end the process: ipykernel's tests and some clients ask for that
        reply = self._forward(request, {**request["arguments"], "terminateDebuggee": False})
        self._end_session()
        return reply

    def _begin_session(self) -> None:
        shell = self._shell
        # breakpoints are set on the lines of the cell as written: keep its leading blank lines
        transforms = shell.input_transformer_manager.cleanup_transforms
        if leading_empty_lines in transforms:
            index = transforms.index(leading_empty_lines)
            self._removed_transforms.append((index, transforms.pop(index)))
        if not self._hooked:  # from the first session to the end of the kernel
            shell.events.register("pre_execute", self._before_cell)
            shell.events.register("post_execute", self._after_cell)
            self._hooked = True
        self._server.trace_all_threads()
        self._started = True

    def _end_session(self) -> None:
        self._started = False
        self._server.stop_tracing_new_threads()
        transforms = self._shell.input_transformer_manager.cleanup_transforms
        while self._removed_transforms:
            index, transform = self._removed_transforms.pop()
            transforms.insert(index, transform)
        self._breakpoints.clear()
        self._stopped.clear()
        self._close_variables()

    def close(self) -> None:
        """At kernel shutdown: end the session and the connection (the server stops with
        the hooks)."""
        if self._started:
            self._end_session()
        if self._dap is not None:
            self._dap.close()

    # -- on the thread of a cell, once a session ever ran (IPython events) ---------------
    def _before_cell(self) -> None:
        if self._started:
            self._server.ensure_traced()  # an interrupt at a breakpoint dropped it
        else:
            self._server.ensure_untraced()  # a session ended: full speed again

    def _after_cell(self) -> None:
        # a stopped cell that ended without resuming (interrupted, its subshell deleted)
        if self._started:
            self._server.end_abandoned_stop()
            self._stopped.left(self._server.thread_id())

    # -- on whichever thread interrupts a subshell (``Subshell.before_raise``) -----------
    def release(self, thread_ident: int) -> None:
        """KeyboardInterrupt is being raised into this subshell's thread: a stop there
        ends with it (the main thread's signal handler calls this too: no waiting here)."""
        if self._started:
            self._server.release(thread_ident)

    # -- events (reader thread) ---------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "initialized":
            self._initialized.set()
        elif kind == "output" and _is_interrupt_notice(event):
            return  # the kernel puts the thread's tracing back (``_before_cell``)
        self._stopped.on_event(event)

    def _announce(self, event: dict[str, Any]) -> None:
        self._publish("debug_event", event, self._parent)

    # -- the Jupyter extensions -------------------------------------------------------------
    def _dump_cell(self, request: Request) -> Response:
        code = request["arguments"].get("code")
        if not isinstance(code, str):
            return dap.error(request, "dumpCell needs arguments.code (a string)")
        return dap.response(request, {"sourcePath": cells.write_cell(code)})

    def _debug_info(self, request: Request) -> Response:
        return dap.response(request, {
            "isStarted": self._started,
            "hashMethod": cells.HASH_METHOD,
            "hashSeed": cells.HASH_SEED,
            "tmpFilePrefix": cells.prefix(),
            "tmpFileSuffix": cells.SUFFIX,
            "breakpoints": [{"source": source, "breakpoints": lines}
                            for source, lines in self._breakpoints.items()],
            "stoppedThreads": self._stopped.ids(),
            "richRendering": True,
            "exceptionPaths": ["Python Exceptions"],
            "copyToGlobals": True,
        })

    def _set_breakpoints(self, request: Request) -> Response:
        reply = self._forward(request)
        source = (request["arguments"].get("source") or {}).get("path")
        if reply.get("success") and isinstance(source, str):
            # debugpy may move a breakpoint to another line: keep the lines it set
            lines = [{"line": b["line"]} for b in reply.get("body", {}).get("breakpoints", [])
                     if "line" in b]
            if lines:
                self._breakpoints[source] = lines
            else:
                self._breakpoints.pop(source, None)
        return reply

    def _continue(self, request: Request) -> Response:
        arguments = dict(request["arguments"])
        thread_id = arguments.get("threadId")
        if isinstance(thread_id, int):
            arguments["singleThread"] = True  # only the subshell it names resumes
            self._stopped.resuming(thread_id, stepping=False)
        reply = self._forward(request, arguments)
        if reply.get("success") and isinstance(thread_id, int):
            self._server.wake(thread_id)
        return reply

    def _step(self, request: Request) -> Response:
        arguments = dict(request["arguments"])
        if isinstance(arguments.get("threadId"), int):
            arguments["singleThread"] = True
            self._stopped.resuming(arguments["threadId"], stepping=True)
        return self._forward(request, arguments)

    # -- variables ---------------------------------------------------------------------------
    def _inspect_variables(self, request: Request) -> Response:
        if self._server is None:
            return dap.error(request, "the debugger is not started: send initialize first")
        self._close_variables()
        self._variables = NamespaceVariables(self._shell.user_ns)
        return dap.response(request, {"variables": self._variables.variables()})

    def _variables_request(self, request: Request) -> Response:
        reference = request["arguments"].get("variablesReference")
        if self._variables is not None and self._variables.knows(reference):
            return dap.response(request, {"variables": self._variables.variables(reference)})
        reply = self._forward(request)
        body = reply.get("body")
        if reply.get("success") and isinstance(body, dict):
            body["variables"] = [v for v in body.get("variables", []) if shown(v.get("name", ""))]
        return reply

    def _close_variables(self) -> None:
        if self._variables is not None:
            self._variables.close()
            self._variables = None

    def _rich_inspect_variables(self, request: Request) -> Response:
        arguments = request["arguments"]
        name = arguments.get("variableName")
        if not isinstance(name, str) or not name.isidentifier():
            if name in GROUPS:
                return dap.response(request, {"data": {}, "metadata": {}})
            return dap.error(request, "richInspectVariables needs a variableName (an identifier)")
        frame_id = arguments.get("frameId")
        if frame_id is None or not self._stopped.ids():
            data, metadata = rich_representation(self._shell, name)
        else:
            reply = self._dap.request("evaluate", {
                "expression": rich_expression(name), "frameId": frame_id, "context": "clipboard",
            }, client_seq=request["seq"])
            if not reply.get("success"):
                return {**reply, "command": request["command"]}
            data, metadata = ast.literal_eval(reply["body"]["result"])
        return dap.response(request, {
            "data": data, "metadata": {k: v for k, v in metadata.items() if k in data}})

    def _copy_to_globals(self, request: Request) -> Response:
        arguments = request["arguments"]
        src, dst = arguments.get("srcVariableName"), arguments.get("dstVariableName")
        frame_id = arguments.get("srcFrameId")
        if not (isinstance(src, str) and src.isidentifier()
                and isinstance(dst, str) and dst.isidentifier()):
            return dap.error(request, "srcVariableName and dstVariableName must be identifiers")
        if not isinstance(frame_id, int) or isinstance(frame_id, bool):
            return dap.error(request, "srcFrameId must be an integer")
        if self._dap is None:
            return dap.error(request, "the debugger is not started: send initialize first")
        reply = self._dap.request("setExpression", {
            "expression": f"globals()[{dst!r}]", "value": src, "frameId": frame_id,
        }, client_seq=request["seq"])
        return {**reply, "command": request["command"]}

    # -- files and modules --------------------------------------------------------------------
    def _modules(self, request: Request) -> Response:
        modules = list(sys.modules.values())
        arguments = request["arguments"]
        start = _int(arguments.get("startModule"), 0)
        count = _int(arguments.get("moduleCount"), 0) or len(modules)
        found = []
        for index, module in enumerate(modules[start:start + count], start):
            path = getattr(getattr(module, "__spec__", None), "origin", None)
            if isinstance(path, str) and path.endswith(".py"):
                found.append({"id": index, "name": module.__name__, "path": path})
        return dap.response(request, {"modules": found, "totalModules": len(modules)})

    def _source(self, request: Request) -> Response:
        source = request["arguments"].get("source") or {}
        path = source.get("path") if isinstance(source, dict) else None
        if not isinstance(path, str):
            return dap.error(request, "source needs arguments.source.path")
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return dap.response(request, {"content": f.read()})
        lines = linecache.getlines(path)  # a cell that ran but was never dumped
        if lines:
            return dap.response(request, {"content": "".join(lines)})
        return dap.error(request, f"source unavailable: {path}")


def _hidden_rules() -> list[dict[str, Any]]:
    """pydevd exclude rules for the frames of the kernel and its machinery."""
    rules = []
    for name in HIDDEN_MODULES:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            is_package = os.path.basename(path) == "__init__.py"
            rules.append({"path": os.path.dirname(path) if is_package else path,
                          "include": False})
    return rules


def _is_interrupt_notice(event: dict[str, Any]) -> bool:
    """pydevd's notice that a KeyboardInterrupt ended debugging on a thread."""
    output = (event.get("body") or {}).get("output", "")
    return isinstance(output, str) and output.startswith(
        "<class 'KeyboardInterrupt'> raised from within the callback set in sys.settrace")


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else default
