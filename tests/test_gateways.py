"""The kernel behind Jupyter's gateways, end to end.

- **Kernel Gateway** runs the kernel; a jupyter_server started with
  ``--gateway-url`` relays to it, and the tests speak to that jupyter_server
  as JupyterLab does (REST and the kernel websocket): cells, a subshell that
  answers while the parent is busy, a second websocket as a subshell
  console, widget comm echoes on a subshell.
- **gateway_provisioners' distributed (SSH) provisioner**, inside a plain
  jupyter_server, launches the kernel through ``python -m
  subshell_kernel.launcher`` on a second host: a network namespace with its
  own address and an sshd (tests/remote_host.py).  Through the server:
  execute, interrupt, a subshell while the parent sleeps, restart, shutdown,
  and no process left behind; CurveZMQ and HMAC on the remote kernel's
  sockets, checked from outside; a kernel killed outright is restarted.
- **Enterprise Gateway 3.3** with its ``DistributedProcessProxy`` does the
  same on the same host, with the launcher's ``--RemoteProcessProxy.*``
  spelling: execute, a subshell, interrupt, delete.

Kernel Gateway and gateway_provisioners are installed with the test extras
(they sit beside jupyter_server 2 and jupyter_client 8 unchanged).
Enterprise Gateway 3.3 needs an older stack (jupyter_client < 7,
jupyter_server < 2, pyzmq < 25): it runs from a venv that the fixture makes
from PyPI once and keeps in ``.cache/`` (about a minute the first time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import zmq

from subshell_kernel.launcher.kernelspecs import distributed_spec

from .gateway_protocol import answers
from .harness import skip_unless_strict
from .jupyter_servers import (
    Server,
    WsClient,
    free_port,
    jupyter_server_argv,
    kernel_gateway_argv,
    stdout,
)
from .remote_host import RemoteHost, missing_parts

for _module in ("kernel_gateway", "gateway_provisioners", "cryptography"):
    try:
        __import__(_module)
    except ImportError:
        skip_unless_strict(f"{_module} is not installed (pip install -e '.[test]')",
                           allow_module_level=True)


def ok(reply: dict) -> dict:
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]


def result(msgs: list[dict]):
    (res,) = [m for m in msgs if m["msg_type"] == "execute_result"]
    return res["content"]["data"]["text/plain"]


def started(ws: WsClient, msg_id: str, timeout: float = 30) -> None:
    """Wait until the request's code runs (its execute_input is out)."""
    ws.until(lambda m: m["msg_type"] == "execute_input"
             and m["parent_header"].get("msg_id") == msg_id, timeout)


def replied(ws: WsClient, msg_id: str) -> bool:
    return any(m["channel"] == "shell" and m["parent_header"].get("msg_id") == msg_id
               for m in ws.seen)


def subshell_while_parent_busy(ws: WsClient, seconds: float = 3) -> None:
    """A cell on a new subshell is answered while the parent sleeps ``seconds``."""
    sid = ok(ws.control("create_subshell_request"))["subshell_id"]
    busy = ws.submit(f"import time\ntime.sleep({seconds})")
    started(ws, busy)
    t0 = time.monotonic()
    reply, msgs = ws.execute("import threading\nprint(threading.current_thread().name)", sid)
    elapsed = time.monotonic() - t0
    assert ok(reply)["execution_count"] == 1  # JEP 91: the subshell counts its own
    assert stdout(msgs).startswith("subshell-"), stdout(msgs)
    assert reply["parent_header"]["subshell_id"] == sid
    assert all(m["parent_header"].get("subshell_id") == sid for m in msgs)
    assert not replied(ws, busy), f"the subshell waited for the parent ({elapsed:.1f} s)"
    assert elapsed < seconds - 0.5
    assert ok(ws.reply(busy, timeout=seconds + 30))
    assert ok(ws.control("list_subshell_request"))["subshell_id"] == [sid]
    ok(ws.control("delete_subshell_request", {"subshell_id": sid}))
    assert ok(ws.control("list_subshell_request"))["subshell_id"] == []


# -- Kernel Gateway, and a jupyter_server with --gateway-url ----------------------------------
@pytest.fixture(scope="module")
def kernel_gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kernel-gateway")
    gateway = Server(tmp, kernel_gateway_argv, name="kernel-gateway")
    try:
        frontend = Server(tmp, jupyter_server_argv, name="gateway-client", extra=(
            f"--gateway-url={gateway.base}", f"--GatewayClient.auth_token={gateway.token}",
            "--GatewayClient.request_timeout=60"))
    except BaseException:
        gateway.close()
        raise
    yield gateway, frontend
    frontend.close()  # the client first: it holds websockets to the gateway
    gateway.close()


