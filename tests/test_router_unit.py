"""The shell router thread with real zmq sockets, but no kernel process.

The router is the only reader of the shell socket while other threads send
replies on it (``sockets.SharedSocket``).  zmq's notification descriptor is
edge-triggered and a send may consume its signal, so these tests flood the
router with requests while worker threads reply, and check that no request is
stranded and every reply reaches its sender.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest
import zmq
from jupyter_client.session import Session

from subshell_kernel.core.lifecycle import Outbox
from subshell_kernel.core.protocol import Codec
from subshell_kernel.transport.router import Router
from subshell_kernel.transport.sockets import SharedSocket, WakePipe

KEY = b"router-unit-tests"


def make_router(shell: zmq.Socket, stdin: zmq.Socket, inbox: queue.SimpleQueue) -> Router:
    """A router whose only subshell is the parent, which puts messages into ``inbox``."""
    codec = Codec(KEY)
    wake = WakePipe()
    shell_s = SharedSocket(shell, on_input=wake.wake)
    stdin_s = SharedSocket(stdin, on_input=wake.wake)

    def deliver(msg) -> bool:
        if msg.subshell_id is not None:
            return False
        inbox.put(msg)
        return True

    def reply(msg, content) -> None:
        shell_s.send(codec.reply_frames(msg, content))

    outbox = Outbox(status=lambda state, parent: None, reply=reply, flush=lambda parent: None)
    router = Router(shell_s, stdin_s, wake, codec, outbox, early={})
    router.open(deliver, lambda msg: None)
    return router


@pytest.fixture
def router_and_client():
    context = zmq.Context()
    shell, stdin = context.socket(zmq.ROUTER), context.socket(zmq.ROUTER)
    port = shell.bind_to_random_port("tcp://127.0.0.1")
    stdin.bind_to_random_port("tcp://127.0.0.1")
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    router = make_router(shell, stdin, inbox)
    router.start()
    client = context.socket(zmq.DEALER)
    client.linger = 0
    client.connect(f"tcp://127.0.0.1:{port}")
    yield router, client, inbox
    client.close()
    router.stop(2.0)
    context.term()


def _reply_forever(router: Router, inbox: queue.SimpleQueue, codec: Codec) -> None:
    while (msg := inbox.get()) is not None:
        msg.decode()
        router.shell.send(codec.reply_frames(msg, {"status": "ok", "n": msg.content["n"]}))


@pytest.mark.timeout(60)
def test_no_request_is_stranded_while_other_threads_send_replies(router_and_client):
    router, client, inbox = router_and_client
    codec = Codec(KEY)
    workers = [threading.Thread(target=_reply_forever, args=(router, inbox, codec))
               for _ in range(3)]
    for w in workers:
        w.start()
    session = Session(key=KEY)
    total, burst = 3000, 50
    received: set[int] = set()
    try:
        for start in range(0, total, burst):
            for n in range(start, start + burst):
                session.send(client, "execute_request", {"n": n})
            deadline = time.monotonic() + 10
            while len(received) < start + burst and time.monotonic() < deadline:
                if client.poll(100):
                    _, reply = session.recv(client)
                    received.add(reply["content"]["n"])
            assert len(received) == start + burst, f"stranded after {len(received)} replies"
    finally:
        for _ in workers:
            inbox.put(None)
        for w in workers:
            w.join(5)
    assert received == set(range(total))


@pytest.mark.timeout(30)
def test_a_request_for_an_unknown_subshell_is_answered_by_the_router(router_and_client):
    router, client, _ = router_and_client
    session = Session(key=KEY)
    msg = session.msg("execute_request", {"code": "1"})
    msg["header"]["subshell_id"] = "no-such-subshell"
    session.send(client, msg)
    assert client.poll(5000)
    _, reply = session.recv(client)
    assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "UnknownSubshellError"


@pytest.mark.timeout(30)
def test_stop_closes_the_sockets_and_later_sends_are_dropped(router_and_client):
    router, _, _ = router_and_client
    router.stop(2.0)
    assert not router.thread.is_alive()
    router.shell.send([b"x", b"<IDS|MSG>", b"", b"{}", b"{}", b"{}", b"{}"])  # no error
    assert router.shell.recv() is None


@pytest.mark.timeout(30)
def test_stop_without_start_closes_the_sockets():
    """A kernel whose startup failed still terminates its zmq context."""
    context = zmq.Context()
    shell, stdin = context.socket(zmq.ROUTER), context.socket(zmq.ROUTER)
    router = make_router(shell, stdin, queue.SimpleQueue())
    router.stop(1.0)
    assert shell.closed and stdin.closed
    context.term()  # would block forever on an open socket


@pytest.mark.timeout(60)
def test_starting_and_stopping_a_router_never_touches_a_closed_wake_pipe():
    """``stop`` wakes the router thread while that thread may be closing the
    pipe; before the wake and the close shared a lock, 10 of 200 such cycles
    wrote to a closed (or reused) descriptor and raised EBADF."""
    errors: list[BaseException] = []
    context = zmq.Context()
    for _ in range(200):
        shell, stdin = context.socket(zmq.ROUTER), context.socket(zmq.ROUTER)
        router = make_router(shell, stdin, queue.SimpleQueue())
        router.start()
        stopper = threading.Thread(target=lambda r=router: _stop(r, errors))
        router._stopping = True  # the router thread may now close the pipe at any moment
        router._wake.wake()
        stopper.start()
        stopper.join(5)
        router.thread.join(5)
    context.term()
    assert errors == []


def _stop(router: Router, errors: list) -> None:
    try:
        router._stopping = False  # let stop() proceed to its own wake
        router.stop(2.0)
    except BaseException as e:  # noqa: BLE001 - the test collects every failure
        errors.append(e)


def test_a_closed_wake_pipe_ignores_wakes():
    wake = WakePipe()
    wake.close()
    wake.wake()  # no EBADF, no write to a descriptor reused since
    wake.close()  # idempotent


@pytest.mark.timeout(30)
def test_before_open_requests_are_held_in_order_and_kernel_info_is_answered_early():
    """The boot: the router runs before the subshells exist (IPython still loading).
    A kernel_info_request with nothing held ahead of it is answered at once; the
    rest, and a kernel_info_request that came behind a held request, wait in
    order and are handed over at ``open``."""
    context = zmq.Context()
    shell, stdin = context.socket(zmq.ROUTER), context.socket(zmq.ROUTER)
    port = shell.bind_to_random_port("tcp://127.0.0.1")
    stdin.bind_to_random_port("tcp://127.0.0.1")
    codec, wake = Codec(KEY), WakePipe()
    shell_s = SharedSocket(shell, on_input=wake.wake)
    outbox = Outbox(status=lambda state, parent: None,
                    reply=lambda msg, content: shell_s.send(codec.reply_frames(msg, content)),
                    flush=lambda parent: None)
    router = Router(shell_s, SharedSocket(stdin, on_input=wake.wake), wake, codec, outbox,
                    early={"kernel_info_request": lambda: {"status": "ok", "early": True}})
    router.start()
    client = context.socket(zmq.DEALER)
    client.linger = 0
    client.connect(f"tcp://127.0.0.1:{port}")
    session = Session(key=KEY)
    try:
        first = session.send(client, "kernel_info_request", {})
        assert client.poll(5000)
        _, reply = session.recv(client)
        assert reply["parent_header"]["msg_id"] == first["header"]["msg_id"]
        assert reply["content"] == {"status": "ok", "early": True}

        sent = [session.send(client, "execute_request", {"n": 0}),
                session.send(client, "kernel_info_request", {}),
                session.send(client, "execute_request", {"n": 1})]
        time.sleep(0.3)
        assert not client.poll(0), "a request behind a held one was answered early"
        delivered: list[str] = []
        router.open(lambda msg: delivered.append(msg.msg_id) or True, lambda msg: None)
        assert delivered == [m["header"]["msg_id"] for m in sent]
        later = session.send(client, "execute_request", {"n": 2})
        deadline = time.monotonic() + 5
        while len(delivered) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert delivered[3] == later["header"]["msg_id"]
    finally:
        client.close()
        router.stop(2.0)
        context.term()
