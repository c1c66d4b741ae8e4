"""Requests about the kernel as a whole, answered by the same handler on both channels.

``kernel_info_request``, ``connect_request`` and ``shutdown_request`` may come on
control or on shell (in any subshell); ``interrupt_request`` and the subshell requests of
JEP 91 only on control.  Every handler is a plain function
``(subshell or None, msg) -> reply content`` that never waits on a subshell's
loop, so control answers while every subshell is busy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.protocol import Message, error_content
from .registry import Subshells
from .subshell import Subshell

Content = dict[str, Any]


class KernelRequests:
    def __init__(
        self,
        subshells: Subshells,
        kernel_info: Callable[[], Content],
        shutdown: Callable[[bool, bool], None],
        publish: Callable[..., None],
        ports: dict[str, int],
    ):
        self._subshells = subshells
        self._ports = ports
        self._kernel_info = kernel_info
        self._shutdown = shutdown
        self._publish = publish

    def kernel_info(self, sub: Subshell | None, msg: Message) -> Content:
        return self._kernel_info()

    def connect(self, sub: Subshell | None, msg: Message) -> Content:
        """The ports the kernel listens on (``shell_port``, ``iopub_port``, ...)."""
        return {"status": "ok", **self._ports}

    def shutdown(self, sub: Subshell | None, msg: Message) -> Content:
        restart = bool(msg.content.get("restart", False))
        content = {"status": "ok", "restart": restart}
        # as ipykernel: a copy on iopub, so every frontend learns of it
        self._publish("shutdown_reply", content, msg.header)
        self._shutdown(restart, sub is None)
        return content

    def interrupt(self, sub: None, msg: Message) -> Content:
        """Kernel-level interrupt; our extension: ``content.subshell_id`` names one subshell."""
        if "subshell_id" not in msg.content:
            self._subshells.interrupt_all()
            return {"status": "ok"}
        target = self._subshells.get(msg.content["subshell_id"])
        if target is None:
            return _not_found(msg.content["subshell_id"])
        target.interrupt()
        return {"status": "ok"}

    def create_subshell(self, sub: None, msg: Message) -> Content:
        return {"status": "ok", "subshell_id": self._subshells.create()}

    def delete_subshell(self, sub: None, msg: Message) -> Content:
        subshell_id = msg.content.get("subshell_id")
        if not isinstance(subshell_id, str) or not self._subshells.delete(subshell_id):
            return _not_found(subshell_id)
        return {"status": "ok"}

    def list_subshell(self, sub: None, msg: Message) -> Content:
        return {"status": "ok", "subshell_id": self._subshells.ids()}

    def control_table(self) -> dict[str, Callable[[Subshell | None, Message], Content]]:
        return {
            "kernel_info_request": self.kernel_info,
            "connect_request": self.connect,
            "shutdown_request": self.shutdown,
            "interrupt_request": self.interrupt,
            "create_subshell_request": self.create_subshell,
            "delete_subshell_request": self.delete_subshell,
            "list_subshell_request": self.list_subshell,
        }

    def shell_table(self) -> dict[str, Callable]:
        """The ones that may also come on shell, as the coroutines a subshell awaits."""
        return {name: _as_coroutine(getattr(self, name.removesuffix("_request")))
                for name in ("kernel_info_request", "connect_request", "shutdown_request")}


def _as_coroutine(fn: Callable[[Subshell | None, Message], Content]):
    async def handle(sub: Subshell, msg: Message) -> Content:
        return fn(sub, msg)

    handle.__name__ = fn.__name__
    return handle


def _not_found(subshell_id: object) -> Content:
    return error_content("UnknownSubshellError", f"Unknown subshell_id {subshell_id!r}")
