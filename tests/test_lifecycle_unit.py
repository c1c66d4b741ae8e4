"""The request lifecycle (``core.lifecycle``), sans IO: a recording outbox, no sockets."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jupyter_client.session import Session

from subshell_kernel.core.lifecycle import TRANSITIONS, Cycle, LifecycleError, Outbox, Phase
from subshell_kernel.core.protocol import Codec

KEY = b"lifecycle-unit"


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.outbox = Outbox(
            status=lambda state, parent: self.log.append(("status", state, parent["msg_id"])),
            reply=lambda msg, content: self.log.append(("reply", content)),
            flush=lambda parent: self.log.append(("flush", parent["msg_id"])),
        )

    def kinds(self) -> list[str]:
        return [e[1] if e[0] == "status" else e[0] for e in self.log]


def message(msg_type: str, content: dict | None = None, raw_content: bytes | None = None):
    session = Session(key=KEY)
    msg = session.msg(msg_type, content or {})
    frames = session.serialize(msg)
    if raw_content is not None:  # content that is not JSON, re-signed so it is accepted
        parts = frames[frames.index(b"<IDS|MSG>") + 2:]
        parts[3] = raw_content
        frames = [b"<IDS|MSG>", session.sign(parts), *parts]
    return Codec(KEY).parse(frames)


def run(msg, body, table=None) -> Recorder:
    rec = Recorder()
    with Cycle(msg, rec.outbox) as cycle:
        body(cycle)
    return rec


def test_a_request_gets_busy_reply_flush_idle_in_that_order():
    msg = message("kernel_info_request")
    rec = run(msg, lambda c: setattr(c, "content", {"status": "ok"}))
    assert rec.kinds() == ["busy", "reply", "flush", "idle"]
    assert rec.log[1] == ("reply", {"status": "ok"})
    assert {e[-1] for e in rec.log if e[0] in ("status", "flush")} == {msg.msg_id}


def test_a_message_that_is_not_a_request_gets_no_reply():
    rec = run(message("comm_msg"), lambda c: None)
    assert rec.kinds() == ["busy", "flush", "idle"]


@pytest.mark.parametrize("exc, ename", [
    (ValueError("boom"), "ValueError"),
    (KeyboardInterrupt(), "KeyboardInterrupt"),
    (SystemExit(3), "SystemExit"),
])
def test_an_exception_becomes_the_error_reply_and_goes_no_further(exc, ename):
    def body(cycle):
        raise exc

    rec = run(message("execute_request"), body)
    assert rec.kinds() == ["busy", "reply", "flush", "idle"]
    assert rec.log[1][1]["status"] == "error" and rec.log[1][1]["ename"] == ename


def test_a_cancellation_is_answered_then_re_raised():
    rec = Recorder()
    with pytest.raises(asyncio.CancelledError):
        with Cycle(message("execute_request"), rec.outbox):
            raise asyncio.CancelledError
    assert rec.kinds() == ["busy", "reply", "flush", "idle"]


def test_unknown_type_and_undecodable_content_are_answered():
    rec = run(message("frobnicate_request"), lambda c: c.handler({}, "shell"))
    assert rec.log[1][1]["ename"] == "UnknownMessageType"
    assert "frobnicate_request" in rec.log[1][1]["evalue"]
    rec = run(message("execute_request", raw_content=b"{not json"),
              lambda c: c.handler({"execute_request": None}, "shell"))
    assert rec.log[1][1]["ename"] == "ProtocolError"


def test_a_request_whose_handler_gave_nothing_still_gets_one_reply():
    rec = run(message("execute_request"), lambda c: None)
    assert rec.kinds() == ["busy", "reply", "flush", "idle"]
    assert rec.log[1][1]["status"] == "error"


def test_a_failing_reply_send_still_ends_with_flush_and_idle():
    rec = Recorder()

    def reply(msg, content):
        raise OSError("socket gone")

    outbox = Outbox(rec.outbox.status, reply, rec.outbox.flush)
    with pytest.raises(OSError):
        with Cycle(message("execute_request"), outbox) as cycle:
            cycle.content = {"status": "ok"}
    assert rec.kinds() == ["busy", "flush", "idle"]


def test_steps_outside_the_table_are_bugs():
    cycle = Cycle(message("execute_request"), Recorder().outbox)
    with pytest.raises(LifecycleError):
        cycle._step("reply")  # before busy
    cycle._step("busy")
    cycle._step("reply")
    with pytest.raises(LifecycleError):
        cycle._step("reply")  # a second reply


@given(st.lists(st.sampled_from(["busy", "reply", "idle"]), max_size=6))
def test_every_walk_through_the_table_starts_busy_and_ends_idle(steps):
    phase = Phase.RECEIVED
    seen = []
    for step in steps:
        nxt = TRANSITIONS.get((phase, step))
        if nxt is None:
            break
        seen.append(step)
        phase = nxt
    assert seen[:1] in ([], ["busy"])
    assert seen.count("reply") <= 1
    assert "idle" not in seen or seen[-1] == "idle"
