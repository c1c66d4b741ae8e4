"""The control socket's C reader (``transport/native_control.py``, ``_native_control.c``).

Unit tests of its pure parts against the standard library (HMAC-SHA256, the
header check), then the wire: a kernel whose control ``kernel_info`` is
answered in C gives the same reply and statuses as in Python, answers while a
C call holds the GIL (the Python reader does not: checked too, so the test
fails without the C reader), drops a replayed request and leaves every
message it is not sure of to Python.
"""

from __future__ import annotations

import hmac
import json
import queue
import secrets
import time
from hashlib import sha256

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subshell_kernel.core.protocol import ReplayHistory
from subshell_kernel.transport import native_control

from .harness import KernelHarness, skip_unless_strict

if not native_control.compiled():
    skip_unless_strict("the C part (subshell_kernel/transport/_native_control.c) is not built",
                       allow_module_level=True)

from subshell_kernel.transport import _native_control as c  # noqa: E402

PYTHON_READER = ["--SubshellKernel.native_control=False"]
#: a cell that holds the GIL for 3 s in C (``ctypes.PyDLL`` calls keep the GIL)
HOLD_GIL = "import ctypes; ctypes.PyDLL(None).usleep(3_000_000)"
#: until the control socket's first quiet moment (``Control.QUIET_MS``) and the warm-up
#: that follows it, the control thread returns to Python between messages; from then on
#: it waits in the C reader for good
SETTLE = 1.0


# -- the pure parts ----------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.binary(max_size=300), max_size=5))
def test_hmac_is_the_standard_librarys(key, parts):
    expected = hmac.new(key, b"".join(parts), sha256).hexdigest().encode()
    assert c.hmac_sha256_hex(key, parts) == expected


ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(ascii_text, st.one_of(ascii_text, st.integers(), st.none(),
                                               st.lists(ascii_text, max_size=2)), max_size=6),
       st.sampled_from(["kernel_info_request", "shutdown_request", "kernel_info_requestx"]),
       st.booleans(), st.sampled_from(["", " ", "\n"]))
def test_the_header_check_agrees_with_json(fields, msg_type, with_id, space):
    header = dict(fields)
    header["msg_type"] = msg_type
    if with_id:
        header["msg_id"] = "abc"
    raw = (space + json.dumps(header) + space).encode()
    kind = c.classify_header(raw)
    parsed = json.loads(raw)
    # the C check takes a flat object of ASCII strings whose keys need no escapes
    sure = ("msg_id" in parsed and "subshell_id" not in parsed
            and all(isinstance(v, str) for v in parsed.values())
            and not any('"' in key or "\\" in key for key in parsed))
    if not sure:
        assert kind == 0
    else:
        assert kind == (1 if msg_type == "kernel_info_request" else 2)


@pytest.mark.parametrize("raw", [
    b'{"msg_id": "a", "msg_type": "kernel\\u005finfo_request"}',  # an escape: Python decides
    b'{"msg_id": "a", "msg_type": "kernel_info_request", "msg_type": "x"}',  # duplicate
    b'{"msg_id": "a", "msg_type": "kernel_info_request",}',  # not JSON
    b'{"msg_id": "a", "msg_type": "kernel_info_request"} x',
    b'{"msg_id": "a", "msg_type": "kernel_info_request", "username": "j\xc3\xb6rg"}',
    b'{"msg_id": "a", "msg_type": "kernel_info_request", "subshell_id": "s"}',
    b'{"msg_id": "a", "msg_type": "kernel_info_request", "date": "\\x"}',
    b'{"msg_id": "a", "msg_type": "kernel_info_request", "t": "\t"}',
    b'{"msg_id": "a", "msg_type": "kernel_info_request"',
    b'["msg_id", "msg_type"]',
    b'',
])
def test_headers_it_is_not_sure_of_go_to_python(raw):
    assert c.classify_header(raw) == 0


def test_the_replay_history_keeps_the_last_65536_signatures_like_pythons():
    size = ReplayHistory.SIZE
    signatures = [secrets.token_hex(32).encode() for _ in range(size + 5000)]
    for history in (c.ReplayHistory(), ReplayHistory()):
        assert all(history.add(sig) for sig in signatures)
        assert not any(history.add(sig) for sig in signatures[-size:])  # remembered
        assert all(history.add(sig) for sig in signatures[:100])  # forgotten, oldest first
    with pytest.raises(ValueError):
        c.ReplayHistory().add(b"not hex")


def test_a_plain_kernel_info_header_is_taken():
    raw = (b'{"msg_id": "1", "msg_type": "kernel_info_request", "username": "u", '
           b'"session": "s", "date": "2026-12-01T00:00:00.000000Z", "version": "5.5"}')
    assert c.classify_header(raw) == 1


