"""transport/sockets.py send_frames and recv_frames (pyzmq's compiled calls, no sugar)
on real zmq sockets: the same messages as send_multipart and recv_multipart."""

from __future__ import annotations

import pytest
import zmq

from subshell_kernel.transport.sockets import recv_frames, send_frames


@pytest.fixture
def pair():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://frames")
    b.connect("inproc://frames")
    yield a, b
    a.close(0)
    b.close(0)
    ctx.term()


def test_send_frames_is_received_whole_by_recv_multipart(pair):
    a, b = pair
    frames = [b"id", b"<IDS|MSG>", b"", memoryview(b"buffer"), bytearray(b"x" * 100_000)]
    send_frames(a, frames)
    send_frames(a, [b"single"])
    assert b.recv_multipart() == [bytes(f) for f in frames]
    assert b.recv_multipart() == [b"single"]


def test_recv_frames_gets_what_send_multipart_sent(pair):
    a, b = pair
    a.send_multipart([b"1", b"", b"3"])
    a.send(b"alone")
    assert recv_frames(b) == [b"1", b"", b"3"]
    assert recv_frames(b, zmq.NOBLOCK) == [b"alone"]
    with pytest.raises(zmq.Again):
        recv_frames(b, zmq.NOBLOCK)
