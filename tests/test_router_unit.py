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
from types import SimpleNamespace

import pytest
import zmq
from jupyter_client.session import Session

from subshell_kernel.protocol import Codec
from subshell_kernel.router import Router

KEY = b"router-unit-tests"


class FakeSubshell:
    def __init__(self, inbox: queue.SimpleQueue) -> None:
        self.inbox = inbox

    def deliver(self, msg) -> bool:
        self.inbox.put(msg)
        return True


class FakeKernel:
    """What the router uses of a kernel: the subshell registry and iopub."""

    def __init__(self, inbox: queue.SimpleQueue) -> None:
        parent = FakeSubshell(inbox)
        self.subshells = SimpleNamespace(get=lambda sid: parent if sid is None else None)
        self.iopub = SimpleNamespace(status=lambda *args: None)


@pytest.fixture
def router_and_client():
    context = zmq.Context()
    shell, stdin = context.socket(zmq.ROUTER), context.socket(zmq.ROUTER)
    port = shell.bind_to_random_port("tcp://127.0.0.1")
    stdin.bind_to_random_port("tcp://127.0.0.1")
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    router = Router(FakeKernel(inbox), shell, stdin, Codec(KEY))  # type: ignore[arg-type]
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
    assert reply["content"]["ename"] == "SubshellNotFound"


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
    router = Router(FakeKernel(queue.SimpleQueue()), shell, stdin, Codec(KEY))  # type: ignore[arg-type]
    router.stop(1.0)
    assert shell.closed and stdin.closed
    context.term()  # would block forever on an open socket
