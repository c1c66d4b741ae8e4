"""Reliability: bad input on the wire, misbehaving user code, and faults.

Everything here speaks to a real kernel process.  Malformed messages go
through raw zmq DEALER sockets connected to the kernel's shell or control port,
signed (when a test needs a valid signature) with a jupyter_client ``Session``
holding the connection key.  After every bad input the kernel must still
answer a normal request.

How "nothing happened" is checked without sleeping: right after the bad
message, a probe request is sent on the same socket.  The router and the
control thread handle one socket's messages in arrival order, and a subshell
answers in order, so had the bad message been accepted its reply (or its
side effect) would come before the probe's reply.  The first and only thing
the socket receives must therefore be the probe's reply; the side-effect file
an accepted execute would have written must be absent once the probe's reply
is in.

Tests that do not break the kernel share one kernel per module (``k``, which
is replaced if a test killed it); tests of signals, shutdown and reconnection
take a kernel of their own.  Timing bounds are generous (2 shared cores).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.session import Session

from .harness import KernelHarness

DELIM = b"<IDS|MSG>"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SPIN = "while True:\n    pass\n"


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def k(revivable_kernel) -> KernelHarness:
    return revivable_kernel


@pytest.fixture(scope="module", params=["subshell", "subshell-trio"], ids=["asyncio", "trio"])
def fd_kernel(request):
    """fd 1 and 2 are read by the iopub thread's task group, on the kernel's backend."""
    kern = KernelHarness(request.param)
    yield kern
    kern.close()


@pytest.fixture
def side_effect(tmp_path) -> tuple[str, Path]:
    """Code that, if it ever runs, leaves a file behind; and that file."""
    path = tmp_path / f"ran-{uuid.uuid4().hex[:8]}"
    return f"open({str(path)!r}, 'w').write('ran')", path


# --- a raw client -------------------------------------------------------------------------------
class Raw:
    """A DEALER socket on the shell or control port, with a signing Session of its own."""

    def __init__(self, kern: KernelHarness, channel: str = "shell"):
        info = kern.km.get_connection_info()
        self.channel = channel
        self.session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"{info['transport']}://{info['ip']}:{info[f'{channel}_port']}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # building
    def msg(self, msg_type: str, content: dict | None = None, **header: object) -> dict:
        m = self.session.msg(msg_type, content or {})
        m["header"].update(header)
        return m

    def frames(self, msg: dict) -> list[bytes]:
        return self.session.serialize(msg)

    def signed(self, header: bytes, parent: bytes = b"{}", metadata: bytes = b"{}",
               content: bytes = b"{}", buffers: tuple = ()) -> list[bytes]:
        """Frames with exactly these four parts, validly signed."""
        parts = [header, parent, metadata, content]
        return [DELIM, self.session.sign(parts), *parts, *buffers]

    # IO
    def send(self, frames: list) -> None:
        self.sock.send_multipart(frames)

    def send_msg(self, msg: dict) -> str:
        self.send(self.frames(msg))
        return msg["header"]["msg_id"]

    def recv(self, timeout: float = 10) -> dict | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        frames = self.sock.recv_multipart()
        _, parts = self.session.feed_identities(frames)
        return self.session.deserialize(parts)

    def until_reply(self, msg_id: str, timeout: float = 20) -> list[dict]:
        """Everything received up to and including the reply to ``msg_id``."""
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise TimeoutError(f"no reply to {msg_id} on raw {self.channel} socket; got {got}")
            got.append(msg)
            if msg["parent_header"].get("msg_id") == msg_id:
                return got

    def probe(self) -> str:
        """A harmless request on this socket; returns its msg_id."""
        if self.channel == "shell":
            return self.send_msg(self.msg("execute_request", {
                "code": "'probe'", "silent": False, "store_history": False, "allow_stdin": False,
            }))
        return self.send_msg(self.msg("kernel_info_request"))


def header_bytes(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def valid_header(msg_type: str = "execute_request", **extra: object) -> dict:
    h = {"msg_id": f"raw-{uuid.uuid4().hex}", "msg_type": msg_type, "username": "t",
         "session": uuid.uuid4().hex, "date": "2024-01-01T00:00:00Z", "version": "5.5"}
    h.update(extra)
    return h


# --- assertions -----------------------------------------------------------------------------------
def assert_alive(kern: KernelHarness) -> None:
    """A normal execute (shell) and kernel_info (control) are answered."""
    token = uuid.uuid4().hex[:12]
    reply, msgs = kern.run(f"'alive-{token}'", timeout=20)
    assert reply["content"]["status"] == "ok", reply["content"]
    results = [m for m in msgs if m["msg_type"] == "execute_result"]
    assert results and results[0]["content"]["data"]["text/plain"] == f"'alive-{token}'"
    assert kern.control("kernel_info_request", timeout=10)["content"]["status"] == "ok"


def assert_dropped(kern: KernelHarness, raw: Raw, msg_id: str | None = None) -> None:
    """Nothing answers what was just sent on ``raw``: the probe's reply comes first."""
    probe = raw.probe()
    got = raw.until_reply(probe)
    assert [m["parent_header"].get("msg_id") for m in got] == [probe], got
    kern.iopub(probe, timeout=10)  # everything published before the probe's idle is in
    if msg_id is not None:
        assert not kern._iopub.get(msg_id), kern._iopub.get(msg_id)
    assert_alive(kern)


def assert_error_reply(kern: KernelHarness, raw: Raw, msg_id: str,
                       ename: str | None = None) -> dict:
    """``msg_id`` gets exactly one reply, an error, between its busy and idle."""
    got = raw.until_reply(msg_id)
    assert len(got) == 1, got
    content = got[0]["content"]
    assert_error_content(content, ename)
    msgs = kern.iopub(msg_id, timeout=10)
    states = [m["content"]["execution_state"] for m in msgs if m["msg_type"] == "status"]
    assert states == ["busy", "idle"], states
    assert_dropped(kern, raw)  # nothing else follows
    return content


def assert_error_content(content: dict, ename: str | None = None) -> None:
    assert content["status"] == "error", content
    assert isinstance(content.get("ename"), str) and content["ename"]
    assert isinstance(content.get("evalue"), str)
    assert isinstance(content.get("traceback"), list)
    if ename is not None:
        assert content["ename"] == ename, content


def results(msgs: list[dict]) -> list[str]:
    return [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "execute_result"]


def stream_text(msgs: list[dict], name: str = "stdout") -> str:
    return "".join(m["content"]["text"] for m in msgs
                   if m["msg_type"] == "stream" and m["content"]["name"] == name)