# -- the wire ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def native():
    k = KernelHarness("subshell")
    yield k
    k.close()


def _control_reply(k: KernelHarness, msg: dict, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            reply = k.kc.control_channel.get_msg(timeout=remaining)
        except queue.Empty:
            return None
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply
    return None


def _statuses(k: KernelHarness, msg_id: str) -> list[str]:
    k.iopub(msg_id, timeout=10)
    return [m["content"]["execution_state"] for m in k._iopub[msg_id]
            if m["msg_type"] == "status"]


def test_the_reply_and_statuses_are_those_of_the_python_reader(native):
    python = KernelHarness("subshell", extra_arguments=PYTHON_READER)
    try:
        replies = {}
        for name, k in (("c", native), ("python", python)):
            k.run("pass")
            reply = k.control("kernel_info_request")
            assert _statuses(k, reply["parent_header"]["msg_id"]) == ["busy", "idle"]
            replies[name] = reply
        c_reply, py_reply = replies["c"], replies["python"]
        assert c_reply["content"] == py_reply["content"]
        assert c_reply["content"]["status"] == "ok"
        assert c_reply["metadata"].keys() == py_reply["metadata"].keys() == {"started"}
        for reply in (c_reply, py_reply):
            header = reply["header"]
            assert header["msg_type"] == "kernel_info_reply"
            assert header["version"] == "5.5"
            assert header["username"] == "kernel"
        assert c_reply["header"].keys() == py_reply["header"].keys()
        # the kernel's session: the same one as its other messages
        shell_reply, _ = native.run("1")
        assert c_reply["header"]["session"] == shell_reply["header"]["session"]
    finally:
        python.close()


def test_kernel_info_is_answered_while_a_c_call_holds_the_gil(native):
    native.run("pass")
    time.sleep(SETTLE)
    cell = native.execute(HOLD_GIL)
    time.sleep(0.5)  # the cell holds the GIL now
    msg = native.session.msg("kernel_info_request", {})
    start = time.monotonic()
    native.kc.control_channel.send(msg)
    reply = _control_reply(native, msg, 2.0)
    assert reply is not None, "no control kernel_info_reply while the GIL was held"
    assert time.monotonic() - start < 1.0
    assert reply["content"]["status"] == "ok"
    assert native.reply(cell, timeout=10)["content"]["status"] == "ok"
    assert _statuses(native, msg["header"]["msg_id"]) == ["busy", "idle"]


def test_the_python_reader_waits_for_the_gil():
    """What the C reader is for: without it the same request waits for the cell."""
    k = KernelHarness("subshell", extra_arguments=PYTHON_READER)
    try:
        k.run("pass")
        time.sleep(SETTLE)
        cell = k.execute(HOLD_GIL)
        time.sleep(0.5)
        msg = k.session.msg("kernel_info_request", {})
        k.kc.control_channel.send(msg)
        assert _control_reply(k, msg, 1.0) is None
        assert _control_reply(k, msg, 10) is not None  # once the cell lets the GIL go
        k.reply(cell, timeout=10)
    finally:
        k.close()


def test_a_replayed_request_is_dropped(native):
    msg = native.session.msg("kernel_info_request", {})
    frames = native.session.serialize(msg)  # signed once, sent twice
    socket = native.kc.control_channel.socket
    socket.send_multipart(frames)
    assert _control_reply(native, msg, 5) is not None
    socket.send_multipart(frames)
    assert _control_reply(native, msg, 1.0) is None
    assert native.control("kernel_info_request")["content"]["status"] == "ok"


def test_what_it_is_not_sure_of_is_answered_in_python(native):
    # content that is not {}: the C reader leaves it to Python, which gives the same reply
    msg = native.session.msg("kernel_info_request", {"extra": 1})
    native.kc.control_channel.send(msg)
    reply = _control_reply(native, msg, 5)
    assert reply is not None and reply["content"]["status"] == "ok"
    assert reply["content"] == native.control("kernel_info_request")["content"]
    # a bad signature: dropped (by Python, which logs it), and the kernel answers on
    socket = native.kc.control_channel.socket
    bad = native.session.msg("kernel_info_request", {})
    frames = native.session.serialize(bad)
    frames[1] = b"0" * 64
    socket.send_multipart(frames)
    assert _control_reply(native, bad, 1.0) is None
    # another request type goes to Python as before
    assert native.control("list_subshell_request")["content"]["status"] == "ok"
    assert native.control("kernel_info_request")["content"]["status"] == "ok"
