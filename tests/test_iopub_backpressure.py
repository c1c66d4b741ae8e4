"""A subscriber that is behind makes iopub's publishers wait; one that stays full is
taken for stopped (``transport/iopub.py``, ``IOPubSocket``).

Unit tests on real zmq sockets, through pyzmq and through the C part's ``Frames``:
a reader that the publisher outruns by far still gets every message, in order;
a reader that stops holds publishers up once, for ``STALL_SECONDS``, then misses
messages while every other reader gets them, and gets them whole again once it
reads.  Then the wire: a kernel whose queue holds four messages (the smallest
budget) loses nothing of a burst of pipelined cells to a client that reads
slowly, and the C control reader's statuses reach a live frontend while another
one is frozen (the reader never waits: it sends them lossy).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import zmq

from subshell_kernel.transport import iopub, native_control
from subshell_kernel.transport.iopub import STALL_SECONDS, IOPubSocket

from .harness import KernelHarness
from .test_frozen_subscriber import _state

HWM = 4
#: the budget of the smallest queue: four of the largest stream messages
SMALLEST_BUDGET = HWM * iopub.MAX_STREAM_BYTES
SMALLEST_QUEUE = [f"--SubshellKernel.iopub_subscriber_budget={SMALLEST_BUDGET}"]


def _frames_options():
    options = [pytest.param(False, id="pyzmq")]
    if native_control.compiled():
        options.append(pytest.param(True, id="frames"))
    return options


@pytest.fixture(params=_frames_options())
def xpub(request):
    """An XPUB with a four-message queue per subscriber, as ``IOPubSocket``; and a
    function that connects a subscribed SUB to it (welcomed: the subscription is in)."""
    context = zmq.Context()
    sock = context.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every subscription, as the kernel's
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    frames = None
    if request.param:
        frames = native_control.frames(native_control.libzmq_functions(), sock)
    publisher = IOPubSocket(sock, frames=frames)

    def subscriber() -> zmq.Socket:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 1)  # the queue is the publisher's, not the reader's
        sub.setsockopt(zmq.RCVBUF, 4096)
        sub.subscribe(b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        assert sock.poll(5000) and sock.recv() == b"\x01"  # its subscription
        return sub

    yield publisher, subscriber
    publisher.close(linger=0)
    context.destroy(linger=0)  # the SUBs too (a reader thread left behind gets ETERM)


def _read(sub: zmq.Socket, until: bytes, pause_every: int = 0, got=None) -> list[bytes]:
    """Every message up to ``until`` (and it); a pause of 5 ms every ``pause_every``."""
    got = [] if got is None else got
    while True:
        assert sub.poll(10_000), f"nothing more after {len(got)} messages"
        frames = sub.recv_multipart()
        got.append(frames[1])
        if pause_every and len(got) % pause_every == 0:
            time.sleep(0.005)
        if frames[1] == until:
            return got


def _publish(publisher: IOPubSocket, start: int, n: int, size: int = 100) -> float:
    t0 = time.monotonic()
    for i in range(start, start + n):
        publisher.send([b"topic", b"%08d" % i + b"x" * size])
    return time.monotonic() - t0


def _numbers(got: list[bytes]) -> list[int]:
    return [int(m[:8]) for m in got]


def test_a_reader_the_publisher_outruns_gets_every_message_in_order(xpub):
    publisher, subscriber = xpub
    sub = subscriber()
    n = 3000
    got: list[bytes] = []
    reader = threading.Thread(target=_read, args=(sub, b"%08d" % (n - 1) + b"x" * 100, 50, got))
    reader.start()
    _publish(publisher, 0, n)
    reader.join(30)
    # a lossy queue of four messages loses most of these (the socket's default)
    assert _numbers(got) == list(range(n))


def test_a_stopped_reader_holds_publishers_up_once_then_misses_messages(xpub, caplog):
    publisher, subscriber = xpub
    stopped, live = subscriber(), subscriber()
    n, size = 400, 50_000  # more than the stopped reader's queue and socket buffers hold
    got: list[bytes] = []
    last = b"%08d" % (n - 1) + b"x" * size
    reader = threading.Thread(target=_read, args=(live, last, 0, got))
    reader.start()
    elapsed = _publish(publisher, 0, n, size)
    reader.join(30)
    assert _numbers(got) == list(range(n)), "the live reader missed messages"
    # one wait, for the stopped reader, then no more (an upper bound with margin: each
    # message waiting would take n seconds)
    assert STALL_SECONDS <= elapsed < STALL_SECONDS + 10, elapsed
    assert sum("stayed full" in r.message for r in caplog.records) == 1

    # it reads again: it gets what its queue held, and then everything again, whole
    while stopped.poll(200):
        stopped.recv_multipart()
    got = []
    reader = threading.Thread(target=_read, args=(stopped, b"%08d" % (2 * n - 1) + b"x" * 100,
                                                  20, got))
    reader.start()
    _publish(publisher, n, n)
    reader.join(30)
    assert _numbers(got) == list(range(n, 2 * n))


# -- the wire ----------------------------------------------------------------------------

#: test_frozen_subscriber's, with the smallest socket buffers, so that its queue fills soon
FROZEN_SUBSCRIBER = """\
import os, signal, sys, zmq
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.RCVHWM, 1)
sock.setsockopt(zmq.RCVBUF, 4096)
sock.connect(sys.argv[1])
sock.subscribe(b"")
print("subscribed" if sock.poll(10000) else "no welcome", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


@pytest.fixture
def small_queue_kernel():
    k = KernelHarness("subshell", eager_iopub=False, extra_arguments=SMALLEST_QUEUE)
    yield k
    k.close()


def test_a_slow_client_misses_nothing_of_a_burst_with_the_smallest_queue(small_queue_kernel):
    k = small_queue_kernel
    channel = k.kc.iopub_channel
    while channel.msg_ready():
        channel.get_msg()
    sub = k.create_subshell()
    ids = [k.execute(f"print('line-{i}')", None if i % 2 else sub) for i in range(200)]
    idle, lines = set(), {}
    deadline = time.monotonic() + 120
    while not idle >= set(ids) and time.monotonic() < deadline:
        msg = channel.get_msg(timeout=30)
        time.sleep(0.001)  # a client slower than the kernel
        parent = msg["parent_header"].get("msg_id")
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle.add(parent)
        elif msg["msg_type"] == "stream":
            lines[parent] = lines.get(parent, "") + msg["content"]["text"]
    assert idle >= set(ids), f"{len(set(ids) - idle)} idles lost"
    assert [lines.get(mid) for mid in ids] == [f"line-{i}\n" for i in range(200)]


def test_control_statuses_reach_a_live_frontend_while_another_is_frozen():
    # (its reader thread is the live frontend)
    k = KernelHarness("subshell", extra_arguments=SMALLEST_QUEUE)
    frozen = None
    try:
        info = k.km.get_connection_info()
        frozen = subprocess.Popen(
            [sys.executable, "-c", FROZEN_SUBSCRIBER,
             f"tcp://{info['ip']}:{info['iopub_port']}"], stdout=subprocess.PIPE, text=True)
        assert frozen.stdout.readline().strip() == "subscribed"
        deadline = time.monotonic() + 10
        while _state(frozen.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(frozen.pid) == "T"
        # fill its queue (64 KiB messages, more than its socket buffers hold) while control
        # is asked, again and again: some requests come while a publisher waits for the
        # frozen one (``STALL_SECONDS``), when its queue refuses messages
        flood = k.execute("import time\nfor i in range(1500):\n"
                          "    print('x' * 65535)\n    time.sleep(0.001)")
        asked = []
        for _ in range(40):
            asked.append(k.control("kernel_info_request")["parent_header"]["msg_id"])
            time.sleep(0.05)
        assert k.reply(flood, 60)["content"]["status"] == "ok"
        for msg_id in asked:
            statuses = [m["content"]["execution_state"] for m in k.iopub(msg_id, 10)
                        if m["msg_type"] == "status"]
            assert statuses == ["busy", "idle"]
    finally:
        if frozen is not None:
            frozen.kill()
            frozen.wait(5)
        k.close()