def wait_started(kern: KernelHarness, msg_id: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not any(m["msg_type"] == "execute_input" for m in kern._iopub[msg_id]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{msg_id} did not start")
        kern._pump(0.01)


def wait_printed(kern: KernelHarness, msg_id: str, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while text not in kern.stdout(msg_id):
        if msg_id in kern._replies:
            raise AssertionError(f"cell ended early: {kern._replies[msg_id]['content']}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not printed by {msg_id}")
        kern._pump(0.01)


def exit_status_within(kern: KernelHarness, seconds: float, t0: float) -> tuple[int | None, float]:
    """(exit status or None, seconds since ``t0``) once the process ended or time ran out."""
    process = kern.km.provisioner.process
    while process.poll() is None and time.monotonic() - t0 < seconds:
        time.sleep(0.01)
    return process.poll(), time.monotonic() - t0


# ==================================================================================================
# 1. Signatures: bad, missing, replayed -> dropped, nothing executed
# ==================================================================================================
def _bad_signature_frames(raw: Raw, msg: dict, how: str) -> list[bytes]:
    frames = raw.frames(msg)  # [DELIM, sig, header, parent, metadata, content]
    d, sig, *parts = frames
    if how == "missing signature frame":
        return [d, *parts]
    if how == "missing signature frame, one buffer":  # header taken for the signature
        return [d, *parts, b"buffer"]
    if how == "empty signature":
        return [d, b"", *parts]
    if how == "other key":
        return [d, Session(key=b"not-the-key").sign(parts), *parts]
    if how == "truncated":
        return [d, sig[:32], *parts]
    if how == "upper-case hex":
        return [d, sig.upper(), *parts]
    if how == "tampered content":
        content = json.loads(parts[3])
        content["code"] = content.get("code", "") + "\n"
        return [d, sig, parts[0], parts[1], parts[2], json.dumps(content).encode()]
    if how == "hmac-sha1 with the right key":
        import hashlib
        import hmac
        h = hmac.new(raw.session.key, digestmod=hashlib.sha1)
        for p in parts:
            h.update(p)
        return [d, h.hexdigest().encode(), *parts]
    raise ValueError(how)


SIGNATURE_CASES = [
    "missing signature frame", "missing signature frame, one buffer", "empty signature",
    "other key", "truncated", "upper-case hex", "tampered content", "hmac-sha1 with the right key",
]


@pytest.mark.parametrize("how", SIGNATURE_CASES)
def test_badly_signed_execute_is_dropped_on_shell(k, side_effect, how):
    code, path = side_effect
    with Raw(k, "shell") as raw:
        msg = raw.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                          "allow_stdin": False})
        raw.send(_bad_signature_frames(raw, msg, how))
        assert_dropped(k, raw, msg["header"]["msg_id"])
    assert not path.exists(), "a badly signed execute_request ran"


@pytest.mark.parametrize("how", SIGNATURE_CASES)
def test_badly_signed_shutdown_is_dropped_on_control(k, how):
    with Raw(k, "control") as raw:
        msg = raw.msg("shutdown_request", {"restart": False})
        raw.send(_bad_signature_frames(raw, msg, how))
        assert_dropped(k, raw, msg["header"]["msg_id"])
    assert k.is_alive()


def test_replay_from_another_connection_is_dropped(k, side_effect):
    code, path = side_effect
    first, second = Raw(k, "shell"), Raw(k, "shell")
    try:
        msg = first.msg("execute_request", {"code": "'original'", "silent": False,
                                            "store_history": False, "allow_stdin": False})
        frames = first.frames(msg)
        first.send(frames)
        assert first.until_reply(msg["header"]["msg_id"])[-1]["content"]["status"] == "ok"
        second.send(frames)  # the same signed frames from another peer
        assert_dropped(k, second)
        # and a replayed side effect: captured once, never run twice
        once = first.msg("execute_request", {"code": code + "\nimport os\nos.rename("
                                             f"{str(path)!r}, {str(path) + '.1'!r})",
                                             "silent": False, "store_history": False,
                                             "allow_stdin": False})
        once_frames = first.frames(once)
        first.send(once_frames)
        assert first.until_reply(once["header"]["msg_id"])[-1]["content"]["status"] == "ok"
        assert Path(str(path) + ".1").exists()
        second.send(once_frames)
        assert_dropped(k, second)
        assert not path.exists(), "the replayed execute_request ran again"
    finally:
        first.close()
        second.close()


def test_replay_across_channels_is_dropped(k):
    """A message captured on shell is not accepted on control, nor a control one twice."""
    before = k.list_subshells()
    with Raw(k, "shell") as shell, Raw(k, "control") as control:
        msg = shell.msg("kernel_info_request")
        frames = shell.frames(msg)
        shell.send(frames)
        shell.until_reply(msg["header"]["msg_id"])
        control.send(frames)
        assert_dropped(k, control)

        create = control.msg("create_subshell_request")
        create_frames = control.frames(create)
        control.send(create_frames)
        created = control.until_reply(create["header"]["msg_id"])[-1]["content"]
        assert created["status"] == "ok"
        control.send(create_frames)  # replayed: must not create a second subshell
        assert_dropped(k, control)
        shell.send(create_frames)  # nor on shell (where it would be an unknown type anyway)
        assert_dropped(k, shell)
    assert k.list_subshells() == before + [created["subshell_id"]]


# ==================================================================================================
# 2. Malformed frames: unparseable -> dropped; bad parts after a valid header -> error reply
# ==================================================================================================
def _unparseable(raw: Raw, case: str, msg_type: str,
                 code: str = "'never'") -> tuple[list[bytes], str | None]:
    """Frames that cannot be parsed as a message; and a msg_id they mention, if any.

    Where a content part exists it holds ``code``: had the kernel accepted the message as
    an execute_request, the code would run.
    """
    content = {"code": code, "silent": False}
    good = raw.msg(msg_type, content)
    mid = good["header"]["msg_id"]
    d, sig, *parts = raw.frames(good)
    h = valid_header(msg_type)

    def signed(header: bytes) -> list[bytes]:
        return raw.signed(header, content=json.dumps(content).encode())
    if case == "no delimiter":
        return [sig, *parts], mid
    if case == "too few frames":
        return [d, sig, parts[0]], mid
    if case == "only the delimiter":
        return [d], None
    if case == "one empty frame":
        return [b""], None
    if case == "garbage bytes":
        return [os.urandom(1024)], None
    if case == "many garbage frames":
        return [os.urandom(64) for _ in range(20)], None
    if case == "garbage after delimiter":
        return [d, *(os.urandom(40) for _ in range(5))], None
    if case == "header is not JSON":
        return signed(b'{"msg_id": "x", "msg_type": '), None
    if case == "header is not UTF-8":
        return signed(b'{"msg_id": "\xff\xfe", "msg_type": "' + msg_type.encode() + b'"}'), None
    if case == "header is a list":
        return signed(b'["msg_id", "msg_type"]'), None
    if case == "header is a string":
        return signed(b'"execute_request"'), None
    if case == "header is null":
        return signed(b"null"), None
    if case == "header without msg_type":
        del h["msg_type"]
        return signed(json.dumps(h).encode()), h["msg_id"]
    if case == "header without msg_id":
        del h["msg_id"]
        return signed(json.dumps(h).encode()), None
    if case == "msg_type is a number":
        h["msg_type"] = 7
        return signed(json.dumps(h).encode()), h["msg_id"]
    if case == "header with NaN":
        return signed(json.dumps({**h, "x": float("nan")}).encode()), h["msg_id"]
    if case == "header nested 100000 deep":
        return signed(b'{"msg_id": "x", "msg_type": "y", "z": ' + b"[" * 100_000
                          + b"]" * 100_000 + b"}"), None
    if case == "10 MB of garbage":
        return [d, os.urandom(64), os.urandom(10 * 1024 * 1024), b"{}", b"{}", parts[3]], None
    raise ValueError(case)


UNPARSEABLE = [
    "no delimiter", "too few frames", "only the delimiter", "one empty frame", "garbage bytes",
    "many garbage frames", "garbage after delimiter", "header is not JSON", "header is not UTF-8",
    "header is a list", "header is a string", "header is null", "header without msg_type",
    "header without msg_id", "msg_type is a number", "header with NaN",
    "header nested 100000 deep", "10 MB of garbage",
]


@pytest.mark.parametrize("channel", ["shell", "control"])
@pytest.mark.parametrize("case", UNPARSEABLE)
def test_unparseable_message_is_dropped(k, side_effect, channel, case):
    code, path = side_effect
    with Raw(k, channel) as raw:
        msg_type = "execute_request" if channel == "shell" else "shutdown_request"
        frames, mid = _unparseable(raw, case, msg_type, code)
        raw.send(frames)
        assert_dropped(k, raw, mid)
    assert k.is_alive()
    assert not path.exists()


# parts after a valid, signed header: the request is identified, so it is answered with an error
BAD_PARTS = {
    "content is not JSON": {"content": b'{"code": "1'},
    "content is not UTF-8": {"content": b'{"code": "\xff"}'},
    "content is a list": {"content": b'["code", "1"]'},
    "content is null": {"content": b"null"},
    "content with NaN": {"content": b'{"code": "1", "x": NaN}'},
    "content nested 100000 deep": {"content": b'{"code": "1", "x": ' + b"[" * 100_000
                                              + b"]" * 100_000 + b"}"},
    "parent_header is not JSON": {"parent": b"{", "content": b'{"code": "1"}'},
    "metadata is a number": {"metadata": b"42", "content": b'{"code": "1"}'},
}


@pytest.mark.parametrize("case", list(BAD_PARTS))
def test_bad_content_on_shell_gets_an_error_reply(k, side_effect, case):
    code, path = side_effect
    with Raw(k, "shell") as raw:
        h = valid_header("execute_request")
        parts = dict(BAD_PARTS[case])
        parts["content"] = parts["content"].replace(b'"1"', json.dumps(code).encode())
        raw.send(raw.signed(json.dumps(h).encode(), **parts))
        content = assert_error_reply(k, raw, h["msg_id"], "ProtocolError")
        assert content["evalue"]
    assert not path.exists()


@pytest.mark.parametrize("msg_type", ["kernel_info_request", "shutdown_request",
                                      "create_subshell_request"])
@pytest.mark.parametrize("case", list(BAD_PARTS))
def test_bad_content_on_control_gets_an_error_reply(k, case, msg_type):
    before = k.list_subshells()
    with Raw(k, "control") as raw:
        h = valid_header(msg_type)
        raw.send(raw.signed(json.dumps(h).encode(), **BAD_PARTS[case]))
        assert_error_reply(k, raw, h["msg_id"], "ProtocolError")
    assert k.is_alive()  # a shutdown_request whose content cannot be read is not a shutdown
    assert k.list_subshells() == before


def test_bad_content_in_a_subshell_gets_an_error_reply(k, side_effect):
    _code, path = side_effect
    sid = k.create_subshell()
    with Raw(k, "shell") as raw:
        h = valid_header("execute_request", subshell_id=sid)
        raw.send(raw.signed(json.dumps(h).encode(), content=b'{"code": ' + b"[" * 50_000))
        got = raw.until_reply(h["msg_id"])
        assert_error_content(got[-1]["content"], "ProtocolError")
        assert got[-1]["parent_header"]["subshell_id"] == sid
    _, msgs = k.run("'sub ok'", sid)
    assert results(msgs) == ["'sub ok'"]
    assert not path.exists()


def test_unparseable_messages_on_stdin_are_dropped(k):
    with Raw(k, "stdin") as raw:
        for case in ("no delimiter", "garbage bytes", "header is a list", "header without msg_id",
                     "many garbage frames"):
            frames, _ = _unparseable(raw, case, "input_reply")
            raw.send(frames)
        raw.send(_bad_signature_frames(raw, raw.msg("input_reply", {"value": "x"}), "other key"))
        raw.send_msg(raw.msg("input_reply", {"value": "to nobody"}))  # no input() waits
        raw.send_msg(raw.msg("execute_request", {"code": "'wrong channel'"}))
        assert raw.sock.poll(300) == 0
    assert_alive(k)
    # and input() still works afterwards
    mid = k.execute("input('? ')", allow_stdin=True)
    k.input_reply(k.stdin_request(), "typed")
    assert results(k.iopub(mid)) == ["'typed'"]


@pytest.mark.parametrize("parent_msg_id", [["a", "list"], {"a": "dict"}])
def test_input_reply_with_a_malformed_parent_does_not_kill_the_shell_channel(parent_msg_id):
    """Found by this test (fixed in 96e7cb5): an unhashable parent msg_id raised TypeError in
    Stdin.on_reply on the shell-router thread, which Router._drain did not catch; the thread
    died and closed the shell and stdin sockets, while process, heartbeat and control lived
    on, so no shell request was ever answered again."""
    k = KernelHarness("subshell")
    try:
        with Raw(k, "stdin") as raw:
            msg = raw.msg("input_reply", {"value": "x"})
            msg["parent_header"] = {"msg_id": parent_msg_id}
            raw.send_msg(msg)
            time.sleep(0.5)  # delivered before the socket closes (linger 0)
        _, msgs = k.run("'shell still answers'", timeout=3)
        assert results(msgs) == ["'shell still answers'"]
    finally:
        k.close()


def test_extra_buffers_and_unknown_header_fields_are_tolerated(k):
    with Raw(k, "shell") as raw:
        h = valid_header("execute_request", extra_field={"nested": [1, 2]}, date="not a date")
        content = json.dumps({"code": "'with buffers'", "silent": False}).encode()
        raw.send(raw.signed(json.dumps(h).encode(), content=content,
                            buffers=(b"\x00" * 10, os.urandom(1000))))
        got = raw.until_reply(h["msg_id"])
        assert got[-1]["content"]["status"] == "ok"
        assert got[-1]["parent_header"] == h  # echoed exactly as sent


# ==================================================================================================
# 3. Wrong types in content -> error reply (or a well-formed ok), kernel alive
# ==================================================================================================
WRONG_TYPES = [
    ("execute_request", {"code": 123}, "error"),
    ("execute_request", {"code": None}, "error"),
    ("execute_request", {"code": ["1"]}, "error"),
    ("execute_request", {"code": "1", "user_expressions": "x"}, "error"),
    ("complete_request", {"code": "imp", "cursor_pos": "x"}, "error"),
    ("complete_request", {"code": None, "cursor_pos": 1}, "error"),
    ("inspect_request", {"code": "print", "cursor_pos": 3, "detail_level": None}, "error"),
    ("inspect_request", {"code": 5}, "error"),
    ("inspect_request", {"code": "print", "cursor_pos": "a"}, "error"),
    ("history_request", {"hist_access_type": "range", "session": "x"}, "error"),
    ("history_request", {"hist_access_type": 5}, "error"),
    ("is_complete_request", {"code": []}, "error"),
    ("comm_info_request", {"target_name": 5}, "ok"),
    ("kernel_info_request", {"unexpected": [1, {"x": None}]}, "ok"),
]


@pytest.mark.parametrize("msg_type,content,status", WRONG_TYPES,
                         ids=[f"{t}-{json.dumps(c)}" for t, c, _ in WRONG_TYPES])
def test_wrong_types_in_content_get_a_reply(k, msg_type, content, status):
    sid = k.create_subshell()
    for target in (None, sid):  # parent and child subshell alike
        msg_id = k.send(msg_type, content, target)
        rep = k.reply(msg_id, timeout=20)
        assert rep["msg_type"] == msg_type.replace("_request", "_reply")
        if status == "error":
            assert_error_content(rep["content"])
        else:
            assert rep["content"]["status"] == "ok", rep["content"]
        states = [m["content"]["execution_state"] for m in k.iopub(msg_id)
                  if m["msg_type"] == "status"]
        assert states == ["busy", "idle"]
    assert_alive(k)
    assert results(k.run("'sub alive'", sid)[1]) == ["'sub alive'"]


@pytest.mark.parametrize("content", [
    {"hist_access_type": "search", "pattern": "*", "n": "x"},
    {"hist_access_type": "search", "pattern": "*", "n": [1]},
    {"hist_access_type": "tail", "n": "x"},
], ids=["search-n-str", "search-n-list", "tail-n-str"])
def test_wrong_types_in_history_requests_do_not_discard_the_database(content):
    """A non-integer n used to reach SQLite as ``LIMIT ?``: the datatype error made IPython
    declare the history database corrupt and move it aside, and the reply was ok (found
    by these tests; fixed in af37dd1 by type-checking request fields)."""
    k = KernelHarness("subshell")
    try:
        marker = f"hist_marker_{uuid.uuid4().hex[:8]} = 1"
        assert k.run(marker)[0]["content"]["status"] == "ok"
        profile = Path(os.environ["IPYTHONDIR"]) / "profile_default"
        corrupt_before = set(profile.glob("history-corrupt-*"))
        rep = k.reply(k.send("history_request", content), timeout=20)
        corrupt_after = set(profile.glob("history-corrupt-*"))
        assert corrupt_after == corrupt_before, "the history database was moved aside"
        assert_error_content(rep["content"])
        found = k.reply(k.send("history_request", {
            "hist_access_type": "search", "pattern": marker.split()[0] + "*", "output": False}))
        assert [h[2] for h in found["content"]["history"]] == [marker]
    finally:
        k.close()


def test_wrong_types_in_comm_messages_are_survived(k):
    ids = [
        k.send("comm_open", {}),
        k.send("comm_open", {"comm_id": 5, "target_name": ["x"], "data": "not a dict"}),
        k.send("comm_msg", {"comm_id": "no-such-comm", "data": {}}),
        k.send("comm_msg", {"comm_id": [1, 2], "data": None}),
        k.send("comm_close", {"comm_id": {"a": 1}}),
        k.send("comm_close", {}),
    ]
    for msg_id in ids:
        states = [m["content"]["execution_state"] for m in k.iopub(msg_id)
                  if m["msg_type"] == "status"]
        assert states == ["busy", "idle"]
        assert msg_id not in k._replies  # not requests: no reply
    assert_alive(k)


@pytest.mark.parametrize("msg_type,content,ename", [
    ("delete_subshell_request", {"subshell_id": 5}, "UnknownSubshellError"),
    ("delete_subshell_request", {"subshell_id": ["a"]}, "UnknownSubshellError"),
    ("delete_subshell_request", {}, "UnknownSubshellError"),
    ("interrupt_request", {"subshell_id": 5}, "UnknownSubshellError"),
    # found by this test (fixed in 96e7cb5): a list reached dict.get in Subshells.get and the
    # reply was TypeError ("unhashable type"), not UnknownSubshellError (jep/subshells.md section 9)
    ("interrupt_request", {"subshell_id": ["a"]}, "UnknownSubshellError"),
    ("interrupt_request", {"subshell_id": "no-such-subshell"}, "UnknownSubshellError"),
])
def test_wrong_types_on_control_get_an_error_reply(k, msg_type, content, ename):
    rep = k.control(msg_type, content, timeout=10)
    assert_error_content(rep["content"], ename)
    assert_alive(k)


# ==================================================================================================
# 4. Unknown message types and misdirected requests
# ==================================================================================================
def test_unknown_request_in_a_subshell(k):
    sid = k.create_subshell()
    msg_id = k.send("frobnicate_request", {"x": 1}, sid)
    rep = k.reply(msg_id, timeout=10)
    assert rep["msg_type"] == "frobnicate_reply"
    assert_error_content(rep["content"], "UnknownMessageType")
    assert rep["parent_header"]["subshell_id"] == sid
    assert results(k.run("'sub'", sid)[1]) == ["'sub'"]


@pytest.mark.parametrize("channel", ["shell", "control"])
def test_unknown_non_request_gets_status_but_no_reply(k, channel):
    with Raw(k, channel) as raw:
        msg = raw.msg("frobnicate_notice", {"x": 1})
        raw.send_msg(msg)
        msgs = k.iopub(msg["header"]["msg_id"], timeout=10)
        states = [m["content"]["execution_state"] for m in msgs if m["msg_type"] == "status"]
        assert states == ["busy", "idle"]
        assert_dropped(k, raw)  # no reply came before the probe's


def test_kernel_log_records_are_not_published_to_frontends(k):
    """Found by this test (fixed in 96e7cb5): the kernel's module loggers had no handler, so
    logging.lastResort wrote their records to sys.stderr, the kernel's OutStream: every
    dropped message was broadcast on iopub as a stderr stream with an empty parent, and
    unknown types and handler tracebacks appeared as the request's stderr."""
    with Raw(k, "shell") as shell, Raw(k, "control") as control:
        shell.send([b"garbage"])
        msg = shell.msg("execute_request", {"code": "1"})
        frames = shell.frames(msg)
        frames[1] = b"0" * 64
        shell.send(frames)
        notice = shell.send_msg(shell.msg("frobnicate_notice"))
        control.send([b"garbage"])
        assert_dropped(k, shell)
        assert_dropped(k, control)
    k.iopub(notice)
    leaked = [(parent, m["content"]["text"]) for parent, msgs in list(k._iopub.items())
              for m in msgs if m["msg_type"] == "stream"
              and ("dropped a" in m["content"]["text"]
                   or "unknown shell message type" in m["content"]["text"])]
    assert leaked == []


def test_control_only_request_on_shell_is_an_error(k):
    before = k.list_subshells()
    for msg_type in ("create_subshell_request", "list_subshell_request", "interrupt_request"):
        rep = k.reply(k.send(msg_type, {}), timeout=10)
        assert_error_content(rep["content"], "UnknownMessageType")
    assert k.list_subshells() == before
    assert_alive(k)


def test_shell_only_request_on_control_is_an_error_and_not_run(k, side_effect):
    code, path = side_effect
    with Raw(k, "control") as raw:
        msg = raw.msg("execute_request", {"code": code, "silent": False})
        raw.send_msg(msg)
        assert_error_reply(k, raw, msg["header"]["msg_id"], "UnknownMessageType")
    assert not path.exists()


# ==================================================================================================
# 5. subshell_id in the header
# ==================================================================================================
@pytest.mark.parametrize("bad_id", [5, 0, ["x"], {"id": "x"}, True, 1.5])
def test_subshell_id_of_wrong_type_is_dropped(k, side_effect, bad_id):
    code, path = side_effect
    with Raw(k, "shell") as raw:
        msg = raw.msg("execute_request", {"code": code, "silent": False}, subshell_id=bad_id)
        raw.send_msg(msg)
        assert_dropped(k, raw, msg["header"]["msg_id"])
    assert not path.exists()


@pytest.mark.parametrize("bad_id", ["", "no-such-subshell", "x" * 10_000])
@pytest.mark.parametrize("msg_type", ["execute_request", "kernel_info_request",
                                      "complete_request"])
def test_unknown_subshell_id_gets_subshell_not_found(k, side_effect, bad_id, msg_type):
    code, path = side_effect
    msg_id = k.send(msg_type, {"code": code, "silent": False}, bad_id)
    rep = k.reply(msg_id, timeout=10)
    assert rep["msg_type"] == msg_type.replace("_request", "_reply")
    assert_error_content(rep["content"], "UnknownSubshellError")
    assert rep["parent_header"]["subshell_id"] == bad_id
    states = [m["content"]["execution_state"] for m in k.iopub(msg_id)
              if m["msg_type"] == "status"]
    assert states == ["busy", "idle"]
    assert_alive(k)
    assert not path.exists()


def test_null_subshell_id_means_the_parent(k):
    msg = k.session.msg("execute_request", {"code": "import threading\n"
                                                    "threading.current_thread().name"})
    msg["header"]["subshell_id"] = None
    k.kc.shell_channel.send(msg)
    rep = k.reply(msg["header"]["msg_id"])
    assert rep["content"]["status"] == "ok"
    assert results(k.iopub(msg["header"]["msg_id"])) == ["'MainThread'"]


def test_subshell_id_on_control_header(k):
    """Control is not routed: a string subshell_id has no effect; a malformed one (not a
    string) makes the header malformed, and the message is dropped as on shell."""
    with Raw(k, "control") as raw:
        msg = raw.msg("kernel_info_request", subshell_id="no-such-subshell")
        raw.send_msg(msg)
        assert raw.until_reply(msg["header"]["msg_id"])[-1]["content"]["status"] == "ok"
        msg = raw.msg("shutdown_request", {"restart": False}, subshell_id=5)
        raw.send_msg(msg)
        assert_dropped(k, raw, msg["header"]["msg_id"])
    assert k.is_alive()


# ==================================================================================================
# 6. Very large messages
# ==================================================================================================
TEN_MB = 10 * 1024 * 1024


def test_ten_megabyte_code(k):
    sid = k.create_subshell()
    for target in (None, sid):
        code = "# " + "x" * TEN_MB + "\n'after the comment'"
        rep, msgs = k.run(code, target, timeout=60, store_history=False)
        assert rep["content"]["status"] == "ok", rep["content"]
        assert results(msgs) == ["'after the comment'"]
        echoed = [m for m in msgs if m["msg_type"] == "execute_input"]
        assert len(echoed[0]["content"]["code"]) == len(code)
    assert_alive(k)


def test_ten_megabyte_content_field_and_buffer(k):
    rep, _ = k.run("'small code'", timeout=60, padding="p" * TEN_MB)
    assert rep["content"]["status"] == "ok"
    with Raw(k, "shell") as raw:
        h = valid_header("execute_request")
        raw.send(raw.signed(json.dumps(h).encode(),
                            content=json.dumps({"code": "'with a buffer'"}).encode(),
                            buffers=(os.urandom(TEN_MB),)))
        assert raw.until_reply(h["msg_id"], timeout=60)[-1]["content"]["status"] == "ok"
        # 10 MB that cannot be parsed, validly signed: an error reply, not a crash
        h = valid_header("execute_request")
        raw.send(raw.signed(json.dumps(h).encode(), content=b'{"code": "' + b"y" * TEN_MB))
        assert_error_reply(k, raw, h["msg_id"], "ProtocolError")


def test_ten_megabyte_output(k):
    rep, msgs = k.run("import sys\nsys.stdout.write('z' * (10 * 1024 * 1024))\n"
                      "sys.stdout.write('\\nend\\n')", timeout=60)
    assert rep["content"]["status"] == "ok"
    text = stream_text(msgs)
    assert len(text) == TEN_MB + 5 and text.endswith("\nend\n")
    assert_alive(k)


# ==================================================================================================
# 7. User code that misbehaves
# ==================================================================================================
@pytest.mark.parametrize("code", [
    "import sys\nsys.exit()",
    "raise SystemExit(3)",
    "import sys\nsys.exit('bye')",
    "import asyncio\nawait asyncio.sleep(0)\nraise SystemExit(3)",
])
def test_system_exit_in_a_subshell_and_in_an_await_cell(k, code):
    sid = k.create_subshell()
    k.run("'first cell starts the history thread'", sid)
    threads = k.threads()
    for target in (sid, None):
        rep, _ = k.run(code, target, timeout=20)
        assert rep["content"]["status"] == "error", rep["content"]
        assert rep["content"]["ename"] == "SystemExit"
        assert k.is_alive()
    assert results(k.run("'sub'", sid)[1]) == ["'sub'"]
    assert k.threads() == threads  # the subshell's thread survived
    assert_alive(k)


@pytest.mark.parametrize("where", ["child", "parent"])
def test_system_exit_in_a_comm_handler_keeps_the_subshell(where):
    """Found by this test (fixed in 96e7cb5): SystemExit from a comm handler (a widget
    callback calling sys.exit(), argparse failing in a callback) escaped Subshell._handle,
    which caught only Exception and KeyboardInterrupt, and ended that subshell's loop: later
    requests got UnknownSubshellError, and for the parent the process exited with status 1."""
    k = KernelHarness("subshell")
    try:
        sid = k.create_subshell() if where == "child" else None
        rep, _ = k.run("import sys\n"
                       "def _exit_target(comm, msg):\n"
                       "    comm.on_msg(lambda m: sys.exit('from a comm handler'))\n"
                       "get_ipython().kernel.comm_manager.register_target('exiter', "
                       "_exit_target)")
        assert rep["content"]["status"] == "ok"
        comm_id = uuid.uuid4().hex
        k.iopub(k.send("comm_open", {"comm_id": comm_id, "target_name": "exiter", "data": {}}))
        k.iopub(k.send("comm_msg", {"comm_id": comm_id, "data": {}}, sid), timeout=10)
        time.sleep(0.3)
        assert k.is_alive(), f"exit status {k.km.provisioner.process.poll()}"
        rep, _ = k.run("'subshell alive'", sid, timeout=5)
        assert rep["content"]["status"] == "ok", rep["content"]
    finally:
        k.close()


def test_exception_in_a_comm_handler_is_contained(k):
    sid = k.create_subshell()
    rep, _ = k.run("def _raise_target(comm, msg):\n"
                   "    comm.on_msg(lambda m: 1 / 0)\n"
                   "get_ipython().kernel.comm_manager.register_target('raiser', _raise_target)")
    assert rep["content"]["status"] == "ok"
    comm_id = uuid.uuid4().hex
    k.iopub(k.send("comm_open", {"comm_id": comm_id, "target_name": "raiser", "data": {}}))
    for target in (sid, None):
        k.iopub(k.send("comm_msg", {"comm_id": comm_id, "data": {}}, target))
        assert results(k.run("'alive'", target)[1]) == ["'alive'"]


def test_exit_and_quit_in_a_subshell_only_ask_the_frontend(k):
    sid = k.create_subshell()
    for code in ("exit()", "quit()", "exit"):
        rep, _ = k.run(code, sid)
        assert rep["content"]["status"] == "ok"
        assert {"source": "ask_exit", "keepkernel": False} in rep["content"]["payload"]
    assert sid in k.list_subshells()
    assert results(k.run("'still here'", sid)[1]) == ["'still here'"]


@pytest.mark.parametrize("replacement", ["None", "io.StringIO()", "open(os.devnull, 'w')"])
def test_replaced_sys_stdout(k, replacement):
    """User code may replace sys.stdout/sys.stderr.  The kernel keeps working (results,
    errors and displays do not go through sys.stdout); what is printed to the
    replacement goes where the user sent it, not to the frontend; putting the saved
    stream back restores printing."""
    try:
        rep, _ = k.run(f"import io, os, sys\n_saved_streams = sys.stdout, sys.stderr\n"
                       f"sys.stdout = {replacement}\nsys.stderr = {replacement}")
        assert rep["content"]["status"] == "ok"
        rep, msgs = k.run("print('lost line')\n'result still shown'")
        assert rep["content"]["status"] == "ok"
        assert results(msgs) == ["'result still shown'"]
        assert "lost line" not in stream_text(msgs)
        rep, msgs = k.run("from IPython.display import display\ndisplay('shown')\n"
                          "raise ValueError('error still shown')")
        assert rep["content"]["ename"] == "ValueError"
        assert [m["msg_type"] for m in msgs if m["msg_type"] in ("display_data", "error")] == \
            ["display_data", "error"]
        sid = k.create_subshell()
        assert results(k.run("'sub ok'", sid)[1]) == ["'sub ok'"]
        assert k.control("kernel_info_request")["content"]["status"] == "ok"
    finally:
        k.run("sys.stdout, sys.stderr = _saved_streams")
    rep, msgs = k.run("print('printing again')")
    assert stream_text(msgs) == "printing again\n"


def test_printing_to_sys_dunder_stdout_reaches_the_frontend_through_fd1(fd_kernel):
    """``sys.__stdout__`` writes to file descriptor 1, which the kernel captures."""
    k = fd_kernel
    _, msgs = k.run("import sys, time\nprint('via dunder', file=sys.__stdout__, flush=True)\n"
                      "time.sleep(0.3)")
    assert "via dunder\n" in stream_text(msgs)


def test_closing_sys_stdout_and_stderr_does_not_stop_output(k):
    rep, msgs = k.run("import sys\nsys.stdout.close()\nsys.stderr.close()\n"
                      "print('same cell')\nprint('err', file=sys.stderr)")
    assert rep["content"]["status"] == "ok", rep["content"]
    assert stream_text(msgs) == "same cell\n" and stream_text(msgs, "stderr") == "err\n"
    rep, msgs = k.run("print('later cell')\nsys.stdout.closed")
    assert stream_text(msgs) == "later cell\n"
    assert results(msgs) == ["False"]


def test_thread_printing_after_its_cell_ended(k):
    """Output of a thread goes to the cell that started it, also while a later cell of the
    same subshell runs, and also after the subshell that started it was deleted."""
    sid = k.create_subshell()
    start = (
        "import threading, time\n"
        "def _late(tag, delay):\n"
        "    time.sleep(delay)\n"
        "    print(tag, 'late line')\n"
        "threading.Thread(target=_late, args=({tag!r}, {delay})).start()\n"
    )
    first = k.execute(start.format(tag="parent", delay=0.5))
    in_sub = k.execute(start.format(tag="sub", delay=1.0), sid)
    assert k.reply(first)["content"]["status"] == "ok"
    assert k.reply(in_sub)["content"]["status"] == "ok"
    k.iopub(first), k.iopub(in_sub)
    busy = k.execute("import time\ntime.sleep(1.0)\nprint('busy cell')")  # the parent's next cell
    assert k.delete_subshell(sid)["status"] == "ok"  # before its thread prints
    k.reply(busy, timeout=10)
    k.iopub(busy)
    deadline = time.monotonic() + 5
    while not ("late line" in k.stdout(first) and "late line" in k.stdout(in_sub)):
        assert time.monotonic() < deadline, (k.stdout(first), k.stdout(in_sub))
        k._pump(0.02)
    assert k.stdout(first) == "parent late line\n"
    assert k.stdout(in_sub) == "sub late line\n"
    assert k.stdout(busy) == "busy cell\n"
    assert_alive(k)


@pytest.mark.parametrize("code,ename", [
    ("def f(): f()\nf()", "RecursionError"),
    ("import asyncio\nasync def g(): await g()\nawait g()", "RecursionError"),
    ("import json\nl = []\nfor _ in range(100000):\n    l = [l]\njson.dumps(l)", "RecursionError"),
    (("from IPython.display import display\nl = []\nfor _ in range(100000):\n    l = [l]\n"
      "display({'application/json': {'x': l}}, raw=True)"), "RecursionError"),
])
def test_deep_recursion(k, code, ename):
    sid = k.create_subshell()
    for target in (None, sid):
        rep, msgs = k.run(code, target, timeout=60)
        assert rep["content"]["status"] == "error", rep["content"]
        assert rep["content"]["ename"] == ename
        assert [m["content"]["ename"] for m in msgs if m["msg_type"] == "error"] == [ename]
    assert results(k.run("'sub'", sid)[1]) == ["'sub'"]
    assert_alive(k)


def test_unprintable_results_do_not_break_the_kernel(k):
    code = ("class Evil:\n"
            "    def __repr__(self): return repr(self)\n"
            "    def _repr_html_(self): raise RuntimeError('no html')\n"
            "Evil()")
    rep, _ = k.run(code, timeout=30)
    assert rep["content"]["status"] in ("ok", "error")
    rep, _ = k.run("l = []\nfor _ in range(100000):\n    l = [l]\nl", timeout=30)
    assert rep["content"]["status"] in ("ok", "error")
    assert_alive(k)


def test_sigint_burst_between_cells_is_harmless(fresh_kernel):
    k = fresh_kernel
    sid = k.create_subshell()
    assert k.run("1")[0]["content"]["status"] == "ok"
    for i in range(10):
        k.km.interrupt_kernel()  # SIGINT while every subshell is idle
        time.sleep(0.02)
        if i % 3 == 0:
            k.control("interrupt_request")
    time.sleep(0.3)
    assert k.is_alive()
    for target in (None, sid):
        rep, _ = k.run("import time\ntime.sleep(0.3)\n'after the burst'", target)
        assert rep["content"]["status"] == "ok", rep["content"]
        rep, _ = k.run("import asyncio\nawait asyncio.sleep(0.3)\n'await ok'", target)
        assert rep["content"]["status"] == "ok", rep["content"]
    assert_alive(k)


def test_c_level_writes_are_forwarded(fd_kernel):
    k = fd_kernel
    sid = k.create_subshell()
    code = (
        "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None)\n"
        "os.write(1, b'fd1 line\\n')\n"
        "os.write(2, b'fd2 line\\n')\n"
        "os.system('echo hi from a subprocess')\n"
        "libc.puts(b'from puts')\n"
        "libc.fflush(None)\n"
        "time.sleep(0.5)\n"
    )
    for target in (None, sid):
        rep, msgs = k.run(code, target)
        assert rep["content"]["status"] == "ok", rep["content"]
        out = stream_text(msgs)
        for line in ("fd1 line\n", "hi from a subprocess\n", "from puts\n"):
            assert out.count(line) == 1, (line, out)
        assert stream_text(msgs, "stderr") == "fd2 line\n"


def test_large_and_invalid_utf8_fd_output(fd_kernel):
    k = fd_kernel
    rep, msgs = k.run(
        "import os, time\n"
        "for i in range(1000):\n"
        "    os.write(1, b'%04d ' % i + b'.' * 995 + b'\\n')\n"
        "os.write(2, b'bad \\xff\\xfe bytes\\n')\n"
        "time.sleep(0.5)\n", timeout=30)
    assert rep["content"]["status"] == "ok"
    lines = stream_text(msgs).splitlines()
    assert [int(line[:4]) for line in lines] == list(range(1000))
    assert stream_text(msgs, "stderr") == "bad \ufffd\ufffd bytes\n"


@pytest.mark.parametrize("how", ["message", "signal"])
def test_await_cell_that_never_yields_again_is_interrupted_trio(trio_kernel, how):
    k = trio_kernel
    sid = k.create_subshell()
    try:
        k.run("raise ValueError('warm up the traceback formatter')")
        code = "import trio\nawait trio.sleep(0)\nprint('started', flush=True)\n" + SPIN
        ids = [k.execute(code), k.execute(code, sid)]
        for mid in ids:
            wait_printed(k, mid, "started")
        time.sleep(0.3)
        t0 = time.monotonic()
        if how == "message":
            k.control("interrupt_request")
        else:
            k.km.interrupt_kernel()
        for mid in ids:
            assert_error_content(k.reply(mid, timeout=5)["content"], "KeyboardInterrupt")
        assert time.monotonic() - t0 < 5
        for target in (None, sid):
            assert results(k.run("await trio.sleep(0.1)\n'fine'", target)[1]) == ["'fine'"]
    finally:
        k.delete_subshell(sid)


def test_await_cell_that_never_yields_again_is_interrupted_by_signal(fresh_kernel):
    k = fresh_kernel
    k.run("raise ValueError('warm up the traceback formatter')")
    mid = k.execute("import asyncio\nawait asyncio.sleep(0)\nprint('started', flush=True)\n"
                    + SPIN)
    wait_printed(k, mid, "started")
    time.sleep(0.3)
    t0 = time.monotonic()
    k.km.interrupt_kernel()
    assert_error_content(k.reply(mid, timeout=5)["content"], "KeyboardInterrupt")
    assert time.monotonic() - t0 < 5
    assert_alive(k)


# ==================================================================================================
# 8. Faults: reconnect, heartbeat under load, shutdown and SIGTERM while busy
# ==================================================================================================
def _reconnect(k: KernelHarness, same_identity: bool) -> None:
    """Drop the harness's client and connect a new one from the connection info."""
    old_session = k.session.bsession

    def new_client():
        if same_identity:  # jupyter_client's default: the manager's session, same zmq identity
            kc = k.km.client()
            # a copy of the manager's session: same id, but its msg_id counter starts again
            # at 0; skip the ids the first client used (the kernel does not care, we do)
            kc.session.message_count = 1_000_000
        else:
            kc = BlockingKernelClient()
            kc.load_connection_info(k.km.get_connection_info())
            assert kc.session.bsession != old_session
        return kc

    k.replace_client(new_client)


@pytest.mark.parametrize("same_identity", [True, False], ids=["same-session", "new-session"])
def test_client_reconnects_while_subshells_are_busy(fresh_kernel, same_identity):
    k = fresh_kernel
    sid = k.create_subshell()
    before = [k.execute("import time\ntime.sleep(2)\n'parent before'"),
              k.execute("import time\ntime.sleep(2)\n'sub before'", sid)]
    for mid in before:
        wait_started(k, mid)
    _reconnect(k, same_identity)
    time.sleep(0.3)  # let the new iopub subscription settle; the cells still run
    after = [k.execute("'parent after'"), k.execute("'sub after'", sid),
             k.send("kernel_info_request", {}, sid)]
    for mid, expected in zip(after, ["'parent after'", "'sub after'", None]):
        rep = k.reply(mid, timeout=15)
        assert rep["content"]["status"] == "ok"
        msgs = k.iopub(mid, timeout=5)
        if expected:
            assert results(msgs) == [expected]
    for mid, expected in zip(before, ["'parent before'", "'sub before'"]):
        # the new client sees the outputs of the requests sent before it connected
        assert results(k.iopub(mid, timeout=5)) == [expected]
    # replies go to the zmq identity that sent the request: the same session gets them
    got_old_replies = [mid in k._replies for mid in before]
    assert got_old_replies == ([True, True] if same_identity else [False, False])
    assert results(k.run("'new requests work'")[1]) == ["'new requests work'"]
    assert k.control("kernel_info_request")["content"]["status"] == "ok"


@pytest.mark.parametrize("hog", ["python-loop", "c-call-holding-the-gil"])
def test_heartbeat_answers_while_a_cell_holds_the_gil(k, hog):
    code = {
        "python-loop": "import time\nprint('started', flush=True)\n_t0 = time.monotonic()\n"
                       "while time.monotonic() - _t0 < 3:\n    pass\n",
        "c-call-holding-the-gil": "import time\nprint('started', flush=True)\n"
                                  "_t0 = time.monotonic()\n"
                                  "while time.monotonic() - _t0 < 3:\n"
                                  "    sum(range(30_000_000))\n",
    }[hog]
    info = k.km.get_connection_info()
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"{info['transport']}://{info['ip']}:{info['hb_port']}")
    try:
        mid = k.execute(code)
        wait_printed(k, mid, "started")
        started = time.monotonic()
        latencies = []
        for i in range(6):
            payload = b"ping-%d" % i
            t0 = time.monotonic()
            sock.send(payload)
            assert sock.poll(1000), f"no heartbeat echo within 1 s (ping {i})"
            assert sock.recv() == payload
            latencies.append(time.monotonic() - t0)
            time.sleep(0.3)
        assert time.monotonic() - started < 3.0  # every ping was answered during the cell
        assert k.reply(mid, timeout=20)["content"]["status"] == "ok"
        print(f"heartbeat latencies during {hog}: " + ", ".join(f"{x * 1000:.1f} ms"
                                                              for x in latencies))
    finally:
        sock.close()


