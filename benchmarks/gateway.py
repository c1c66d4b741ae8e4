"""Remote kernels side by side: this kernel through ``python -m
subshell_kernel.launcher`` against ipykernel through gateway_provisioners' own
``launch_ipykernel.py``, both started by the distributed (SSH) provisioner of
one jupyter_server on a second host (a network namespace with an sshd, as in
tests/test_gateways.py).

    python benchmarks/gateway.py [--rounds 5]     # needs root, iproute2, openssh-server

Per round and kernel (alternating): POST /api/kernels until 201 (the launch
over SSH, the encrypted reply, the server's first connection), then the first
``execute_reply`` over the websocket, then DELETE until 204 and until no
process of that launch is left in the namespace.  Medians; ratio = ours /
ipykernel.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from subshell_kernel.launcher.kernelspecs import distributed_spec  # noqa: E402
from tests.jupyter_servers import Server, WsClient, free_port, jupyter_server_argv  # noqa: E402
from tests.remote_host import RemoteHost, missing_parts  # noqa: E402

KERNELS = {"ours": "subshell-ssh", "ipykernel": "ipykernel-ssh"}


def write_specs(tmp: Path, host: RemoteHost) -> str:
    """Both kernelspecs; returns the JUPYTER_PATH that holds them."""
    kernels = tmp / "jupyter" / "kernels"
    ours = distributed_spec("provisioners", [host.ip], python=sys.executable)
    (kernels / "subshell-ssh").mkdir(parents=True)
    (kernels / "subshell-ssh" / "kernel.json").write_text(json.dumps(ours))
    # gateway_provisioners' own kernelspec, launcher and listener, for ipykernel
    subprocess.run([str(Path(sys.executable).parent / "jupyter-ssh-spec"), "install",
                    f"--prefix={tmp / 'prefix'}", "--kernel-name=ipykernel-ssh",
                    f"--remote-hosts={host.ip}"], check=True, capture_output=True)
    src = tmp / "prefix" / "share" / "jupyter" / "kernels" / "ipykernel-ssh"
    spec = json.loads((src / "kernel.json").read_text())
    spec["argv"][0] = sys.executable  # over SSH a bare "python" is whatever PATH finds
    (src / "kernel.json").write_text(json.dumps(spec))
    return os.pathsep.join([str(tmp / "jupyter"), str(tmp / "prefix" / "share" / "jupyter")])


def one_round(server: Server, host: RemoteHost, kernel: str) -> dict[str, float]:
    t0 = time.monotonic()
    kid = server.start_kernel(kernel, timeout=120)
    started = time.monotonic() - t0
    ws = WsClient(server, kid)
    t1 = time.monotonic()
    reply, _ = ws.execute("pass", timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    first = time.monotonic() - t1
    ws.close()
    t2 = time.monotonic()
    status, _ = server.request("DELETE", f"/api/kernels/{kid}", timeout=120)
    assert status == 204
    deleted = time.monotonic() - t2
    while host.kernel_pids() and time.monotonic() - t2 < 120:
        time.sleep(0.05)
    return {"start (POST until 201)": started, "first execute_reply": first,
            "DELETE until 204": deleted, "DELETE until no process left": time.monotonic() - t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    reason = missing_parts()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    host = RemoteHost(tmp)
    server = None
    try:
        env = {"HOME": str(host.home), "JUPYTER_PATH": write_specs(tmp, host),
               "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "GP_RESPONSE_IP": host.host_ip,
               "GP_RESPONSE_PORT": str(free_port(host.host_ip)), "GP_REMOTE_USER": "root",
               "GP_UNAUTHORIZED_USERS": "nobody-at-all", "GP_KERNEL_LOG_DIR": str(tmp),
               "IPYTHONDIR": str(tmp / "ipython")}
        server = Server(tmp, jupyter_server_argv, name="provisioners", env=env)
        samples: dict[str, dict[str, list[float]]] = {k: {} for k in KERNELS}
        for _ in range(args.rounds):
            for who, kernel in KERNELS.items():
                for row, value in one_round(server, host, kernel).items():
                    samples[who].setdefault(row, []).append(value)
        print(f"gateway_provisioners distributed provisioner, {args.rounds} rounds, medians")
        print("| | ipykernel 7 (GP's launch_ipykernel.py) | subshell_kernel (launcher) | ratio |")
        print("|---|---|---|---|")
        for row in samples["ours"]:
            ours = statistics.median(samples["ours"][row])
            theirs = statistics.median(samples["ipykernel"][row])
            print(f"| {row} | {theirs:.2f} s | {ours:.2f} s | {ours / theirs:.2f} |")
    finally:
        if server is not None:
            server.close()
        host.close()


if __name__ == "__main__":
    main()
