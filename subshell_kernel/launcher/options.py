"""The launcher's command line, as the gateways write it (sans IO).

Enterprise Gateway and gateway_provisioners start a remote kernel by running
the kernelspec's ``argv`` with their placeholders filled in.  Two spellings of
the same options are in use: gateway_provisioners' plain ones
(``--kernel-id``) and Enterprise Gateway's older ``--RemoteProcessProxy.*``
ones; both are accepted.  Options this launcher does not know (a newer server
may add some) are ignored, never fatal.

The servers join ``argv`` with spaces and no quoting before running it over
SSH, so an empty value vanishes and leaves a bare option behind (GP writes
``--transport-encryption {transport_encryption}``, which is empty unless
encryption was asked for): every option takes at most one value.

Everything after the first ``--`` is handed to the kernel as extra arguments
(``-- --SubshellKernel.backend=trio``).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

#: options whose value the launcher uses, by destination
_USED = ("kernel_id", "response_address", "public_key", "port_range", "transport_encryption",
         "ip", "shutdown_grace")
#: options the gateways may pass that mean nothing for this kernel (Spark, Dask, ipykernel)
_ACCEPTED = ("spark_context_initialization_mode", "cluster_type", "kernel_class_name")

ENCRYPTION_POLICIES = ("auto", "required")


class LaunchError(RuntimeError):
    """The launcher cannot start the kernel; the message says why."""


class UsageError(LaunchError):
    """The command line cannot start a kernel."""


@dataclass(frozen=True)
class LaunchOptions:
    kernel_id: str
    response_host: str
    response_port: int
    public_key: str
    port_range: tuple[int, int]
    #: "auto" or "required": the kernel's sockets get CurveZMQ keys; "" for none
    transport_encryption: str = ""
    ip: str = "0.0.0.0"
    #: seconds a kernel has to exit after {"shutdown": 1} before it is sent SIGTERM
    shutdown_grace: float = 5.0
    kernel_args: tuple[str, ...] = ()
    ignored: tuple[str, ...] = field(default=())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m subshell_kernel.launcher",
                                     allow_abbrev=False, add_help=False)
    for dest in _USED + _ACCEPTED:
        flag = dest.replace("_", "-")
        parser.add_argument(f"--{flag}", f"--RemoteProcessProxy.{flag}", dest=dest, nargs="?",
                            default=None)
    return parser


def parse_port_range(text: str | None, needed: int = 6) -> tuple[int, int]:
    """``"L..U"`` as a pair; ``"0..0"`` (or nothing) means any free port.

    A range must hold at least ``needed`` ports: the kernel's five and the
    launcher's communication port.
    """
    if not text or text == "0..0":
        return 0, 0
    low, sep, high = text.partition("..")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise UsageError(f"--port-range {text!r} is not LOW..HIGH") from None
    if not sep or not 0 < lo <= hi <= 65535:
        raise UsageError(f"--port-range {text!r} is not LOW..HIGH within 1..65535")
    if hi - lo + 1 < needed:
        raise UsageError(f"--port-range {text!r} holds fewer than {needed} ports")
    return lo, hi


def parse_response_address(text: str | None) -> tuple[str, int]:
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise UsageError(
            f"--response-address {text!r} is not HOST:PORT (the address the gateway "
            "listens on for the connection info; 'pull mode' is not supported)")
    return host, int(port)


def _filled(value: str | None) -> str | None:
    """None for a placeholder the server left as it was (``{port_range}``)."""
    return None if value is None or re.fullmatch(r"\{\w+\}", value) else value


def parse(argv: list[str]) -> LaunchOptions:
    if "--" in argv:
        cut = argv.index("--")
        argv, kernel_args = argv[:cut], argv[cut + 1:]
    else:
        kernel_args = []
    known, unknown = _parser().parse_known_args(argv)
    if not known.kernel_id:
        raise UsageError("--kernel-id is required")
    if not known.public_key:
        raise UsageError("--public-key is required (the gateway's RSA public key)")
    host, port = parse_response_address(known.response_address)
    policy = (_filled(known.transport_encryption) or "").lower()
    if policy not in ENCRYPTION_POLICIES + ("", "disabled"):
        raise UsageError(f"--transport-encryption {policy!r} is not auto, required or disabled")
    try:
        grace = float(_filled(known.shutdown_grace) or 5.0)
    except ValueError:
        raise UsageError(f"--shutdown-grace {known.shutdown_grace!r} is not a number") from None
    return LaunchOptions(
        kernel_id=known.kernel_id,
        response_host=host,
        response_port=port,
        public_key=known.public_key,
        port_range=parse_port_range(_filled(known.port_range)),
        transport_encryption=policy if policy in ENCRYPTION_POLICIES else "",
        ip=_filled(known.ip) or "0.0.0.0",
        shutdown_grace=max(0.0, grace),
        kernel_args=tuple(kernel_args),
        ignored=tuple(unknown),
    )