def test_shutdown_while_parent_and_two_subshells_run(fresh_kernel):
    """Parent in an await, one subshell in input(), one blocked in a C call: exit 0 in 2 s,
    with a reply for the shutdown and for every cell that could be interrupted."""
    k = fresh_kernel
    k.run("raise ValueError('warm up the traceback formatter')")
    waiting, sleeping = k.create_subshell(), k.create_subshell()
    parent = k.execute("import asyncio\nprint('started', flush=True)\nawait asyncio.sleep(60)")
    in_input = k.execute("input('?')", waiting, allow_stdin=True)
    in_c = k.execute("import time\nprint('started', flush=True)\ntime.sleep(60)", sleeping)
    wait_printed(k, parent, "started")
    wait_printed(k, in_c, "started")
    k.stdin_request(timeout=10)
    time.sleep(0.2)
    msg = k.session.msg("shutdown_request", {"restart": False})
    t0 = time.monotonic()
    k.kc.control_channel.send(msg)
    status, elapsed = exit_status_within(k, 5, t0)
    assert status == 0 and elapsed < 2.0, (status, elapsed)
    shutdown_reply = k.kc.control_channel.get_msg(timeout=2)
    assert shutdown_reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    assert shutdown_reply["content"] == {"status": "ok", "restart": False}
    for mid in (parent, in_input):
        assert k.reply(mid, timeout=2)["content"]["status"] in ("error", "aborted")
    # the cell blocked in time.sleep in a child subshell cannot be stopped before the
    # watchdog ends the process: its reply is not promised


