"""The remote kernel's connection info: ports in the gateway's range, the HMAC
key always, CurveZMQ keys when asked, written to a file only its owner reads.

Ports are chosen by binding them here: the five kernel ports are released just
before the kernel starts and binds them again (a window in which another
process could take one; the kernel then fails to start and the gateway sees it
die), while the communication port stays bound by the launcher for its whole
life, so it is never lost.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import tempfile

from .options import LaunchError

KERNEL_PORTS = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
#: ports tried at most in a range before giving up
MAX_CANDIDATES = 256


def reserve_ports(ip: str, port_range: tuple[int, int], count: int) -> list[socket.socket]:
    """``count`` TCP sockets bound to distinct ports of ``port_range`` on ``ip``
    (any free port for ``(0, 0)``), tried in random order as the gateways do."""
    lo, hi = port_range
    if (lo, hi) == (0, 0):
        candidates: list[int] = [0] * count
    else:
        candidates = random.sample(range(lo, hi + 1), min(hi - lo + 1, MAX_CANDIDATES))
    bound: list[socket.socket] = []
    try:
        for port in candidates:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((ip, port))
            except OSError:
                sock.close()
                continue
            bound.append(sock)
            if len(bound) == count:
                return bound
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    for sock in bound:
        sock.close()
    raise LaunchError(f"no {count} free ports in {lo}..{hi} on {ip}")


def curve_keys(policy: str) -> dict[str, str]:
    """A CurveZMQ key pair for the kernel's sockets when ``policy`` is auto or
    required; for auto without CurveZMQ in libzmq, none (the gateway then
    connects unencrypted, as its policy allows)."""
    if policy not in ("auto", "required"):
        return {}
    import zmq  # only when encryption is asked for

    if not zmq.has("curve"):
        if policy == "required":
            raise LaunchError("transport encryption is required but libzmq lacks CurveZMQ")
        return {}
    public, secret = zmq.curve_keypair()
    return {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}


def connection_info(ip: str, ports: list[int], curve: dict[str, str]) -> dict:
    """The connection file's content.  The HMAC key is always set: every message
    on every channel is signed, encrypted or not."""
    info = dict(zip(KERNEL_PORTS, ports))
    info.update(ip=ip, key=secrets.token_hex(32), transport="tcp",
                signature_scheme="hmac-sha256", kernel_name="")
    info.update(curve)
    return info


def write_private(kernel_id: str, info: dict) -> str:
    """Write ``info`` to a new file in the temporary directory, readable by its
    owner only (it holds the keys); returns its path."""
    fd, path = tempfile.mkstemp(prefix=f"kernel-{kernel_id}-", suffix=".json")
    with os.fdopen(fd, "w") as f:  # mkstemp creates it with mode 0600
        json.dump(info, f)
    return path
