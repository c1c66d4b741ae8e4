"""Whole zmq messages sent and received in one C call (``_native_frames.c``).

Unit tests on real zmq sockets: what ``Frames`` sends is what pyzmq receives,
frame for frame, whatever the frames are (bytes-like of any kind, empty, many);
what pyzmq sends is what it receives; errors are pyzmq's own exceptions, and a
frame that is not a buffer fails the send before anything leaves.  Then the
wire: the kernel sends and receives through it, and buffers of a comm message
reach the frontend intact.
"""

from __future__ import annotations

import array
import time

import pytest
import zmq

from subshell_kernel.transport import native_control
from subshell_kernel.transport.sockets import SharedSocket

from .harness import KernelHarness, skip_unless_strict

if not native_control.compiled():
    skip_unless_strict("the C part (subshell_kernel/transport/_native_frames.c) is not built",
                       allow_module_level=True)

FUNCTIONS = native_control.libzmq_functions()


def ok(reply: dict) -> dict:
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply


@pytest.fixture
def pair():
    """A connected PAIR of sockets over tcp, as the kernel's are."""
    context = zmq.Context()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    port = a.bind_to_random_port("tcp://127.0.0.1")
    b.connect(f"tcp://127.0.0.1:{port}")
    b.send(b"connected")  # a PAIR waits for its peer; from here on, neither end does
    assert a.recv() == b"connected"
    yield a, b
    a.close(linger=0)
    b.close(linger=0)
    context.term()


def test_pyzmqs_libzmq_is_found():
    assert FUNCTIONS is not None


def test_what_it_sends_arrives_frame_for_frame(pair):
    a, b = pair
    frames = native_control.frames(FUNCTIONS, a)
    message = [b"ident", b"<IDS|MSG>", b"", bytearray(b"header"), memoryview(b"xparentx")[1:-1],
               array.array("i", [1, 2, 3]), zmq.Frame(b"a zmq frame"), b"x" * 1_000_000]
    assert frames.send(message) is False  # nothing waits on a
    received = b.recv_multipart()
    assert received == [bytes(f) for f in message[:6]] + [b"a zmq frame", b"x" * 1_000_000]


def test_more_frames_than_its_stack_holds(pair):
    a, b = pair
    message = [str(i).encode() for i in range(100)]
    native_control.frames(FUNCTIONS, a).send(message)
    assert b.recv_multipart() == message


def test_what_it_receives_is_what_pyzmq_sent(pair):
    a, b = pair
    frames = native_control.frames(FUNCTIONS, a)
    assert frames.recv() is None  # nothing waits: None, not an exception
    b.send_multipart([b"one", b"", b"three" * 10_000])
    b.send_multipart([b"next"])
    deadline = time.monotonic() + 5
    while (message := frames.recv()) is None and time.monotonic() < deadline:
        a.poll(100)
    assert message == [b"one", b"", b"three" * 10_000]
    a.poll(1000)
    assert frames.recv() == [b"next"]
    assert frames.recv() is None


def test_send_says_when_input_waits(pair):
    a, b = pair
    frames = native_control.frames(FUNCTIONS, a)
    b.send(b"waiting")
    a.poll(1000)  # it has arrived, and only EVENTS after a send may tell of it again
    assert frames.send([b"hello"]) is True
    assert frames.recv() == [b"waiting"]
    assert frames.send([b"hello"]) is False


def test_a_frame_that_is_no_buffer_fails_before_anything_is_sent(pair):
    a, b = pair
    frames = native_control.frames(FUNCTIONS, a)
    with pytest.raises(TypeError):
        frames.send([b"first", "text is not a frame", b"third"])
    with pytest.raises(TypeError):
        frames.send([])
    frames.send([b"whole"])
    assert b.recv_multipart() == [b"whole"]  # no half message went before it


def test_a_send_that_would_wait_raises_again_and_sends_nothing():
    """The kernel's sockets drop rather than wait; one that would wait (a PAIR with no
    peer yet) raises, as pyzmq does with NOBLOCK, and nothing of the message leaves."""
    context = zmq.Context()
    a = context.socket(zmq.PAIR)
    port = a.bind_to_random_port("tcp://127.0.0.1")
    frames = native_control.frames(FUNCTIONS, a)
    with pytest.raises(zmq.Again):
        frames.send([b"too", b"early"])
    b = context.socket(zmq.PAIR)
    b.connect(f"tcp://127.0.0.1:{port}")
    b.send(b"connected")
    assert a.recv() == b"connected"
    frames.send([b"now"])
    assert b.recv_multipart() == [b"now"]
    a.close(linger=0)
    b.close(linger=0)
    context.term()


def test_errors_are_pyzmqs_exceptions():
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind("tcp://127.0.0.1:*")
    frames = native_control.frames(FUNCTIONS, router)
    with pytest.raises(zmq.ZMQError) as raised:
        frames.send([b"nobody", b"hello"])
    assert raised.value.errno == zmq.EHOSTUNREACH
    pub = context.socket(zmq.PUB)
    with pytest.raises(zmq.ZMQError) as raised:
        native_control.frames(FUNCTIONS, pub).recv()  # PUB cannot receive
    assert raised.value.errno == zmq.ENOTSUP
    router.close(linger=0)
    pub.close(linger=0)
    context.term()


def test_a_shared_socket_sends_and_receives_through_it(pair):
    a, b = pair
    woken = []
    shared = SharedSocket(a, on_input=lambda: woken.append(1),
                          frames=native_control.frames(FUNCTIONS, a))
    b.send_multipart([b"in", b"put"])
    a.poll(1000)
    shared.send([b"out", b"put"])
    assert woken == [1]  # the send found input waiting, as with pyzmq's calls
    assert shared.recv() == [b"in", b"put"]
    assert shared.recv() is None
    assert b.recv_multipart() == [b"out", b"put"]
    shared.close(linger=0)
    shared.send([b"dropped"])  # after close: dropped, the handle never used again
    assert shared.recv() is None


# -- the wire ----------------------------------------------------------------------------

IN_USE = ("import gc\n"
          "from subshell_kernel.transport.sockets import SharedSocket\n"
          "print(sorted(type(s._frames).__name__ for s in gc.get_objects()\n"
          "             if isinstance(s, SharedSocket)))")


@pytest.mark.parametrize("arguments, expected", [
    ([], "['Frames', 'Frames', 'Frames']"),  # shell, stdin, iopub
    (["--SubshellKernel.native_control=False"], "['NoneType', 'NoneType', 'NoneType']"),
])
def test_the_kernels_sockets_use_it_unless_turned_off(arguments, expected):
    k = KernelHarness("subshell", extra_arguments=arguments)
    try:
        reply, _ = k.run(IN_USE)
        ok(reply)
        assert k.stdout(reply["parent_header"]["msg_id"]) == expected + "\n"
        # and buffers of any kind reach the frontend whole
        reply, msgs = k.run(
            "import array\n"
            "from comm import create_comm\n"
            "c = create_comm(target_name='frames-test', data={'n': 2},\n"
            "                buffers=[memoryview(b'raw bytes'), array.array('d', [1.5, 2.5])])")
        ok(reply)
        opened = [m for m in msgs if m["msg_type"] == "comm_open"]
        assert len(opened) == 1
        assert [bytes(b) for b in opened[0]["buffers"]] == [
            b"raw bytes", array.array("d", [1.5, 2.5]).tobytes()]
    finally:
        k.close()
