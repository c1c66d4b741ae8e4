"""Security on the wire: encryption (CurveZMQ), binding, connection files."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time

import psutil
import pytest
import zmq
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CurveZMQ")
def test_curve_encrypted_kernel_answers_only_clients_with_the_keys():
    km = KernelManager(kernel_name="subshell", transport_encryption="required")
    km.start_kernel()
    try:
        info = km.get_connection_info()
        assert info.get("curve_publickey") and info.get("curve_secretkey")
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=30)
        reply = kc.execute_interactive("6 * 7", timeout=10)
        assert reply["content"]["status"] == "ok"
        kc.stop_channels()

        # a client that knows the HMAC key but not the Curve keys gets nothing, heartbeat included
        ctx = zmq.Context()
        try:
            for port, kind in (("shell_port", zmq.DEALER), ("control_port", zmq.DEALER)):
                sock = ctx.socket(kind)
                sock.linger = 0
                sock.connect(f"tcp://127.0.0.1:{info[port]}")
                session = Session(key=info["key"])
                session.send(sock, session.msg("kernel_info_request", {}))
                assert not sock.poll(1000), f"unencrypted client got an answer on {port}"
            hb = ctx.socket(zmq.REQ)
            hb.linger = 0
            hb.connect(f"tcp://127.0.0.1:{info['hb_port']}")
            hb.send(b"ping")
            assert not hb.poll(1000)
        finally:
            ctx.destroy(linger=0)
    finally:
        km.shutdown_kernel(now=True)


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the IPv4 TCP sockets process ``pid`` listens on."""
    return [(c.laddr.ip, c.laddr.port)
            for c in psutil.Process(pid).net_connections(kind="tcp4")
            if c.status == psutil.CONN_LISTEN]


def test_sockets_bind_only_to_the_connection_file_address(kernel):
    info = kernel.km.get_connection_info()
    ports = {info[f"{n}_port"] for n in ("shell", "iopub", "stdin", "control", "hb")}
    listening = _listening(kernel.pid)
    assert {port for _, port in listening} == ports
    assert {ip for ip, _ in listening} == {"127.0.0.1"}


def test_connection_file_written_by_the_kernel_is_private(tmp_path):
    path = tmp_path / "kernel-new.json"
    proc = subprocess.Popen([sys.executable, "-m", "subshell_kernel", "-f", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (path.exists() and path.stat().st_size):
            time.sleep(0.05)
        time.sleep(0.2)
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, oct(mode)
        info = json.loads(path.read_text())
        assert info["key"] and all(info[f"{n}_port"] for n in ("shell", "iopub", "hb"))
        assert info["ip"] == "127.0.0.1"
        proc.terminate()  # SIGTERM: a clean exit
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
