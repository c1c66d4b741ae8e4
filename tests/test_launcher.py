"""``python -m subshell_kernel.launcher`` with a real kernel, on this host: the
test plays the gateway (tests/gateway_protocol.py) and talks to the kernel
through jupyter_client, to the launcher through its communication port.

The launcher is started as the SSH provisioners start it: SIGINT ignored
(``nohup ... &`` in a non-interactive shell), in the caller's process group.
tests/test_gateways.py runs the same launcher under the real servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import zmq
from jupyter_client import BlockingKernelClient

from .gateway_protocol import (
    ResponseServer,
    answers,
    comm_port_open,
    comm_request,
    kernel_connection,
)

HOST = "127.0.0.1"


def _as_if_by_nohup() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Launched:
    """A launcher process, the connection info it sent, a client of its kernel."""

    def __init__(self, *options: str, spelling: str = "provisioners"):
        self.server = ResponseServer(HOST)
        self.kernel_id = str(uuid.uuid4())
        prefix = "--RemoteProcessProxy." if spelling == "enterprise" else "--"
        argv = [sys.executable, "-m", "subshell_kernel.launcher",
                f"{prefix}kernel-id", self.kernel_id,
                f"{prefix}response-address", self.server.address,
                f"{prefix}public-key", self.server.public_key, "--ip", HOST, *options]
        self.proc = subprocess.Popen(argv, preexec_fn=_as_if_by_nohup, stderr=subprocess.PIPE,
                                     text=True)
        try:
            self.info = self.server.receive(timeout=30)
        except Exception:
            self.proc.kill()
            raise RuntimeError(f"no connection info: {self.proc.communicate()[1]}") from None
        finally:
            self.server.close()
        self.kc = BlockingKernelClient()
        self.kc.load_connection_info(kernel_connection(self.info, HOST))
        self.kc.start_channels()
        try:
            self._wait_for_ready(60)
        except BaseException:
            self.close()
            raise

    def _wait_for_ready(self, timeout: float) -> None:
        """A kernel_info reply, then an iopub message (the welcome of our
        subscription), so no output is missed.  Not ``wait_for_ready``: without
        a KernelManager it takes a heartbeat not yet answered (a kernel slow
        to start on a loaded machine) for a dead kernel."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.kc.kernel_info(reply=True, timeout=2)
                break
            except TimeoutError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
        self.kc.iopub_channel.get_msg(timeout=max(1.0, deadline - time.monotonic()))

    def request(self, body, shut_write: bool = False) -> None:
        comm_request(HOST, self.info["comm_port"], body, shut_write)

    def run(self, code: str, timeout: float = 30) -> dict:
        return self.kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: None)

    def value(self, expression: str):
        reply = self.kc.execute_interactive(
            "", user_expressions={"v": expression}, timeout=30, output_hook=lambda m: None)
        return reply["content"]["user_expressions"]["v"]["data"]["text/plain"]

    def exited(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    def close(self) -> str:
        self.kc.stop_channels()
        if self.proc.poll() is None:
            os.kill(self.info["pid"], signal.SIGKILL)
            self.proc.kill()
        return self.proc.communicate(timeout=10)[1]


def _pid_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def launched():
    made: list[Launched] = []

    def launch(*options: str, **kw) -> Launched:
        made.append(Launched(*options, **kw))
        return made[-1]

    yield launch
    for one in made:
        one.close()


def test_reply_names_the_kernel_its_group_and_the_communication_port(launched):
    k = launched("--port-range", "46000..46999", "--", "--SubshellKernel.backend=trio")
    info = k.info
    assert info["kernel_id"] == k.kernel_id and info["signature_scheme"] == "hmac-sha256"
    assert info["key"] and "curve_secretkey" not in info
    ports = [info[f"{n}_port"] for n in ("shell", "iopub", "stdin", "hb", "control")]
    assert all(46000 <= p <= 46999 for p in ports + [info["comm_port"]])
    assert len(set(ports + [info["comm_port"]])) == 6
    # the kernel is the launcher's child, in the launcher's own process group
    assert int(k.value("__import__('os').getpid()")) == info["pid"]
    assert int(k.value("__import__('os').getppid()")) == k.proc.pid == info["pgid"]
    assert os.getpgid(info["pid"]) == info["pgid"] != os.getpgid(0)
    # the extra kernel arguments after "--" reached the kernel
    assert "(trio)" in k.kc.kernel_info(reply=True, timeout=10)["content"]["banner"]
    assert comm_port_open(HOST, info["comm_port"])


def test_enterprise_gateway_spelling_launches_too(launched):
    k = launched("--RemoteProcessProxy.spark-context-initialization-mode", "none",
                 "--an-option-from-the-future", spelling="enterprise")
    assert k.run("x = 6 * 7")["content"]["status"] == "ok"
    assert k.value("x") == "42"


def test_bad_requests_are_ignored_and_an_interrupt_goes_through(launched):
    k = launched()
    for junk in (b"", b"garbage", b"[1]", b'{"signum": 99999}', b"\xff" * 100_000):
        k.request(junk)
    assert comm_port_open(HOST, k.info["comm_port"]) and k.proc.poll() is None
    msg_id = k.kc.execute("import time\ntime.sleep(30)")
    time.sleep(0.5)  # SIGINT is ignored by the caller: the kernel must still get it
    t0 = time.monotonic()
    k.request({"signum": int(signal.SIGINT)})
    reply = k.kc.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 5
    assert k.run("1")["content"]["status"] == "ok"


def test_shutdown_as_jupyter_client_does_it_leaves_nothing(launched):
    k = launched()
    path = k.value("__import__('sys').argv[__import__('sys').argv.index('-f') + 1]").strip("'")
    assert os.stat(path).st_mode & 0o077 == 0  # private: it holds the keys
    t0 = time.monotonic()
    k.kc.shutdown()  # shutdown_request on control, then the provisioner's listener request
    k.request({"shutdown": 1}, shut_write=True)
    assert k.exited() == 0
    assert time.monotonic() - t0 < 5
    assert _pid_gone(k.info["pid"], 1)
    assert not comm_port_open(HOST, k.info["comm_port"])
    assert not os.path.exists(path)


def test_listener_shutdown_alone_ends_the_kernel_after_the_grace(launched):
    k = launched("--shutdown-grace", "0.5")
    t0 = time.monotonic()
    k.request({"shutdown": 1}, shut_write=True)
    assert comm_port_open(HOST, k.info["comm_port"])  # polls answered until the kernel is gone
    assert k.exited() == 0  # SIGTERM: the kernel's own clean shutdown
    assert 0.4 < time.monotonic() - t0 < 6
    assert not comm_port_open(HOST, k.info["comm_port"])


def test_sigterm_to_the_launcher_shuts_the_kernel_down(launched):
    k = launched()
    k.proc.terminate()
    assert k.exited() == 0
    assert _pid_gone(k.info["pid"], 1)


def test_a_dead_kernel_takes_the_launcher_and_its_port_with_it(launched):
    k = launched()
    os.kill(k.info["pid"], signal.SIGKILL)
    assert k.exited(5) == 128 + signal.SIGKILL  # as a shell reports it
    assert not comm_port_open(HOST, k.info["comm_port"])


def test_a_killed_launcher_does_not_leave_the_kernel_running(launched):
    k = launched()
    k.proc.kill()
    k.proc.wait()
    assert _pid_gone(k.info["pid"], 10)  # the kernel watches its parent (JPY_PARENT_PID)


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CurveZMQ")
def test_transport_encryption_required_gives_curve_keys(launched):
    k = launched("--transport-encryption", "required")
    assert len(k.info["curve_publickey"]) == len(k.info["curve_secretkey"]) == 40
    assert k.run("1")["content"]["status"] == "ok"  # jupyter_client uses the keys
    for channel in ("shell", "control", "hb"):
        assert answers(k.info, HOST, channel, timeout=10)
        assert not answers(k.info, HOST, channel, curve_publickey=None)  # HMAC key alone
    assert not answers(k.info, HOST, key=uuid.uuid4().hex)  # CurveZMQ, a wrong HMAC key


def test_usage_error_exits_2_with_the_reason_and_starts_nothing():
    proc = subprocess.run([sys.executable, "-m", "subshell_kernel.launcher", "--kernel-id", "k",
                           "--response-address", "127.0.0.1:1", "--public-key", "bm90IGEga2V5"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "public key" in proc.stderr


def test_unreachable_gateway_ends_the_kernel(tmp_path):
    server = ResponseServer(HOST)
    port = int(server.address.rsplit(":", 1)[1])
    server.close()  # nobody listens there now
    proc = subprocess.run([sys.executable, "-m", "subshell_kernel.launcher", "--kernel-id", "k",
                           "--response-address", f"{HOST}:{port}",
                           "--public-key", server.public_key], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "cannot send the connection info" in proc.stderr
