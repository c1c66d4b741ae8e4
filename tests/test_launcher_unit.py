"""The launcher's parts without a kernel: its command line in both gateways'
spellings, port choice, the encrypted reply, the communication port's
requests, the supervisor's escalation, the sample kernelspecs."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from subshell_kernel.launcher import kernelspecs
from subshell_kernel.launcher.connection import (
    KERNEL_PORTS,
    connection_info,
    curve_keys,
    reserve_ports,
    write_private,
)
from subshell_kernel.launcher.listener import Request, parse_request
from subshell_kernel.launcher.options import LaunchError, UsageError, parse, parse_port_range
from subshell_kernel.launcher.payload import Sealer
from subshell_kernel.launcher.supervisor import Supervisor

from .gateway_protocol import ResponseServer

KEY = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC"


# -- the command line ---------------------------------------------------------------------
def test_gateway_provisioners_spelling():
    opts = parse(["--kernel-id", "k1", "--port-range", "40000..41999", "--response-address",
                  "10.0.0.1:8877", "--public-key", KEY, "--transport-encryption", "required"])
    assert (opts.kernel_id, opts.response_host, opts.response_port) == ("k1", "10.0.0.1", 8877)
    assert opts.port_range == (40000, 41999)
    assert opts.transport_encryption == "required"
    assert opts.public_key == KEY and opts.ignored == () and opts.kernel_args == ()


def test_enterprise_gateway_spelling_and_unknown_options_ignored():
    opts = parse(["--RemoteProcessProxy.kernel-id", "k2",
                  "--RemoteProcessProxy.response-address", "h:1",
                  "--RemoteProcessProxy.public-key", KEY,
                  "--RemoteProcessProxy.port-range", "0..0",
                  "--RemoteProcessProxy.spark-context-initialization-mode", "none",
                  "--RemoteProcessProxy.cluster-type", "none",
                  "--some-future-option", "v", "/a/positional/connection_file.json"])
    assert (opts.kernel_id, opts.response_host, opts.response_port) == ("k2", "h", 1)
    assert opts.port_range == (0, 0) and opts.transport_encryption == ""
    assert opts.ignored == ("--some-future-option", "v", "/a/positional/connection_file.json")


def test_an_empty_value_the_server_joined_away_leaves_a_bare_option():
    # GP writes "--transport-encryption {transport_encryption}"; empty, unquoted, it vanishes
    argv = ("--kernel-id k --response-address h:2 --public-key K --transport-encryption "
            "--kernel-class-name ipykernel.ipkernel.IPythonKernel -- --SubshellKernel.backend=trio")
    opts = parse(argv.split())
    assert opts.transport_encryption == ""
    assert opts.kernel_args == ("--SubshellKernel.backend=trio",)


def test_placeholders_left_unfilled_mean_unset():
    opts = parse(["--kernel-id", "k", "--response-address", "h:2", "--public-key", "K",
                  "--port-range", "{port_range}", "--transport-encryption",
                  "{transport_encryption}"])
    assert opts.port_range == (0, 0) and opts.transport_encryption == ""


@pytest.mark.parametrize("argv, says", [
    ([], "--kernel-id"),
    (["--kernel-id", "k", "--response-address", "h:1"], "--public-key"),
    (["--kernel-id", "k", "--public-key", "K"], "HOST:PORT"),
    (["--kernel-id", "k", "--public-key", "K", "--response-address", "pullmode"], "pull"),
    (["--kernel-id", "k", "--public-key", "K", "--response-address", "h:99999"], "HOST:PORT"),
    (["--kernel-id", "k", "--public-key", "K", "--response-address", "h:1",
      "--transport-encryption", "always"], "auto, required"),
    (["--kernel-id", "k", "--public-key", "K", "--response-address", "h:1",
      "--shutdown-grace", "soon"], "number"),
])
def test_usage_errors_say_what_is_wrong(argv, says):
    with pytest.raises(UsageError, match=says):
        parse(argv)


@pytest.mark.parametrize("text, expected", [
    (None, (0, 0)), ("", (0, 0)), ("0..0", (0, 0)), ("40000..40005", (40000, 40005)),
])
def test_port_ranges(text, expected):
    assert parse_port_range(text) == expected


@pytest.mark.parametrize("text", ["40000", "a..b", "40005..40000", "0..10", "40000..40004",
                                  "1..70000"])
def test_bad_port_ranges(text):
    with pytest.raises(UsageError):
        parse_port_range(text)


# -- ports, keys, the connection file -------------------------------------------------------
def test_ports_are_chosen_in_the_range_and_distinct():
    socks = reserve_ports("127.0.0.1", (45100, 45199), 6)
    try:
        ports = [s.getsockname()[1] for s in socks]
        assert len(set(ports)) == 6 and all(45100 <= p <= 45199 for p in ports)
    finally:
        for s in socks:
            s.close()


def test_a_range_with_too_few_free_ports_is_an_error():
    lo = random.randint(46000, 60000)
    taken = []
    for port in range(lo, lo + 7):  # take what is free of the 7, then free 5 again
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            taken.append(sock)
        except OSError:  # another process has it: not free either
            sock.close()
    for sock in taken[:5]:
        sock.close()
    try:
        with pytest.raises(LaunchError, match="no 6 free ports"):
            reserve_ports("127.0.0.1", (lo, lo + 6), 6)  # 5 free at most
    finally:
        for sock in taken[5:]:
            sock.close()


def test_connection_info_has_an_hmac_key_always_and_curve_keys_when_asked(tmp_path):
    plain = connection_info("0.0.0.0", [1, 2, 3, 4, 5], curve_keys(""))
    assert set(KERNEL_PORTS) <= set(plain) and len(plain["key"]) == 64
    assert plain["signature_scheme"] == "hmac-sha256" and "curve_secretkey" not in plain
    assert curve_keys("disabled") == {}
    curved = connection_info("0.0.0.0", [1, 2, 3, 4, 5], curve_keys("required"))
    assert len(curved["curve_publickey"]) == len(curved["curve_secretkey"]) == 40
    assert curved["key"] != plain["key"]
    path = write_private("kid", curved)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert json.load(open(path)) == curved
    finally:
        os.unlink(path)


# -- the reply to the gateway ---------------------------------------------------------------
def test_sealed_payload_opens_with_the_gateways_private_key():
    server = ResponseServer()
    try:
        info = {"shell_port": 1, "key": "k" * 64, "pid": 7, "kernel_id": "abc", "x": "é" * 40}
        sealed = Sealer(server.public_key).seal(info)
        assert sealed.isascii()  # the servers decode it as text
        assert server.decode(sealed) == info
    finally:
        server.close()


def test_a_bad_public_key_fails_before_the_kernel_starts():
    with pytest.raises(LaunchError, match="public key"):
        Sealer("not base64 at all!")
    with pytest.raises(LaunchError, match="public key"):
        Sealer("aGVsbG8=")


# -- the communication port -----------------------------------------------------------------
@pytest.mark.parametrize("data, expected", [
    (b'{"signum": 0}', Request(0)),
    (b'{"signum": 2}', Request(2)),
    (b'{"signum": "15"}', Request(15)),
    (b'{"shutdown": 1}', Request(0, shutdown=True)),
    (b'{"signum": 15, "shutdown": 1}', Request(15, shutdown=True)),
    (b"", None), (b"garbage", None), (b"[1, 2]", None), (b'"signum"', None),
    (b'{"signum": 99999}', None), (b'{"signum": -2}', None), (b'{"signum": true}', None),
    (b'{"signum": 2.5}', None), (b"\xff\xfe", None),
])
def test_requests(data, expected):
    assert parse_request(data) == expected


@given(st.binary(max_size=200))
def test_no_bytes_make_the_request_parser_raise(data):
    parse_request(data)


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    comm = socket.socket()
    comm.bind(("127.0.0.1", 0))
    comm.listen()
    yield proc, comm
    proc.kill()
    proc.wait()
    comm.close()


def test_supervisor_signals_the_kernel_and_ends_when_it_does(child):
    proc, comm = child
    sup = Supervisor(proc, comm)
    sup.handle(Request(0))
    assert proc.poll() is None  # a poll does nothing
    sup.handle(Request(signal.SIGTERM))
    assert sup.run() == -signal.SIGTERM
    with pytest.raises(OSError):  # closed: the gateway's poll is refused
        comm.getsockname()


def test_supervisor_ends_a_kernel_that_outlives_the_shutdown_grace(child):
    proc, comm = child
    sup = Supervisor(proc, comm, shutdown_grace=0.3)
    t0 = time.monotonic()
    sup.handle(Request(0, shutdown=True))
    assert sup.run() == -signal.SIGTERM
    assert 0.2 < time.monotonic() - t0 < 5


# -- sample kernelspecs ---------------------------------------------------------------------
def test_kernelspecs_for_both_gateways():
    gp = kernelspecs.distributed_spec("provisioners", ["h1", "h2"], python="/opt/py/bin/python",
                                      kernel_args=["--SubshellKernel.backend=trio"])
    assert gp["argv"][:3] == ["/opt/py/bin/python", "-m", "subshell_kernel.launcher"]
    assert "{transport_encryption}" in gp["argv"] and gp["argv"][-2:] == [
        "--", "--SubshellKernel.backend=trio"]
    assert gp["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "distributed-provisioner",
        "config": {"remote_hosts": ["h1", "h2"], "launch_timeout": 30}}
    assert gp["metadata"]["supported_encryption"] == ["curve"]
    # filled in and joined unquoted, as the server runs it over SSH
    values = {"kernel_id": "k", "port_range": "0..0", "response_address": "h:1",
              "public_key": "K", "transport_encryption": ""}
    line = " ".join(re.sub(r"{(\w+)}", lambda m: values[m.group(1)], a) for a in gp["argv"][3:])
    opts = parse(line.split())
    assert (opts.kernel_id, opts.transport_encryption) == ("k", "")
    assert opts.kernel_args == ("--SubshellKernel.backend=trio",)

    eg = kernelspecs.distributed_spec("enterprise", ["h1", "h2"])
    assert eg["argv"][0] == sys.executable
    assert "--RemoteProcessProxy.kernel-id" in eg["argv"]
    assert eg["metadata"]["process_proxy"]["config"] == {"remote_hosts": "h1,h2"}
    assert eg["metadata"]["process_proxy"]["class_name"].endswith("DistributedProcessProxy")
    assert eg["interrupt_mode"] == "signal"


def test_install_subcommand_writes_the_kernelspec(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "subshell_kernel.launcher", "install", "--gateway", "enterprise",
         "--remote-hosts", "h1, h2", "--prefix", str(tmp_path), "--name", "remote"],
        capture_output=True, text=True, check=True)
    assert "Installed kernelspec remote" in out.stdout
    spec = json.loads((tmp_path / "share/jupyter/kernels/remote/kernel.json").read_text())
    assert spec["metadata"]["process_proxy"]["config"]["remote_hosts"] == "h1,h2"