@pytest.fixture(scope="module")
def gateway_kernel(kernel_gateway):
    """A kernel in Kernel Gateway, started through the jupyter_server in front."""
    gateway, frontend = kernel_gateway
    kid = frontend.start_kernel("subshell")
    yield gateway, frontend, kid
    frontend.request("DELETE", f"/api/kernels/{kid}")


def test_kernel_gateway_runs_the_kernel_behind_a_jupyter_server(gateway_kernel):
    gateway, frontend, kid = gateway_kernel
    # the kernel lives in the gateway: it lists it under the same id
    _, listed = gateway.request("GET", "/api/kernels")
    assert kid in [k["id"] for k in listed]
    _, specs = frontend.request("GET", "/api/kernelspecs")
    assert specs["kernelspecs"]["subshell"]["spec"]["argv"][1:3] == ["-m", "subshell_kernel"]
    ws = WsClient(frontend, kid)
    try:
        info = ok(ws.reply(ws.send("shell", "kernel_info_request", {})))
        assert "kernel subshells" in info["supported_features"], info
        reply, msgs = ws.execute("import os\nprint('pid', os.getpid())\n6 * 7")
        ok(reply)
        assert result(msgs) == "42"
        assert stdout(msgs).startswith("pid ")
        subshell_while_parent_busy(ws)
    finally:
        ws.close()


def test_subshell_console_beside_a_busy_notebook_through_the_gateway(gateway_kernel):
    """JupyterLab's subshell console: a second websocket whose requests all name
    one subshell, answered while the notebook's cell runs."""
    _, frontend, kid = gateway_kernel
    notebook, console = WsClient(frontend, kid), WsClient(frontend, kid)
    try:
        sid = ok(console.control("create_subshell_request"))["subshell_id"]
        busy = notebook.submit("import time\ntime.sleep(4)\n'notebook done'")
        started(notebook, busy)
        t0 = time.monotonic()
        for n in (1, 2):
            reply, msgs = console.execute(f"console_value = {n} * 10\nconsole_value", sid)
            assert ok(reply)["execution_count"] == n
            assert result(msgs) == str(n * 10)
        assert time.monotonic() - t0 < 3.5 and not replied(notebook, busy)
        reply, msgs = notebook.reply(busy, timeout=30), notebook.iopub(busy)
        assert result(msgs) == "'notebook done'"
        # one namespace: the notebook sees what the console defined
        reply, msgs = notebook.execute("console_value")
        assert result(msgs) == "20"
        ok(console.control("delete_subshell_request", {"subshell_id": sid}))
    finally:
        console.close()
        notebook.close()


def test_widget_comm_echoes_on_a_subshell_through_the_gateway(gateway_kernel):
    _, frontend, kid = gateway_kernel
    ws = WsClient(frontend, kid)
    try:
        reply, msgs = ws.execute("import ipywidgets\nw = ipywidgets.IntSlider()\ndisplay(w)",
                                 timeout=60)
        ok(reply)
        (opened,) = [m for m in msgs if m["msg_type"] == "comm_open"
                     and m["content"]["data"]["state"].get("_model_name") == "IntSliderModel"]
        comm_id = opened["content"]["comm_id"]
        sid = ok(ws.control("create_subshell_request"))["subshell_id"]
        busy = ws.submit("import time\ntime.sleep(4)")
        started(ws, busy)
        t0 = time.monotonic()
        for value in (5, 8):
            msg_id = ws.send("shell", "comm_msg", {"comm_id": comm_id, "data": {
                "method": "update", "state": {"value": value}, "buffer_paths": []}}, sid)
            echoes = [m for m in ws.iopub(msg_id) if m["msg_type"] == "comm_msg"]
            assert echoes, "no echo"
            data = echoes[0]["content"]["data"]
            assert data["method"] == "echo_update" and data["state"] == {"value": value}
            assert echoes[0]["parent_header"]["subshell_id"] == sid
        assert time.monotonic() - t0 < 3.5 and not replied(ws, busy)
        ok(ws.reply(busy, timeout=30))
        reply, msgs = ws.execute("w.value")
        assert result(msgs) == "8"
        ok(ws.control("delete_subshell_request", {"subshell_id": sid}))
    finally:
        ws.close()


# -- gateway_provisioners: the distributed (SSH) provisioner on a second host -------------------
PORT_RANGE = (42000, 43999)


