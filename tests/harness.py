"""A frontend for tests: a real kernel process spoken to through jupyter_client.

``KernelHarness`` keeps every shell reply and iopub message it has read,
indexed by the request (parent ``msg_id``) it answers, so tests can have many
requests in flight on several subshells and still wait for exactly the reply
or the output they care about.
"""

from __future__ import annotations

import os
import queue
import time
from collections import defaultdict
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

#: set by .ci/run: a test that needs a part the machine lacks fails instead of skipping
STRICT = os.environ.get("SUBSHELL_KERNEL_STRICT") == "1"


def skip_unless_strict(reason: str, allow_module_level: bool = False) -> None:
    """Skip for a missing part of the machine (a browser, a display, a server), or,
    under SUBSHELL_KERNEL_STRICT=1 (CI), fail: CI must not go green without it."""
    if STRICT:
        pytest.fail(f"required in CI (SUBSHELL_KERNEL_STRICT=1): {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


class KernelHarness:
    def __init__(self, kernel_name: str = "subshell", **start_kwargs: Any):
        self.km = KernelManager(kernel_name=kernel_name)
        self.km.start_kernel(**start_kwargs)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.session = self.kc.session
        self._replies: dict[str, dict] = {}
        self._iopub: dict[str, list[dict]] = defaultdict(list)
        self._stdin: list[dict] = []

    # -- lifetime -----------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def is_alive(self) -> bool:
        return self.km.is_alive()

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.is_alive():
                self.km.shutdown_kernel(now=True)

    # -- sending --------------------------------------------------------------------------
    def send(
        self, msg_type: str, content: dict | None = None, subshell_id: str | None = None,
        channel: str = "shell",
    ) -> str:
        msg = self.session.msg(msg_type, content or {})
        if subshell_id is not None:
            msg["header"]["subshell_id"] = subshell_id
        getattr(self.kc, f"{channel}_channel").send(msg)
        return msg["header"]["msg_id"]

    def execute(self, code: str, subshell_id: str | None = None, **content: Any) -> str:
        body = {"code": code, "silent": False, "store_history": True, "allow_stdin": False}
        body.update(content)
        return self.send("execute_request", body, subshell_id)

    # -- receiving ------------------------------------------------------------------------
    def _pump(self, timeout: float) -> None:
        """Read whatever arrives within ``timeout`` on shell, iopub and stdin."""
        got = False
        for name in ("shell", "iopub", "stdin"):
            chan = getattr(self.kc, f"{name}_channel")
            while True:
                try:
                    msg = chan.get_msg(timeout=0)
                except queue.Empty:
                    break
                got = True
                self._file(name, msg)
        if not got:
            # block briefly on iopub (the busiest channel) rather than spinning
            try:
                self._file("iopub", self.kc.iopub_channel.get_msg(timeout=timeout))
            except queue.Empty:
                pass

    def _file(self, channel: str, msg: dict) -> None:
        parent_id = msg["parent_header"].get("msg_id", "")
        if channel == "shell":
            self._replies[parent_id] = msg
        elif channel == "iopub":
            self._iopub[parent_id].append(msg)
        else:
            self._stdin.append(msg)

    def reply(self, msg_id: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while msg_id not in self._replies:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to {msg_id} within {timeout} s")
            self._pump(0.01)
        return self._replies[msg_id]

    def iopub(self, msg_id: str, timeout: float = 30) -> list[dict]:
        """All iopub messages of request ``msg_id``, up to and including its idle."""
        deadline = time.monotonic() + timeout
        while not any(_is_idle(m) for m in self._iopub[msg_id]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no idle for {msg_id} within {timeout} s")
            self._pump(0.01)
        return self._iopub[msg_id]

    def stdin_request(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while not self._stdin:
            if time.monotonic() > deadline:
                raise TimeoutError("no input_request")
            self._pump(0.01)
        return self._stdin.pop(0)

    def input_reply(self, request: dict, value: str) -> None:
        msg = self.session.msg("input_reply", {"value": value}, parent=request)
        self.kc.stdin_channel.send(msg)

    def run(self, code: str, subshell_id: str | None = None, timeout: float = 30, **content):
        """Execute and wait for reply and idle; returns (reply, iopub messages)."""
        msg_id = self.execute(code, subshell_id, **content)
        reply = self.reply(msg_id, timeout)
        return reply, self.iopub(msg_id, timeout)

    def stdout(self, msg_id: str, name: str = "stdout") -> str:
        return "".join(
            m["content"]["text"] for m in self._iopub[msg_id]
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    # -- control ---------------------------------------------------------------------------
    def control(self, msg_type: str, content: dict | None = None, timeout: float = 10) -> dict:
        msg = self.session.msg(msg_type, content or {})
        self.kc.control_channel.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {msg_type} reply")
            try:
                reply = self.kc.control_channel.get_msg(timeout=remaining)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                return reply

    def create_subshell(self) -> str:
        reply = self.control("create_subshell_request")
        assert reply["content"]["status"] == "ok", reply["content"]
        return reply["content"]["subshell_id"]

    def delete_subshell(self, subshell_id: str) -> dict:
        return self.control("delete_subshell_request", {"subshell_id": subshell_id})["content"]

    def list_subshells(self) -> list[str]:
        return self.control("list_subshell_request")["content"]["subshell_id"]

    # -- process ----------------------------------------------------------------------------
    def proc_status(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def stable_threads(self, tries: int = 30) -> int:
        """The thread count once it stops changing (threads end asynchronously)."""
        last = self.threads()
        for _ in range(tries):
            time.sleep(0.1)
            now = self.threads()
            if now == last:
                return now
            last = now
        return last


def _is_idle(msg: dict) -> bool:
    return msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
