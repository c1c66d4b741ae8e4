"""``python -m subshell_kernel.launcher``: start this kernel for a gateway.

    python -m subshell_kernel.launcher --kernel-id ID --response-address IP:PORT \
        --public-key KEY [--port-range L..U] [--transport-encryption auto|required] \
        [--ip 0.0.0.0] [--shutdown-grace 5] [-- KERNEL ARGS...]
    python -m subshell_kernel.launcher install --gateway provisioners|enterprise ...

The sequence: choose six ports in the range (five for the kernel, one for the
communication port), write a private connection file (HMAC key, and CurveZMQ
keys when encryption is asked for), start ``python -m subshell_kernel -f
FILE`` as a child, send the connection info (with the kernel's pid, the
process group and the communication port) encrypted to the gateway, then
serve the communication port until the kernel exits; remove the file; exit
with the kernel's status (128 + N for a kernel ended by signal N).
"""

from __future__ import annotations

import os
import subprocess
import sys

from . import kernelspecs
from .connection import connection_info, curve_keys, reserve_ports, write_private
from .options import LaunchError, LaunchOptions, parse
from .payload import Sealer, send
from .supervisor import Supervisor, log


def kernel_command(connection_file: str, kernel_args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "subshell_kernel", "-f", connection_file, *kernel_args]


def launch(options: LaunchOptions) -> int:
    if options.ignored:
        log(f"ignoring options this launcher does not know: {' '.join(options.ignored)}")
    sealer = Sealer(options.public_key)  # fails now, not after the kernel started
    if os.getpgid(0) != os.getpid():
        os.setsid()  # our own process group, shared with the kernel (see supervisor)
    sockets = reserve_ports(options.ip, options.port_range, 6)
    comm = sockets.pop()
    comm.listen(16)
    ports = [s.getsockname()[1] for s in sockets]
    info = connection_info(options.ip, ports, curve_keys(options.transport_encryption))
    path = write_private(options.kernel_id, info)
    try:
        for sock in sockets:
            sock.close()  # the kernel binds them now
        Supervisor.catch_signals_before_start()
        env = dict(os.environ, JPY_PARENT_PID=str(os.getpid()))  # the kernel ends if we die
        kernel = subprocess.Popen(kernel_command(path, options.kernel_args), env=env)
        supervisor = Supervisor(kernel, comm, options.shutdown_grace)
        supervisor.forward_sigterm()
        log(f"kernel {options.kernel_id} started, pid {kernel.pid}, ports {ports}, "
            f"communication port {comm.getsockname()[1]}"
            + (", CurveZMQ" if "curve_secretkey" in info else ""))
        reply = dict(info, pid=kernel.pid, pgid=os.getpgid(0),
                     comm_port=comm.getsockname()[1], kernel_id=options.kernel_id)
        try:
            send(options.response_host, options.response_port, sealer.seal(reply))
        except LaunchError:
            kernel.kill()
            kernel.wait()
            raise
        status = supervisor.run()
        log(f"kernel {options.kernel_id} exited with status {status}")
        return status if status >= 0 else 128 - status  # killed by signal N: 128 + N
    finally:
        comm.close()
        os.unlink(path)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["install"]:
            print(kernelspecs.main(argv[1:]))
            sys.exit(0)
        sys.exit(launch(parse(argv)))
    except LaunchError as e:
        log(f"error: {e}")
        sys.exit(2)