@pytest.fixture(scope="module")
def remote_host(tmp_path_factory):
    reason = missing_parts()
    if reason:
        skip_unless_strict(f"no second host for the SSH provisioner tests: {reason}")
    host = RemoteHost(tmp_path_factory.mktemp("netns"))
    yield host
    host.close()


@pytest.fixture(scope="module")
def provisioner_server(remote_host, tmp_path_factory):
    """jupyter_server with gateway_provisioners' DistributedProvisioner, kernelspecs
    ``subshell-ssh`` (CurveZMQ when the server asks) and ``subshell-ssh-plain``
    (without), launching the kernel on the remote host; encryption policy auto."""
    tmp = tmp_path_factory.mktemp("provisioners")
    remote_env = {"IPYTHONDIR": str(tmp / "remote-ipython"),
                  "JUPYTER_RUNTIME_DIR": str(tmp / "remote-runtime")}
    for name, curve in (("subshell-ssh", True), ("subshell-ssh-plain", False)):
        spec = distributed_spec("provisioners", [remote_host.ip], python=sys.executable,
                                display_name=name)
        if not curve:
            del spec["metadata"]["supported_encryption"]
        spec["env"] = remote_env
        (tmp / "jupyter" / "kernels" / name).mkdir(parents=True)
        (tmp / "jupyter" / "kernels" / name / "kernel.json").write_text(json.dumps(spec))
    env = {
        "HOME": str(remote_host.home),  # paramiko: the key and the known host key
        "JUPYTER_PATH": str(tmp / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "GP_RESPONSE_IP": remote_host.host_ip,  # the one address the namespace reaches
        "GP_RESPONSE_PORT": str(free_port(remote_host.host_ip)),
        "GP_REMOTE_USER": "root",
        "GP_UNAUTHORIZED_USERS": "nobody-at-all",  # the default, "root", forbids us
        "GP_PORT_RANGE": f"{PORT_RANGE[0]}..{PORT_RANGE[1]}",
        "GP_KERNEL_LOG_DIR": str(tmp),
    }
    server = Server(tmp, jupyter_server_argv, name="provisioners", env=env, extra=(
        "--ServerKernelManager.transport_encryption=auto",))
    server.tmp = tmp
    yield server
    server.close()


def remote_logs(server: Server) -> str:
    logs = sorted(server.tmp.glob("kernel-*.log"))
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)


def whereabouts(ws: WsClient, timeout: float = 30) -> dict:
    """Where the kernel runs, as the kernel sees it."""
    reply, msgs = ws.execute(
        "import os, sys, json\n"
        "print(json.dumps({'pid': os.getpid(), 'ppid': os.getppid(),\n"
        "  'netns': os.readlink('/proc/self/ns/net'),\n"
        "  'connection_file': sys.argv[sys.argv.index('-f') + 1]}))", timeout=timeout)
    ok(reply)
    return json.loads(stdout(msgs))


@pytest.fixture(scope="module")
def remote_kernel(provisioner_server, remote_host):
    try:
        kid = provisioner_server.start_kernel("subshell-ssh", timeout=90)
    except Exception:
        pytest.fail(f"launch failed:\n{provisioner_server.output()[-4000:]}\n"
                    f"{remote_logs(provisioner_server)}")
    ws = WsClient(provisioner_server, kid)
    yield kid, ws
    ws.close()
    if kid in [k["id"] for k in provisioner_server.request("GET", "/api/kernels")[1]]:
        provisioner_server.request("DELETE", f"/api/kernels/{kid}")


def test_ssh_provisioner_runs_the_kernel_on_the_remote_host(remote_kernel, remote_host):
    kid, ws = remote_kernel
    where = whereabouts(ws)
    assert where["netns"] != os.readlink("/proc/self/ns/net")
    assert {where["pid"], where["ppid"]} <= remote_host.kernel_pids()
    reply, msgs = ws.execute("import socket\nsocket.gethostbyname(socket.gethostname()) and 6 * 7")
    assert result(msgs) == "42"
    info = ok(ws.reply(ws.send("control", "kernel_info_request", {}), "control"))
    assert "kernel subshells" in info["supported_features"]


def test_ssh_provisioner_subshell_while_the_parent_sleeps(remote_kernel):
    _, ws = remote_kernel
    subshell_while_parent_busy(ws)


