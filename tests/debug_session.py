"""A debugger frontend for tests: DAP requests as ``debug_request`` on control, events
from iopub's ``debug_event``, through a ``KernelHarness``."""

from __future__ import annotations

import time
from typing import Any

from .harness import KernelHarness

INITIALIZE = {
    "clientID": "tests", "clientName": "tests", "adapterID": "", "pathFormat": "path",
    "linesStartAt1": True, "columnsStartAt1": True, "supportsVariableType": True,
    "supportsVariablePaging": True, "locale": "en",
}


class DebugSession:
    def __init__(self, kernel: KernelHarness):
        self.k = kernel
        self.seq = 0
        self._seen: set[str] = set()

    def request(self, command: str, arguments: dict | None = None, timeout: float = 20) -> dict:
        """The DAP response (the ``debug_reply`` content) to one request."""
        self.seq += 1
        content = {"type": "request", "seq": self.seq, "command": command,
                   "arguments": arguments or {}}
        reply = self.k.control("debug_request", content, timeout=timeout)
        assert reply["msg_type"] == "debug_reply", reply
        return reply["content"]

    def ok(self, command: str, arguments: dict | None = None, **kw) -> dict:
        response = self.request(command, arguments, **kw)
        assert response["success"], response
        assert response["request_seq"] == self.seq, response
        return response.get("body", {})

    def start(self) -> None:
        self.ok("initialize", INITIALIZE)
        self.ok("attach")

    def stop(self) -> None:
        self.ok("disconnect", {"restart": False, "terminateDebuggee": True})

    def breakpoint(self, code: str, *lines: int) -> str:
        """Dump a cell and set breakpoints in it, as JupyterLab's gutter click does."""
        path = self.ok("dumpCell", {"code": code})["sourcePath"]
        body = self.ok("setBreakpoints", {"breakpoints": [{"line": n} for n in lines],
                                          "source": {"path": path}, "sourceModified": False})
        assert [b["verified"] for b in body["breakpoints"]] == [True] * len(lines), body
        return path

    # -- events --------------------------------------------------------------------------
    def events(self) -> list[dict]:
        """Every debug_event not returned before, in the order the kernel sent them."""
        self.k._pump(0.01)
        new = [m for msgs in list(self.k._iopub.values()) for m in msgs
               if m["msg_type"] == "debug_event" and m["header"]["msg_id"] not in self._seen]
        new.sort(key=lambda m: m["header"]["date"])
        self._seen.update(m["header"]["msg_id"] for m in new)
        return [m["content"] for m in new]

    def wait_event(self, name: str, timeout: float = 20, **body: Any) -> dict:
        """The next ``name`` event whose body has these items (events before it are consumed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event["event"] == name and all(
                        event.get("body", {}).get(k) == v for k, v in body.items()):
                    return event
        raise TimeoutError(f"no {name} event {body or ''} within {timeout} s")

    def stopped_threads(self) -> list[int]:
        return self.ok("debugInfo")["stoppedThreads"]

    def frames(self, thread_id: int) -> list[dict]:
        return self.ok("stackTrace", {"threadId": thread_id})["stackFrames"]

    def local_variables(self, frame_id: int) -> dict[str, dict]:
        scopes = self.ok("scopes", {"frameId": frame_id})["scopes"]
        ref = next(s["variablesReference"] for s in scopes if s["name"] == "Locals")
        return {v["name"]: v for v in self.ok("variables", {"variablesReference": ref})
                ["variables"]}

    def thread_names(self) -> dict[int, str]:
        return {t["id"]: t["name"] for t in self.ok("threads")["threads"]}
