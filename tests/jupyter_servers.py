"""Jupyter's servers as a frontend meets them: a server process (jupyter_server,
Kernel Gateway, a jupyter_server pointed at a gateway), its REST API, and the
kernel websocket in the legacy JSON protocol, as JupyterLab speaks it.

Used by tests/test_ecosystem.py (jupyter_server) and tests/test_gateways.py
(Kernel Gateway, gateway_provisioners).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def jupyter_server_argv(port: int, token: str, root: Path) -> list[str]:
    return [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}"]


def kernel_gateway_argv(port: int, token: str, root: Path) -> list[str]:
    return [sys.executable, "-m", "kernel_gateway", "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={port}", "--KernelGatewayApp.port_retries=0",
            f"--KernelGatewayApp.auth_token={token}",
            "--JupyterWebsocketPersonality.list_kernels=True"]


class Server:
    """A server process on 127.0.0.1, its log in ``tmp/<name>.log``.

    ``argv`` builds the command from (port, token, root); ``extra`` options are
    appended; ``env`` is added to this process's environment (which holds the
    conftest's JUPYTER_PATH).
    """

    def __init__(self, tmp: Path, argv=jupyter_server_argv, extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, name: str = "server",
                 startup_timeout: float = 60):
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.base = f"http://127.0.0.1:{self.port}"
        self.name = name
        root = tmp / f"{name}-root"
        root.mkdir()
        full_env = dict(os.environ)
        full_env["JUPYTER_CONFIG_DIR"] = str(tmp / f"{name}-config")
        full_env["JUPYTER_DATA_DIR"] = str(tmp / f"{name}-data")
        full_env.update(env or {})
        self.log_path = tmp / f"{name}.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [*argv(self.port, self.token, root), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=root,
        )
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                self.request("GET", "/api/kernelspecs")
                break
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"{name} did not start:\n{self.output()}") from e
                time.sleep(0.1)

    def output(self) -> str:
        return self.log_path.read_text()

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)

    def start_kernel(self, name: str, timeout: float = 60) -> str:
        status, model = self.request("POST", "/api/kernels", {"name": name}, timeout=timeout)
        assert status == 201, model
        return model["id"]

    def close(self) -> None:
        """Stop the server: /api/shutdown where it has one, else SIGTERM; both
        shut its kernels down first."""
        if self.proc.poll() is None:
            try:
                self.request("POST", "/api/shutdown", timeout=10)
                self.proc.wait(timeout=20)
            except Exception:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.log.close()


class WsClient:
    """The legacy JSON websocket protocol of jupyter_server, as JupyterLab speaks it.

    Every message read is kept in ``seen``, so a test can wait for one reply
    while others (another subshell's, a busy parent's) arrive in between.
    """

    def __init__(self, server: Server, kernel_id: str, username: str = "eco-test",
                 session: str | None = None):
        websocket = pytest.importorskip("websocket")
        self.session = session or uuid.uuid4().hex  # the same again: a reconnect
        self.username = username
        url = (f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
               f"?session_id={self.session}")
        self.ws = websocket.create_connection(
            url, timeout=30, header=[f"Authorization: token {server.token}"]
        )
        self.seen: list[dict] = []

    def send(self, channel: str, msg_type: str, content: dict, subshell_id: str | None = None):
        header = {
            "msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": self.session,
            "username": self.username, "version": "5.5",
            "date": datetime.now(timezone.utc).isoformat(),
        }
        if subshell_id is not None:
            header["subshell_id"] = subshell_id
        self.ws.send(json.dumps({
            "channel": channel, "header": header, "parent_header": {}, "metadata": {},
            "content": content, "buffers": [],
        }))
        return header["msg_id"]

    def until(self, predicate, timeout: float = 30) -> dict:
        for msg in self.seen:
            if predicate(msg):
                return msg
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            raw = self.ws.recv()
            if isinstance(raw, bytes):  # a binary frame: only with buffers, not expected
                continue
            msg = json.loads(raw)
            self.seen.append(msg)
            if predicate(msg):
                return msg
        raise TimeoutError("message not received over the websocket")

    def reply(self, msg_id: str, channel: str = "shell", timeout: float = 30) -> dict:
        return self.until(lambda m: m["channel"] == channel
                          and m["parent_header"].get("msg_id") == msg_id, timeout)

    def iopub(self, msg_id: str, timeout: float = 30) -> list[dict]:
        self.until(lambda m: m["channel"] == "iopub" and m["msg_type"] == "status"
                   and m["parent_header"].get("msg_id") == msg_id
                   and m["content"]["execution_state"] == "idle", timeout)
        return [m for m in self.seen
                if m["channel"] == "iopub" and m["parent_header"].get("msg_id") == msg_id]

    def submit(self, code: str, subshell_id: str | None = None) -> str:
        return self.send("shell", "execute_request",
                         {"code": code, "silent": False, "store_history": True,
                          "user_expressions": {}, "allow_stdin": False,
                          "stop_on_error": True}, subshell_id)

    def execute(self, code: str, subshell_id: str | None = None, timeout: float = 30):
        msg_id = self.submit(code, subshell_id)
        reply = self.reply(msg_id, timeout=timeout)
        return reply, self.iopub(msg_id, timeout)

    def control(self, msg_type: str, content: dict | None = None, timeout: float = 30) -> dict:
        return self.reply(self.send("control", msg_type, content or {}), "control", timeout)

    def close(self) -> None:
        self.ws.close()


def stdout(msgs: list[dict]) -> str:
    return "".join(m["content"]["text"] for m in msgs
                   if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
