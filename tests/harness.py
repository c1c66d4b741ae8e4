"""A frontend for tests: a real kernel process spoken to through jupyter_client.

``KernelHarness`` keeps every shell reply and iopub message it has read,
indexed by the request (parent ``msg_id``) it answers, so tests can have many
requests in flight on several subshells and still wait for exactly the reply
or the output they care about.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
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


def kernel_stacks(pid: int) -> str:
    """Every thread's Python stack in process ``pid`` (``py-spy dump``, from the test
    extras), for the message of a test that timed out waiting for the kernel: a hang
    that shows once in many runs is then diagnosed from the one run it showed in."""
    # beside this interpreter first: a venv's scripts need not be on PATH
    py_spy = shutil.which("py-spy", path=os.pathsep.join(
        (os.path.dirname(sys.executable), os.environ.get("PATH", ""))))
    if py_spy is None:
        return "(py-spy not found: the kernel's stacks were not dumped)"
    try:
        result = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"(py-spy dump failed: {e})"
    return result.stdout + result.stderr


class KernelHarness:
    """``eager_iopub``: a thread keeps reading iopub, as a real frontend does (a client
    that stops reading is, for the kernel, a frozen frontend: past its budget it misses
    output); False leaves iopub to the test."""

    def __init__(self, kernel_name: str = "subshell", eager_iopub: bool = True,
                 **start_kwargs: Any):
        self.km = KernelManager(kernel_name=kernel_name)
        self.km.start_kernel(**start_kwargs)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.session = self.kc.session
        self._replies: dict[str, dict] = {}
        self._iopub: dict[str, list[dict]] = defaultdict(list)
        self._stdin: list[dict] = []
        self._read_iopub: queue.SimpleQueue | None = None
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        if eager_iopub:
            self._read_iopub = queue.SimpleQueue()
            self._start_reader()

    def _start_reader(self) -> None:
        self._closing.clear()
        self._reader = threading.Thread(target=self._iopub_reader, args=(self.kc,),
                                        name="harness-iopub", daemon=True)
        self._reader.start()

    def _stop_reader(self) -> None:
        self._closing.set()
        if self._reader is not None:
            self._reader.join(5)

    def _iopub_reader(self, kc) -> None:
        channel = kc.iopub_channel
        while not self._closing.is_set():
            try:
                msg = channel.get_msg(timeout=0.1)
            except queue.Empty:
                continue
            self._read_iopub.put(msg)

    def replace_client(self, make_client) -> None:
        """Close this client's channels and go on with ``make_client()`` (a reconnect)."""
        self._stop_reader()
        self.kc.stop_channels()
        self.kc = make_client()
        self.kc.start_channels()
        self.session = self.kc.session
        if self._read_iopub is not None:
            self._start_reader()

    # -- lifetime -----------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def is_alive(self) -> bool:
        return self.km.is_alive()

    def stacks(self) -> str:
        """The kernel's threads' stacks now (``kernel_stacks``), or why there are none."""
        if not self.is_alive():
            return f"(the kernel process has exited: {self.km.provisioner.process.poll()})"
        return kernel_stacks(self.pid)

    def close(self) -> None:
        self._stop_reader()  # before the channels close: a socket is used by one thread
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
        channels = ("shell", "stdin") if self._read_iopub is not None else (
            "shell", "iopub", "stdin")
        for name in channels:
            chan = getattr(self.kc, f"{name}_channel")
            while True:
                try:
                    msg = chan.get_msg(timeout=0)
                except queue.Empty:
                    break
                got = True
                self._file(name, msg)
        if self._read_iopub is not None:
            while True:
                try:
                    msg = self._read_iopub.get_nowait()
                except queue.Empty:
                    break
                got = True
                self._file("iopub", msg)
        if not got:
            # block briefly on iopub (the busiest channel) rather than spinning
            try:
                if self._read_iopub is not None:
                    self._file("iopub", self._read_iopub.get(timeout=timeout))
                else:
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
                raise TimeoutError(f"no reply to {msg_id} within {timeout} s; "
                                   f"the kernel's threads:\n{self.stacks()}")
            self._pump(0.01)
        return self._replies[msg_id]

    def iopub(self, msg_id: str, timeout: float = 30) -> list[dict]:
        """All iopub messages of request ``msg_id``, up to and including its idle."""
        deadline = time.monotonic() + timeout
        while not any(_is_idle(m) for m in self._iopub[msg_id]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no idle for {msg_id} within {timeout} s; "
                                   f"the kernel's threads:\n{self.stacks()}")
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
