"""A second "host" on this machine: a network namespace with its own address
and an SSH server, so a gateway's SSH provisioner really starts the kernel
behind another address.

    host side  <veth>a  10.<a>.<b>.1/30        namespace <veth>b  10.<a>.<b>.2/30
    sshd in the namespace on 10.<a>.<b>.2:22, root login by key only

The filesystem is shared, so the remote kernel runs this checkout's venv.
Everything lives in a private directory: the client and host keys, sshd's
config and log, and a HOME for the gateway server (paramiko finds its key in
``~/.ssh/id_ed25519`` and the host key in ``~/.ssh/known_hosts``; it ignores
``~/.ssh/config``).  Nothing outside that directory is changed but the
namespace and its veth pair, which ``close`` removes with every process that
still runs in the namespace.  Needs root, ``ip`` (iproute2) and ``sshd``
(openssh-server).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def missing_parts() -> str | None:
    """Why a namespace host cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "no `ip` command (Debian package iproute2)"
    if not (os.path.exists(SSHD) and shutil.which("ssh-keygen") and shutil.which("ssh")):
        return "no sshd/ssh (Debian packages openssh-server, openssh-client)"
    return None


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


def _free_subnet() -> tuple[str, str]:
    """(host address, namespace address) of a /30 that no interface uses."""
    used = _run("ip", "-4", "-o", "addr").stdout + _run("ip", "-4", "route").stdout
    for _ in range(100):
        a, b = random.randint(200, 250), random.randint(0, 255)
        if f"10.{a}.{b}." not in used:
            return f"10.{a}.{b}.1", f"10.{a}.{b}.2"
    raise RuntimeError("no free 10.x.y.0/30 subnet")


class RemoteHost:
    def __init__(self, tmp: Path):
        suffix = f"{random.getrandbits(24):06x}"
        self.ns = f"skgw-{suffix}"
        self.veth_host, self.veth_ns = f"skg{suffix}a", f"skg{suffix}b"
        self.host_ip, self.ip = _free_subnet()
        self.dir = tmp / "remote-host"
        self.home = self.dir / "home"  # HOME for the gateway server
        self.key = self.home / ".ssh" / "id_ed25519"
        self.known_hosts = self.home / ".ssh" / "known_hosts"
        self._sshd: subprocess.Popen | None = None
        try:
            self._make_namespace()
            self._start_sshd()
        except BaseException:
            self.close()
            raise

    def _make_namespace(self) -> None:
        _run("ip", "netns", "add", self.ns)
        _run("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns)
        _run("ip", "link", "set", self.veth_ns, "netns", self.ns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.veth_host)
        _run("ip", "link", "set", self.veth_host, "up")
        self.exec("ip", "addr", "add", f"{self.ip}/30", "dev", self.veth_ns)
        self.exec("ip", "link", "set", self.veth_ns, "up")
        self.exec("ip", "link", "set", "lo", "up")

    def _start_sshd(self) -> None:
        ssh_dir = self.key.parent
        ssh_dir.mkdir(parents=True, mode=0o700)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        host_key = self.dir / "ssh_host_ed25519_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        public = host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"{self.ip} {public[0]} {public[1]}\n")
        authorized = self.dir / "authorized_keys"
        shutil.copy(self.key.with_suffix(".pub"), authorized)
        authorized.chmod(0o600)
        config = self.dir / "sshd_config"
        config.write_text(
            f"ListenAddress {self.ip}\nPort 22\nHostKey {host_key}\n"
            f"PidFile {self.dir / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
            "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPermitUserEnvironment no\nLogLevel INFO\n"
        )
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.sshd_log = self.dir / "sshd.log"
        self._sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, SSHD, "-D", "-f", str(config),
             "-E", str(self.sshd_log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while self.ssh("true").returncode != 0:
            if self._sshd.poll() is not None or time.monotonic() > deadline:
                log = self.sshd_log.read_text() if self.sshd_log.exists() else ""
                raise RuntimeError(f"sshd in {self.ns} did not come up:\n{log}")
            time.sleep(0.2)

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the namespace (not over SSH)."""
        return _run("ip", "netns", "exec", self.ns, *cmd)

    def ssh(self, command: str) -> subprocess.CompletedProcess:
        """Run ``command`` on the host over SSH, as root, with the test's key."""
        return subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
             "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
             "-i", str(self.key), f"root@{self.ip}", command],
            capture_output=True, text=True, timeout=30,
        )

    def pids(self) -> set[int]:
        """Every process that runs in the namespace."""
        out = _run("ip", "netns", "pids", self.ns, check=False).stdout
        return {int(p) for p in out.split()}

    def kernel_pids(self) -> set[int]:
        """The processes in the namespace but sshd's own listener: what a kernel
        launch left running (launchers, kernels, SSH sessions)."""
        return self.pids() - {self._sshd.pid if self._sshd else -1}

    def close(self) -> None:
        if self._sshd is not None and self._sshd.poll() is None:
            self._sshd.terminate()
            try:
                self._sshd.wait(5)
            except subprocess.TimeoutExpired:
                self._sshd.kill()
        for sig in ("TERM", "KILL"):
            pids = self.pids()
            if not pids:
                break
            _run("kill", f"-{sig}", *map(str, pids), check=False)
            time.sleep(0.5)
        _run("ip", "netns", "del", self.ns, check=False)  # removes the veth pair too
        _run("ip", "link", "del", self.veth_host, check=False)