def test_a_hung_shutdown_is_ended_by_the_watchdog_and_says_so(tmp_path):
    """A parent cell that blocks SIGINT cannot be stopped: the watchdog ends the process
    1.8 s after the shutdown request.  It used to exit with status 0, so a hung shutdown
    looked clean to every test; now it logs and exits with status 3, and the clean-shutdown
    tests (which require status 0) fail whenever it was the watchdog that did the work."""
    log_path = tmp_path / "kernel.log"
    with open(log_path, "w") as log:
        kern = KernelHarness("subshell", stderr=log)
    try:
        mid = kern.execute("import signal, time\n"
                           "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
                           "print('started', flush=True)\ntime.sleep(30)")
        wait_printed(kern, mid, "started")
        t0 = time.monotonic()
        kern.kc.control_channel.send(kern.session.msg("shutdown_request", {"restart": False}))
        status, elapsed = exit_status_within(kern, 5, t0)
        assert status == 3 and 1.7 < elapsed < 3.0, (status, elapsed)
        assert "watchdog ends the process" in log_path.read_text()
    finally:
        kern.close()


SIGTERM_CASES = {
    "idle": ("", None),
    "subshell busy": ("import time\nprint('started', flush=True)\ntime.sleep(60)", "sub"),
    "parent awaiting": (("import asyncio\nprint('started', flush=True)\n"
                         "await asyncio.sleep(60)"), None),
    "parent in time.sleep": ("import time\nprint('started', flush=True)\ntime.sleep(60)", None),
    "parent spinning": ("print('started', flush=True)\n" + SPIN, None),
}
@pytest.mark.parametrize("case", list(SIGTERM_CASES))
def test_sigterm_exits_cleanly(fresh_kernel, case):
    """Found by this test (fixed in 96e7cb5): SIGTERM while the parent ran blocking code
    never exited. _on_sigterm -> request_shutdown -> parent.stop() -> Subshell.interrupt()
    raised KeyboardInterrupt inside the signal handler (the parent runs on the main thread),
    before the stop was queued and before the exit watchdog was started."""
    k = fresh_kernel
    code, where = SIGTERM_CASES[case]
    sid = k.create_subshell()
    k.create_subshell()
    assert k.run("1")[0]["content"]["status"] == "ok"
    if code:
        mid = k.execute(code, sid if where == "sub" else None)
        wait_printed(k, mid, "started")
        time.sleep(0.2)
    t0 = time.monotonic()
    os.kill(k.pid, signal.SIGTERM)
    status, elapsed = exit_status_within(k, 4, t0)
    assert status == 0 and elapsed < 2.0, f"exit status {status} after {elapsed:.2f} s"


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kernel_exits_when_its_launcher_dies():
    """jupyter_client sets JPY_PARENT_PID; an orphaned kernel must not run forever."""
    launcher = subprocess.Popen(
        [sys.executable, "-c",
         "import time\n"
         "from jupyter_client.manager import KernelManager\n"
         "km = KernelManager(kernel_name='subshell'); km.start_kernel()\n"
         "kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=60)\n"
         "print(km.provisioner.process.pid, flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        kernel_pid = int(launcher.stdout.readline())
        launcher.kill()
        launcher.wait(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(kernel_pid):
            time.sleep(0.1)
        alive = _running(kernel_pid)
        if alive:
            os.kill(kernel_pid, signal.SIGKILL)
        assert not alive, "the kernel outlived its launcher by 10 s"
    finally:
        if launcher.poll() is None:
            launcher.kill()