def test_ssh_provisioner_interrupt_through_the_communication_port(remote_kernel,
                                                                  provisioner_server):
    kid, ws = remote_kernel
    busy = ws.submit("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    started(ws, busy)
    t0 = time.monotonic()
    status, _ = provisioner_server.request("POST", f"/api/kernels/{kid}/interrupt")
    assert status == 204
    reply = ws.reply(busy, timeout=30)
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    assert time.monotonic() - t0 < 10
    assert "SIGINT" in remote_logs(provisioner_server)  # it went through the launcher
    reply, msgs = ws.execute("'still here'")
    assert result(msgs) == "'still here'"


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CurveZMQ")
def test_ssh_provisioner_kernel_requires_curve_keys_and_hmac(remote_kernel, remote_host):
    _, ws = remote_kernel
    info = json.loads(Path(whereabouts(ws)["connection_file"]).read_text())
    assert info["curve_publickey"] and info["curve_secretkey"] and info["key"]
    ports = [info[f"{n}_port"] for n in ("shell", "iopub", "stdin", "hb", "control")]
    assert all(PORT_RANGE[0] <= p <= PORT_RANGE[1] for p in ports), ports
    ip = remote_host.ip
    for channel in ("shell", "control", "hb"):
        assert answers(info, ip, channel, timeout=10)  # the keys the gateway got: an answer
        assert not answers(info, ip, channel, curve_publickey=None)  # no CurveZMQ: nothing
    for channel in ("shell", "control"):  # CurveZMQ but a wrong HMAC key: nothing
        assert not answers(info, ip, channel, key=uuid.uuid4().hex)
    reply, _ = ws.execute("'alive'")
    ok(reply)


def test_ssh_provisioner_unencrypted_kernel_still_requires_hmac(provisioner_server,
                                                                remote_host):
    kid = provisioner_server.start_kernel("subshell-ssh-plain", timeout=90)
    ws = WsClient(provisioner_server, kid)
    try:
        info = json.loads(Path(whereabouts(ws)["connection_file"]).read_text())
        assert "curve_secretkey" not in info
        assert answers(info, remote_host.ip, timeout=10)
        assert not answers(info, remote_host.ip, key=uuid.uuid4().hex)
    finally:
        ws.close()
        provisioner_server.request("DELETE", f"/api/kernels/{kid}")


def test_ssh_provisioner_restarts_a_kernel_that_died(remote_kernel, provisioner_server,
                                                     remote_host):
    """The launcher closes its communication port when the kernel dies, so the
    server's poll finds it dead and its restarter starts a new one."""
    kid, ws = remote_kernel
    dead = whereabouts(ws)
    os.kill(dead["pid"], signal.SIGKILL)
    assert _gone({dead["pid"], dead["ppid"]}, remote_host)
    deadline = time.monotonic() + 60
    now = None
    while now is None and time.monotonic() < deadline:
        fresh = WsClient(provisioner_server, kid)
        try:
            now = whereabouts(fresh, timeout=5)
        except (TimeoutError, OSError):
            pass
        finally:
            fresh.close()
    assert now, f"no new kernel:\n{provisioner_server.output()[-3000:]}"
    assert now["pid"] != dead["pid"] and now["pid"] in remote_host.kernel_pids()


def _gone(pids: set[int], remote_host: RemoteHost, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids & remote_host.kernel_pids():
            return True
        time.sleep(0.2)
    return False


def test_ssh_provisioner_restart_and_shutdown_leave_no_process(remote_kernel,
                                                               provisioner_server, remote_host):
    kid, _ = remote_kernel
    ws = WsClient(provisioner_server, kid)
    before = whereabouts(ws)
    status, _ = provisioner_server.request("POST", f"/api/kernels/{kid}/restart", timeout=90)
    assert status == 200
    ws.close()
    # JupyterLab reconnects with its session id; the new kernel has new ports and keys
    ws = WsClient(provisioner_server, kid, session=ws.session)
    try:
        after = whereabouts(ws)
        assert after["pid"] != before["pid"]
        assert {after["pid"], after["ppid"]} <= remote_host.kernel_pids()
        assert _gone({before["pid"], before["ppid"]}, remote_host), "the old kernel lingers"
        assert not os.path.exists(before["connection_file"])
        subshell_while_parent_busy(ws, seconds=2)
    finally:
        ws.close()
    t0 = time.monotonic()
    status, _ = provisioner_server.request("DELETE", f"/api/kernels/{kid}", timeout=60)
    assert status == 204
    assert _gone({after["pid"], after["ppid"]}, remote_host), remote_host.kernel_pids()
    assert time.monotonic() - t0 < 15
    assert not os.path.exists(after["connection_file"])
    # every launch's SSH session, launcher and kernel has ended
    assert _gone(remote_host.kernel_pids(), remote_host, timeout=10), remote_host.kernel_pids()


# -- Enterprise Gateway 3.3 (in a venv of its own) ----------------------------------------------
ENTERPRISE_GATEWAY = "jupyter_enterprise_gateway==3.3.0"
VENV_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "enterprise-gateway-3.3.0"


def enterprise_gateway_venv() -> Path:
    """A venv with Enterprise Gateway, made once from PyPI and kept in .cache/
    (gitignored): EG 3.3 pins jupyter_client < 7, jupyter_server < 2 and
    pyzmq < 25, which cannot sit beside this kernel's stack.  The kernel on
    the remote host still runs from this checkout's venv; only the server
    runs from this one."""
    import fcntl

    ready = VENV_CACHE / "ready"
    VENV_CACHE.parent.mkdir(exist_ok=True)
    with open(VENV_CACHE.parent / "enterprise-gateway.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time
        if not ready.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV_CACHE)],
                           check=True, capture_output=True, timeout=120)
            pip = subprocess.run(
                [str(VENV_CACHE / "bin" / "python"), "-m", "pip", "install", "-q",
                 "--disable-pip-version-check", ENTERPRISE_GATEWAY],
                capture_output=True, text=True, timeout=600)
            if pip.returncode != 0:
                skip_unless_strict(f"cannot install {ENTERPRISE_GATEWAY}: {pip.stderr[-2000:]}")
            ready.write_text(ENTERPRISE_GATEWAY)
    return VENV_CACHE


