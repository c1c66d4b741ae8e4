"""Sending the connection info to the gateway's response address.

The wire format is the gateways' (payload version 1): the connection info as
JSON, padded (PKCS#7) and encrypted with a fresh AES-128 key (in ECB mode,
which is what their servers decrypt); that key encrypted with the server's
RSA public key (PKCS#1 v1.5); both base64-encoded into a JSON object
``{"version": 1, "key": ..., "conn_info": ...}``, which is itself
base64-encoded and written on one TCP connection that is then closed (the
server reads to the end of the stream).

The server's public key comes on the command line as the base64 body of its
PEM form (DER SubjectPublicKeyInfo).  The crypto library is ``cryptography``,
an optional dependency (``pip install 'subshell_kernel[gateway]'``) imported
here only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket

from .options import LaunchError

PAYLOAD_VERSION = 1
SEND_TIMEOUT = 30.0


class Sealer:
    """Encrypts payloads for one gateway; made before the kernel starts, so a
    missing library or a bad public key fails the launch at once."""

    def __init__(self, public_key_b64: str):
        try:
            from cryptography.hazmat.primitives.serialization import load_der_public_key
        except ImportError:
            raise LaunchError(
                "the launcher needs the 'cryptography' package to answer the gateway: "
                "pip install 'subshell_kernel[gateway]'") from None
        try:
            self._public_key = load_der_public_key(base64.b64decode(public_key_b64))
        except (ValueError, binascii.Error) as e:
            raise LaunchError(f"--public-key is not a base64 DER RSA public key: {e}") from None

    def seal(self, info: dict) -> bytes:
        from cryptography.hazmat.primitives import padding as sym_padding
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        aes_key = os.urandom(16)
        padder = sym_padding.PKCS7(128).padder()
        plain = padder.update(json.dumps(info).encode()) + padder.finalize()
        encryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()
        conn_info = encryptor.update(plain) + encryptor.finalize()
        key = self._public_key.encrypt(aes_key, padding.PKCS1v15())
        outer = {"version": PAYLOAD_VERSION, "key": base64.b64encode(key).decode(),
                 "conn_info": base64.b64encode(conn_info).decode()}
        return base64.b64encode(json.dumps(outer).encode())


def send(host: str, port: int, payload: bytes, timeout: float = SEND_TIMEOUT) -> None:
    """One connection, the whole payload, then close: the server reads to EOF."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(payload)
    except OSError as e:
        raise LaunchError(f"cannot send the connection info to {host}:{port}: {e}") from None
