"""The gateway's side of the remote-launcher protocol, for tests that drive
``python -m subshell_kernel.launcher`` without a gateway server.

Written from the protocol as Enterprise Gateway and gateway_provisioners
speak it: an RSA key pair whose public half goes to the launcher as the
base64 DER body of its PEM form; a TCP response address that receives one
base64 JSON ``{"version": 1, "key", "conn_info"}`` per launch (the AES-128
key under RSA PKCS#1 v1.5, the connection info under AES-ECB with PKCS#7
padding); and the launcher's communication port, which takes one JSON
request per connection.  tests/test_gateways.py checks the same launcher
against the real servers.
"""

from __future__ import annotations

import base64
import json
import socket

import zmq
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class ResponseServer:
    """Listens on 127.0.0.1 (or ``host``) for launchers' connection info."""

    def __init__(self, host: str = "127.0.0.1"):
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        der = self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.address = f"{host}:{self.sock.getsockname()[1]}"

    def receive_raw(self, timeout: float = 30) -> bytes:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(timeout)
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
        return data

    def decode(self, data: bytes) -> dict:
        outer = json.loads(base64.b64decode(data))
        assert outer["version"] == 1, outer
        aes_key = self._private.decrypt(base64.b64decode(outer["key"]), padding.PKCS1v15())
        assert len(aes_key) == 16
        decryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).decryptor()
        padded = decryptor.update(base64.b64decode(outer["conn_info"])) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(128).unpadder()
        return json.loads(unpadder.update(padded) + unpadder.finalize())

    def receive(self, timeout: float = 30) -> dict:
        return self.decode(self.receive_raw(timeout))

    def close(self) -> None:
        self.sock.close()


def comm_request(host: str, port: int, body: bytes | dict, shut_write: bool = False) -> None:
    """One request to a launcher's communication port, as the gateways send it:
    connect, write, (for a shutdown, shut the write side), close."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)


def comm_port_open(host: str, port: int) -> bool:
    """Whether the communication port accepts: the gateways' liveness test."""
    try:
        comm_request(host, port, {"signum": 0})
        return True
    except ConnectionRefusedError:
        return False


def kernel_connection(info: dict, ip: str) -> dict:
    """The connection info a gateway hands jupyter_client: the launcher's reply
    without its process fields, at the address the gateway reached it on."""
    conn = {k: v for k, v in info.items() if k not in ("pid", "pgid", "comm_port", "kernel_id")}
    conn["ip"] = ip
    return conn


def answers(info: dict, ip: str, channel: str = "shell", timeout: float = 1.0,
            **overrides) -> bool:
    """Whether the kernel answers a client holding these keys (``info`` with
    ``overrides``; ``curve_publickey=None``: no CurveZMQ): a kernel_info_request
    on shell or control, a ping on the heartbeat.

    Raw zmq with send and receive timeouts: a client that fails the CurveZMQ
    handshake has no peer, and a send to no peer would block forever.
    """
    from jupyter_client.session import Session

    keys = {**info, **overrides}
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.REQ if channel == "hb" else zmq.DEALER)
        sock.linger = 0
        sock.sndtimeo = int(timeout * 1000)
        if keys.get("curve_publickey"):
            sock.curve_serverkey = keys["curve_publickey"].encode()
            sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        sock.connect(f"tcp://{ip}:{info[f'{channel}_port']}")
        try:
            if channel == "hb":
                sock.send(b"ping")
            else:
                session = Session(key=keys["key"].encode())
                session.send(sock, session.msg("kernel_info_request", {}))
        except zmq.Again:
            return False
        return bool(sock.poll(int(timeout * 1000)))
    finally:
        ctx.destroy(linger=0)