@pytest.fixture(scope="module")
def enterprise_gateway(remote_host, tmp_path_factory):
    venv = enterprise_gateway_venv()
    tmp = tmp_path_factory.mktemp("enterprise-gateway")
    spec = distributed_spec("enterprise", [remote_host.ip], python=sys.executable,
                            display_name="subshell on the remote host (EG)")
    spec["env"] = {"IPYTHONDIR": str(tmp / "remote-ipython")}
    (tmp / "jupyter" / "kernels" / "subshell-eg").mkdir(parents=True)
    (tmp / "jupyter" / "kernels" / "subshell-eg" / "kernel.json").write_text(json.dumps(spec))

    def argv(port, token, root):
        return [str(venv / "bin" / "jupyter-enterprisegateway"), "--ip=127.0.0.1",
                f"--port={port}", "--port_retries=0",
                f"--EnterpriseGatewayApp.auth_token={token}"]

    env = {
        "HOME": str(remote_host.home), "JUPYTER_PATH": str(tmp / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "EG_RESPONSE_IP": remote_host.host_ip,
        "EG_RESPONSE_PORT": str(free_port(remote_host.host_ip)),
        "EG_REMOTE_USER": "root", "EG_UNAUTHORIZED_USERS": "nobody-at-all",
        "EG_PORT_RANGE": f"{PORT_RANGE[0]}..{PORT_RANGE[1]}", "EG_KERNEL_LOG_DIR": str(tmp),
    }
    server = Server(tmp, argv, name="enterprise-gateway", env=env)
    server.tmp = tmp
    yield server
    server.close()


def test_enterprise_gateway_runs_the_kernel_on_the_remote_host(enterprise_gateway, remote_host):
    gateway = enterprise_gateway
    try:
        kid = gateway.start_kernel("subshell-eg", timeout=90)
    except Exception:
        pytest.fail(f"launch failed:\n{gateway.output()[-4000:]}\n{remote_logs(gateway)}")
    ws = WsClient(gateway, kid)
    try:
        where = whereabouts(ws)
        assert where["netns"] != os.readlink("/proc/self/ns/net")
        assert {where["pid"], where["ppid"]} <= remote_host.kernel_pids()
        subshell_while_parent_busy(ws, seconds=2)
        busy = ws.submit("import time\ntime.sleep(60)")
        started(ws, busy)
        status, _ = gateway.request("POST", f"/api/kernels/{kid}/interrupt")
        assert status == 204
        assert ws.reply(busy, timeout=30)["content"]["ename"] == "KeyboardInterrupt"
    finally:
        ws.close()
    status, _ = gateway.request("DELETE", f"/api/kernels/{kid}", timeout=60)
    assert status == 204
    assert _gone({where["pid"], where["ppid"]}, remote_host), remote_host.kernel_pids()
    assert not os.path.exists(where["connection_file"])
