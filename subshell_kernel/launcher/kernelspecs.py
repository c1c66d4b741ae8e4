"""Sample kernelspecs that run this kernel on other hosts over SSH, through
gateway_provisioners' ``distributed-provisioner`` (in jupyter_server) or
Enterprise Gateway's ``DistributedProcessProxy``, and the command that
installs them:

    python -m subshell_kernel.launcher install --gateway provisioners \
        --remote-hosts host1,host2 [--python /opt/venv/bin/python] \
        [--name N] [--display-name D] [--user | --sys-prefix | --prefix P] \
        [-- KERNEL ARGS...]

The kernelspec lives on the gateway's host; its ``argv`` runs on the remote
host, so ``--python`` names the remote interpreter (an absolute path: over
SSH a bare ``python`` resolves through whatever the remote PATH holds), in an
environment where ``subshell_kernel[gateway]`` is installed.
"""

from __future__ import annotations

import argparse
import sys

from ..kernelspec import install_spec, kernel_json

#: the two spellings the servers' placeholders go into
_PROVISIONERS_ARGS = ["--kernel-id", "{kernel_id}", "--port-range", "{port_range}",
                      "--response-address", "{response_address}", "--public-key", "{public_key}",
                      "--transport-encryption", "{transport_encryption}"]
_ENTERPRISE_ARGS = ["--RemoteProcessProxy.kernel-id", "{kernel_id}",
                    "--RemoteProcessProxy.port-range", "{port_range}",
                    "--RemoteProcessProxy.response-address", "{response_address}",
                    "--RemoteProcessProxy.public-key", "{public_key}"]
ENTERPRISE_PROXY = "enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy"


def distributed_spec(gateway: str, remote_hosts: list[str], python: str | None = None,
                     display_name: str | None = None, launch_timeout: int = 30,
                     kernel_args: list[str] | None = None) -> dict:
    """The kernelspec for ``gateway`` ("provisioners" or "enterprise")."""
    python = python or sys.executable
    spec = kernel_json(display_name or f"Python 3 (subshell, on {', '.join(remote_hosts)})")
    launcher = [python, "-m", "subshell_kernel.launcher"]
    if gateway == "provisioners":
        spec["argv"] = launcher + _PROVISIONERS_ARGS
        spec["metadata"]["kernel_provisioner"] = {
            "provisioner_name": "distributed-provisioner",
            "config": {"remote_hosts": list(remote_hosts), "launch_timeout": launch_timeout},
        }
    elif gateway == "enterprise":
        spec["argv"] = launcher + _ENTERPRISE_ARGS
        spec["metadata"].pop("supported_encryption")  # Enterprise Gateway 3.3 has no CurveZMQ
        spec["metadata"]["process_proxy"] = {
            "class_name": ENTERPRISE_PROXY,
            "config": {"remote_hosts": ",".join(remote_hosts)},
        }
    else:
        raise ValueError(f"unknown gateway {gateway!r}: provisioners or enterprise")
    if kernel_args:
        spec["argv"] += ["--", *kernel_args]
    return spec


def main(argv: list[str]) -> str:
    """The ``install`` subcommand; returns what it did, in a sentence."""
    argv, kernel_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) \
        if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m subshell_kernel.launcher install",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", choices=["provisioners", "enterprise"], required=True)
    parser.add_argument("--remote-hosts", required=True,
                        help="comma-separated host names or addresses")
    parser.add_argument("--python", help="the remote interpreter (default: this one)")
    parser.add_argument("--name", default=None, help="kernelspec name")
    parser.add_argument("--display-name", default=None)
    parser.add_argument("--launch-timeout", type=int, default=30)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true")
    where.add_argument("--sys-prefix", action="store_true")
    where.add_argument("--prefix")
    args = parser.parse_args(argv)
    hosts = [h.strip() for h in args.remote_hosts.split(",") if h.strip()]
    spec = distributed_spec(args.gateway, hosts, args.python, args.display_name,
                            args.launch_timeout, kernel_args)
    name = args.name or f"subshell-{args.gateway}-ssh"
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = install_spec(spec, name, user=args.user, prefix=prefix)
    return f"Installed kernelspec {name} in {path}"
