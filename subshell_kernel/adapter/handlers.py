"""Shell request handlers: one coroutine per message type, in a dispatch table.

Each handler runs on the loop of the subshell that received the request, with
``current_parent`` set to the request's header, and is called as
``handler(subshell, msg)``.  It returns the reply content (``None`` for
messages without a reply, such as ``comm_msg``); the request lifecycle sends
the reply and the ``idle`` status.  ``ShellHandlers`` is handed what the
handlers use: the IPython shell, the comm manager, the stream router (for fd
output attribution), the kernel-level requests shared with control, and the
main thread's pause (a figure comm's handler on a child subshell runs while
the main thread waits outside matplotlib).

An ``await`` cell runs with comm messages served beside it
(``Subshell.comms_beside``): a cell can await what a comm handler resolves.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
from IPython.core.completer import provisionalcompleter, rectify_completions
from IPython.utils.tokenutil import token_at_cursor

from ..core.protocol import Message, ProtocolError, error_content
from ..runtime.context import mute
from . import autoawait
from .shell import KernelShell, cell_scope, current_payloads, display_error, last_error
from .stdin import stdin_request

if TYPE_CHECKING:
    from ..runtime.main_pause import MainPause
    from ..runtime.streams import StreamRouter
    from ..runtime.subshell import Subshell
    from .comms import KernelCommManager


def _field(content: dict, name: str, kind: type | tuple, default: Any) -> Any:
    """``content[name]``, or ``default``; ProtocolError if it has the wrong type."""
    value = content.get(name, default)
    if value is not default and (not isinstance(value, kind) or isinstance(value, bool)
                                 and kind is int):
        raise ProtocolError(f"content.{name} has the wrong type: {value!r}")
    return value


class ShellHandlers:
    def __init__(
        self,
        shell: KernelShell,
        comm_manager: KernelCommManager,
        streams: StreamRouter,
        shared: Mapping[str, Any],
        main_pause: MainPause,
    ):
        self.shell = shell
        self.comm_manager = comm_manager
        self.streams = streams
        self.main_pause = main_pause
        #: the dispatch table a subshell uses
        self.table: dict[str, Any] = {
            "execute_request": self.execute,
            "complete_request": self.complete,
            "inspect_request": self.inspect,
            "history_request": self.history,
            "is_complete_request": self.is_complete,
            "comm_info_request": self.comm_info,
            "comm_open": self._comm("comm_open"),
            "comm_msg": self._comm("comm_msg"),
            "comm_close": self._comm("comm_close"),
            **shared,  # kernel_info_request, shutdown_request
        }

    async def execute(self, sub: Subshell, msg: Message) -> dict[str, Any]:
        content = msg.content
        code = content.get("code")
        if not isinstance(code, str):
            raise ProtocolError("execute_request content.code must be a string")
        silent = bool(content.get("silent", False))
        store_history = bool(content.get("store_history", not silent)) and not silent
        shell = self.shell

        self.streams.fd_parent = msg.header
        if silent:
            mute(msg.header)
        else:
            shell.publish("execute_input", {"code": code, "execution_count": shell.execution_count})
        payloads: list = []
        stdin = (msg, sub) if content.get("allow_stdin", True) else None
        cell_vars = (current_payloads, last_error, display_error, stdin_request)
        tokens = [var.set(value) for var, value in zip(cell_vars, (payloads, None, None, stdin))]
        try:
            result = await self._run_cell(sub, code, store_history, silent,
                                          msg.header.get("cell_id"))
            expressions = content.get("user_expressions")
            user_expressions = shell.user_expressions(expressions) if expressions else {}
        finally:
            error, shown_error = last_error.get(), display_error.get()
            for var, token in zip(cell_vars, tokens):
                var.reset(token)

        count = shell.execution_count - 1 if store_history else shell.execution_count
        reply: dict[str, Any] = {"execution_count": count}
        failed = result is None or not result.success or shown_error is not None
        if failed:
            reply.update(shown_error or error or _error_of(result))
            reply["status"] = "error"
        else:
            reply["status"] = "ok"
        reply["user_expressions"] = user_expressions
        reply["payload"] = payloads
        if failed and not silent and content.get("stop_on_error", True):
            await sub.abort_queued()
        return reply

    async def _run_cell(self, sub: Subshell, code: str, store_history: bool, silent: bool,
                        cell_id):
        """Run a cell on this subshell's loop; interruptible as ``sync`` or ``async``."""
        shell = self.shell
        try:
            transformed, exc_tuple = shell.transform_cell(code), None
        except Exception:
            transformed, exc_tuple = code, sys.exc_info()
        # should_run_async compiles the cell; a cell without these words cannot be async
        is_async = (
            exc_tuple is None
            and ("await" in transformed or "async" in transformed)
            and shell.should_run_async(code, transformed_cell=transformed,
                                       preprocessing_exc_tuple=None)
        )
        coro = shell.run_cell_async(
            code,
            store_history=store_history,
            silent=silent,
            transformed_cell=transformed,
            preprocessing_exc_tuple=exc_tuple,
            cell_id=cell_id,
        )
        result = None
        try:
            if is_async and not autoawait.is_own_loop(shell, sub.backend):
                result = autoawait.run_elsewhere(shell, sub, coro)
            elif is_async:
                async with sub.comms_beside():  # outside the cell's scope: an interrupt
                    with anyio.CancelScope() as scope:  # ends the cell, not a comm handler
                        token = cell_scope.set(scope)
                        sub.set_running("async", scope)
                        try:
                            result = await coro
                        finally:
                            cell_scope.reset(token)
            else:
                sub.set_running("sync")
                result = await coro  # no top-level await: completes without suspending
        finally:
            sub.set_running(None)
            shell.events.trigger("post_execute")
            if not silent:
                shell.events.trigger("post_run_cell", result)
        return result

    async def complete(self, sub: Subshell, msg: Message) -> dict[str, Any]:
        code = _field(msg.content, "code", str, "")
        cursor_pos = _field(msg.content, "cursor_pos", int, None)
        if cursor_pos is None:
            cursor_pos = len(code)
        with provisionalcompleter():
            completions = list(
                rectify_completions(code, self.shell.Completer.completions(code, cursor_pos))
            )
        if completions:
            start, end = completions[0].start, completions[0].end
        else:
            start = end = cursor_pos
        return {
            "status": "ok",
            "matches": [c.text for c in completions],
            "cursor_start": start,
            "cursor_end": end,
            "metadata": {
                "_jupyter_types_experimental": [
                    {"start": c.start, "end": c.end, "text": c.text, "type": c.type,
                     "signature": c.signature}
                    for c in completions
                ]
            },
        }

    async def inspect(self, sub: Subshell, msg: Message) -> dict[str, Any]:
        code = _field(msg.content, "code", str, "")
        cursor_pos = _field(msg.content, "cursor_pos", int, len(code))
        detail = _field(msg.content, "detail_level", int, 0)
        name = token_at_cursor(code, cursor_pos)
        try:
            bundle = self.shell.object_inspect_mime(name, detail_level=detail)
            if not self.shell.enable_html_pager:
                bundle.pop("text/html", None)
            return {"status": "ok", "found": True, "data": bundle, "metadata": {}}
        except KeyError:
            return {"status": "ok", "found": False, "data": {}, "metadata": {}}

    async def history(self, sub: Subshell, msg: Message) -> dict[str, Any]:
        c = msg.content
        hm = self.shell.history_manager
        output, raw = bool(c.get("output", False)), bool(c.get("raw", True))
        kind = c.get("hist_access_type", "tail")
        if kind == "tail":
            n = _field(c, "n", int, 10)
            hist = hm.get_tail(n, raw=raw, output=output, include_latest=True)
        elif kind == "range":
            hist = hm.get_range(_field(c, "session", int, 0), _field(c, "start", int, 1),
                                _field(c, "stop", int, None), raw=raw, output=output)
        elif kind == "search":
            hist = hm.search(_field(c, "pattern", str, "*"), raw=raw, output=output,
                             n=_field(c, "n", int, None), unique=bool(c.get("unique", False)))
        else:
            raise ProtocolError(f"unknown hist_access_type {kind!r}")
        return {"status": "ok", "history": [list(h) for h in hist]}

    async def is_complete(self, sub: Subshell, msg: Message) -> dict[str, Any]:
        code = _field(msg.content, "code", str, "")
        status, indent = self.shell.input_transformer_manager.check_complete(code)
        reply: dict[str, Any] = {"status": status}
        if status == "incomplete":
            reply["indent"] = " " * (indent or 0)
        return reply

    async def comm_info(self, sub: Subshell, msg: Message) -> dict[str, Any]:
        target = msg.content.get("target_name")
        return {
            "status": "ok",
            "comms": {
                comm_id: {"target_name": comm.target_name}
                for comm_id, comm in list(self.comm_manager.comms.items())
                if target is None or comm.target_name == target
            },
        }

    def _comm(self, name: str):
        method = getattr(self.comm_manager, name)

        async def handle(sub: Subshell, msg: Message) -> None:
            if not sub.is_main and self.comm_manager.is_figure(msg.content.get("comm_id")):
                with self.main_pause.held():  # matplotlib is not thread-safe
                    method(None, msg.idents, msg_as_dict(msg))
            else:
                method(None, msg.idents, msg_as_dict(msg))

        handle.__name__ = name
        return handle


def _error_of(result) -> dict[str, Any]:
    exc = None if result is None else (result.error_before_exec or result.error_in_exec)
    name = type(exc).__name__ if exc is not None else "UnknownError"
    return error_content(name, str(exc))


def msg_as_dict(msg: Message) -> dict[str, Any]:
    """The nested message dict that libraries such as ``comm`` expect."""
    return {
        "header": msg.header,
        "msg_id": msg.msg_id,
        "msg_type": msg.msg_type,
        "parent_header": msg.parent_header,
        "metadata": msg.metadata,
        "content": msg.content,
        "buffers": msg.buffers,
    }
