"""Where a comm message runs, sans IO and with stand-in subshells; the inbox's out-of-turn
take; and the main thread's pause, with real signals in this (pytest) process.

The wire tests of the same rules are in ``tests/test_comm_routing.py``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import types

import anyio
import pytest

from subshell_kernel.core.comm_routing import BY_OWNER, NO_OWNER, Owner, Via, route
from subshell_kernel.core.protocol import Codec, Message
from subshell_kernel.runtime.comm_dispatch import CommDispatch
from subshell_kernel.runtime.inbox import Inbox
from subshell_kernel.runtime.main_pause import SIGNAL, MainPause

# -- the rule ------------------------------------------------------------------------------


def test_the_table_covers_every_owner_state():
    assert set(BY_OWNER) == set(Owner)


@pytest.mark.parametrize(("owner", "via"), [
    (Owner.FREE, Via.OWNER),  # idle or in an await cell: the owner's own loop
    (Owner.BLOCKED, Via.HEADER),  # blocked: answered from the subshell the frontend chose
    (Owner.NONE, Via.HEADER),  # unknown comm (a comm_open, say): by header
    (Owner.GONE, Via.HEADER),  # the owner was deleted
])
def test_route_by_owner(owner, via):
    assert route(owner, pending=False) is via


@pytest.mark.parametrize("owner", list(Owner))
def test_pending_messages_of_the_comm_decide_first(owner):
    assert route(owner, pending=True) is Via.PENDING


# -- the dispatch, with stand-in subshells --------------------------------------------------


class FakeSubshell:
    def __init__(self, name: str, free: bool = True):
        self.name, self.free, self.stopping = name, free, False
        self.queued: list[Message] = []

    def deliver(self, msg: Message) -> bool:
        self.queued.append(msg)
        return True

    def deliver_comm_if_free(self, msg: Message) -> bool:
        return self.free and self.deliver(msg)

    def __repr__(self) -> str:
        return self.name


CODEC = Codec(b"")


def comm_msg(comm_id: object, subshell_id: str | None = None) -> Message:
    header = CODEC.new_message("comm_msg", {})["header"]
    if subshell_id is not None:
        header["subshell_id"] = subshell_id
    msg = CODEC.new_message("comm_msg", {"comm_id": comm_id, "data": {}})
    msg["header"] = header
    return CODEC.parse(CODEC.serialize(msg))


@pytest.fixture
def world():
    subs = {None: FakeSubshell("parent"), "s1": FakeSubshell("s1"), "widgets": FakeSubshell("w")}
    owners: dict[str, object] = {"c": None}  # comm "c" belongs to the parent
    dispatch = CommDispatch(lambda comm_id: owners.get(comm_id, NO_OWNER))

    def send(comm_id: object, to: str | None = "widgets") -> FakeSubshell:
        msg = comm_msg(comm_id, to)
        assert dispatch.deliver(msg, subs[to], subs.get)
        (where,) = [s for s in subs.values() if s.queued and s.queued[-1] is msg]
        return where

    return types.SimpleNamespace(subs=subs, owners=owners, dispatch=dispatch, send=send)


def test_a_free_owner_runs_its_comm(world):
    assert world.send("c") is world.subs[None]


def test_a_blocked_owner_leaves_it_to_the_addressed_subshell(world):
    world.subs[None].free = False
    assert world.send("c") is world.subs["widgets"]


def test_unknown_comms_and_deleted_owners_go_by_header(world):
    assert world.send("nobody-knows") is world.subs["widgets"]
    world.owners["orphan"] = "deleted-subshell"
    assert world.send("orphan") is world.subs["widgets"]


def test_a_message_that_names_no_comm_goes_by_header(world):
    for bad in (None, 42, ["c"]):
        assert world.send(bad) is world.subs["widgets"]


def test_messages_follow_their_pending_predecessors(world):
    parent, widgets = world.subs[None], world.subs["widgets"]
    parent.free = False
    first = world.send("c")
    parent.free = True  # the owner is free again, but the first message is not handled yet
    assert world.send("c") is first is widgets
    assert world.dispatch.pending("c") == 2
    for msg in list(widgets.queued):
        world.dispatch.done(msg)
    assert world.dispatch.pending("c") == 0
    assert world.send("c") is parent  # nothing pending: the owner again


def test_a_stopping_holder_does_not_keep_new_messages(world):
    parent, widgets = world.subs[None], world.subs["widgets"]
    parent.free = False
    world.send("c")
    widgets.stopping = True  # deleted: its queued messages are answered "aborted"
    parent.free = True
    assert world.send("c") is parent
    world.dispatch.done(widgets.queued[0])  # the old holder's answer does not uncount
    assert world.dispatch.pending("c") == 1  # the parent's message


# -- the inbox ------------------------------------------------------------------------------


def test_inbox_takes_comm_messages_out_of_turn_and_keeps_the_rest_in_order():
    async def main():
        inbox = Inbox()
        items = [types.SimpleNamespace(msg_type=t, n=i) for i, t in enumerate(
            ["execute_request", "comm_msg", "complete_request", "comm_close", "execute_request"])]
        for item in items:
            inbox.put(item)
        assert [inbox.take_nowait(comm_only=True).n for _ in range(2)] == [1, 3]
        with pytest.raises(anyio.WouldBlock):
            inbox.take_nowait(comm_only=True)
        assert [(await inbox.take()).n for _ in range(3)] == [0, 2, 4]

        # a waiter that is cancelled loses nothing
        with anyio.move_on_after(0.05):
            await inbox.take(comm_only=True)
        inbox.put(items[1])
        assert (await inbox.take()).n == 1

    anyio.run(main)


# -- the main thread's pause ----------------------------------------------------------------

# Code that stands for matplotlib: its functions live in a module named "fakeplot".
FAKEPLOT = types.ModuleType("fakeplot")
exec(
    "import time\n"
    "inside = 0\n"
    "def work(seconds):\n"
    "    global inside\n"
    "    inside += 1\n"
    "    try:\n"
    "        t = time.perf_counter() + seconds\n"
    "        while time.perf_counter() < t:\n"
    "            pass\n"
    "    finally:\n"
    "        inside -= 1\n",
    FAKEPLOT.__dict__,
)


@pytest.fixture
def pause():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    p = MainPause(["fakeplot"])
    old = signal.signal(SIGNAL, p.on_signal)
    p.enable()
    yield p
    p.disable()
    signal.signal(SIGNAL, old)


def _worker(pause: MainPause, rounds: int, seen: list, stop: threading.Event) -> None:
    for _ in range(rounds):
        with pause.held():
            seen.append(FAKEPLOT.inside)  # the main thread is parked: is it inside?
            time.sleep(0.002)
            seen.append(FAKEPLOT.inside)
    stop.set()


def test_the_worker_runs_only_while_the_main_thread_is_outside_the_unsafe_module(pause):
    seen: list[int] = []
    stop = threading.Event()
    worker = threading.Thread(target=_worker, args=(pause, 40, seen, stop))
    worker.start()
    calls = 0
    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
        FAKEPLOT.work(0.003)  # nearly all the main thread's time is spent inside
        calls += 1
    worker.join(5)
    assert stop.is_set(), "the worker never got the main thread held"
    assert len(seen) == 80 and set(seen) == {0}, seen
    assert calls > 40  # the main thread went on working between the pauses
    assert sys.gettrace() is None  # the return trace is gone after each pause


def test_a_main_thread_in_a_blocking_call_is_held_at_once(pause):
    seen: list[int] = []
    stop = threading.Event()
    worker = threading.Thread(target=_worker, args=(pause, 5, seen, stop))
    t0 = time.monotonic()
    worker.start()
    while not stop.wait(0.05):  # a wait that holds no frame of the unsafe module
        pass
    worker.join(5)
    assert seen == [0] * 10
    assert time.monotonic() - t0 < 2


def test_the_main_thread_itself_does_not_wait(pause):
    with pause.held():
        assert FAKEPLOT.inside == 0
