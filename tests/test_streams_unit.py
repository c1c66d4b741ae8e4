"""Unit tests for stdout/stderr routing (``runtime.streams``) and the iopub
publisher and its task group (``transport.iopub``), without a kernel process.

``StreamRouter`` is driven with a fake IOPub that records calls; ``IOPub`` is
given a real XPUB socket on inproc, read by a SUB socket, as a frontend would.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import zmq
from jupyter_client.session import Session

from subshell_kernel.core.protocol import Codec
from subshell_kernel.runtime import context as ctx
from subshell_kernel.runtime import streams as streams_module
from subshell_kernel.runtime.context import current_parent, get_parent, start_with_parent
from subshell_kernel.runtime.streams import OutStream, StreamRouter
from subshell_kernel.transport.iopub import IOPub

KEY = b"0f6b2c1e-stream-tests"


# -- fakes and helpers ----------------------------------------------------------------


class FakeIOPub:
    """Records ``publish`` and ``flush_soon`` calls in one ordered log."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def publish(self, msg_type, content, parent, metadata=None, buffers=None) -> None:
        self.events.append(("publish", msg_type, dict(content), parent))

    def flush_soon(self) -> None:
        self.events.append(("flush_soon",))

    @property
    def published(self) -> list[tuple[str, str, Any]]:
        """(name, text, parent) of each stream message, in order."""
        return [(c["name"], c["text"], p) for (kind, t, c, p) in self._pubs() if t == "stream"]

    def _pubs(self):
        return [(e[0], e[1], e[2], e[3]) for e in self.events if e[0] == "publish"]

    @property
    def flush_soon_calls(self) -> int:
        return sum(1 for e in self.events if e[0] == "flush_soon")

    def clear(self) -> None:
        self.events.clear()


def parent(msg_id: str, **extra) -> dict[str, Any]:
    return {"msg_id": msg_id, "msg_type": "execute_request", "session": "s", **extra}


@contextmanager
def current(p: dict[str, Any] | None):
    token = current_parent.set(p)
    try:
        yield
    finally:
        current_parent.reset(token)


def run_in_parent(p, fn, *args):
    """Run ``fn`` in a copy of the current context with ``p`` as parent."""

    def inner():
        current_parent.set(p)
        return fn(*args)

    return contextvars.copy_context().run(inner)


@pytest.fixture
def iopub() -> FakeIOPub:
    return FakeIOPub()


def stream_router(iopub, **kwargs) -> StreamRouter:
    return StreamRouter(iopub.publish, iopub.flush_soon, **kwargs)


@pytest.fixture
def router(iopub) -> StreamRouter:
    return stream_router(iopub)


@pytest.fixture
def streams(router):
    return OutStream("stdout", router), OutStream("stderr", router)


@pytest.fixture
def restore_thread_start(monkeypatch):
    """``propagate_parent_to_threads`` patches ``Thread.start`` globally: undo it."""
    monkeypatch.setattr(threading.Thread, "start", threading.Thread.start)
    yield


def propagate_parent_to_threads() -> None:
    """What ``hooks`` installs (the test's fixture undoes it)."""
    threading.Thread.start = start_with_parent(ctx_original_start)


ctx_original_start = threading.Thread.start


# -- StreamRouter ---------------------------------------------------------------------


def test_writes_under_two_parents_are_buffered_separately(iopub, router, streams):
    out, _ = streams
    a, b = parent("A"), parent("B")
    run_in_parent(a, out.write, "a1 ")
    run_in_parent(b, out.write, "b1 ")
    with current(a):
        out.write("a2")
    with current(b):
        out.write("b2")
    assert iopub.published == []  # buffered, nothing emitted yet

    router.flush_all()
    assert iopub.published == [("stdout", "a1 a2", a), ("stdout", "b1 b2", b)]
    # the parent header is the very dict that was current (echoed verbatim)
    assert iopub.published[0][2] is a and iopub.published[1][2] is b


def test_parents_with_subshell_ids_keep_their_header(iopub, router, streams):
    out, _ = streams
    a = parent("A", subshell_id="sub-1")
    b = parent("B", subshell_id=None)
    run_in_parent(a, out.write, "x")
    run_in_parent(b, out.write, "y")
    router.flush_all()
    assert {p["msg_id"]: p for *_, p in iopub.published} == {"A": a, "B": b}


def test_write_without_a_parent(iopub, router, streams):
    out, err = streams
    with current(None):
        out.write("orphan")
    run_in_parent(parent("A"), out.write, "owned")
    router.flush_all()
    assert ("stdout", "orphan", None) in iopub.published
    assert ("stdout", "owned", parent("A")) in iopub.published


def test_stdout_to_stderr_switch_emits_in_order(iopub, router, streams):
    out, err = streams
    a = parent("A")
    with current(a):
        out.write("1")
        out.write("2")
        err.write("3")
        out.write("4")
        out.write("5")
    # each switch emitted what was buffered before it
    assert iopub.published == [("stdout", "12", a), ("stderr", "3", a)]
    router.flush(a)
    assert iopub.published == [("stdout", "12", a), ("stderr", "3", a), ("stdout", "45", a)]
    assert iopub.flush_soon_calls == 1  # one buffer for the request, however often it switched


def test_fd_output_never_splits_a_line_python_is_writing(iopub, router, streams):
    """The pipe is read after the fact, so fd text can arrive between the pieces of
    one print (its text, then its newline): it goes in before that line."""
    out, _ = streams
    a = parent("A")
    router.fd_parent = a
    with current(a):
        out.write("done\nand so")
        router.write_fd_output("stdout", "from C\n")
        out.write(" does print")
        router.write_fd_output("stdout", "a subprocess\n")
        out.write("\n")
        router.write_fd_output("stdout", "after the line, ")  # no line open: appended
        router.write_fd_output("stdout", "in order\n")
    router.flush(a)
    assert iopub.published == [
        ("stdout", "done\nfrom C\na subprocess\nand so does print\nafter the line, in order\n", a)]


def test_switch_under_one_parent_does_not_flush_another(iopub, router, streams):
    out, err = streams
    a, b = parent("A"), parent("B")
    run_in_parent(b, out.write, "b-out")
    run_in_parent(a, out.write, "a-out")
    run_in_parent(a, err.write, "a-err")
    assert iopub.published == [("stdout", "a-out", a)]
    router.flush_all()
    assert iopub.published[0] == ("stdout", "a-out", a)
    assert sorted(iopub.published[1:], key=lambda e: e[1]) == [
        ("stderr", "a-err", a),
        ("stdout", "b-out", b),
    ]


def test_flush_parent_emits_only_that_parents_buffer(iopub, router, streams):
    out, err = streams
    a, b = parent("A"), parent("B")
    run_in_parent(a, out.write, "from a")
    run_in_parent(b, err.write, "from b")

    router.flush(a)
    assert iopub.published == [("stdout", "from a", a)]
    router.flush(a)  # nothing left for A
    router.flush(parent("C"))  # nothing ever buffered for C
    router.flush(None)  # nothing buffered without a parent
    assert iopub.published == [("stdout", "from a", a)]

    router.flush(b)
    assert iopub.published == [("stdout", "from a", a), ("stderr", "from b", b)]


def test_flush_matches_parents_by_msg_id(iopub, router, streams):
    out, _ = streams
    run_in_parent(parent("A"), out.write, "x")
    router.flush({"msg_id": "A"})  # an equal-id header, e.g. the request's own header dict
    assert [t for _, t, _ in iopub.published] == ["x"]


def test_flush_all_emits_all_and_empties(iopub, router, streams):
    out, err = streams
    parents = [parent(f"P{i}") for i in range(5)]
    for i, p in enumerate(parents):
        run_in_parent(p, (out if i % 2 else err).write, f"text {i}")
    with current(None):
        out.write("none")
    router.flush_all()
    assert len(iopub.published) == 6
    assert {(n, t) for n, t, _ in iopub.published} == {
        ("stderr", "text 0"),
        ("stdout", "text 1"),
        ("stderr", "text 2"),
        ("stdout", "text 3"),
        ("stderr", "text 4"),
        ("stdout", "none"),
    }
    for _, text, p in iopub.published:
        if text != "none":
            assert p is parents[int(text[-1])]
    iopub.clear()
    router.flush_all()
    assert iopub.events == []


def test_exceeding_max_buffer_emits_immediately(iopub):
    router = stream_router(iopub, max_buffer=10)
    out = OutStream("stdout", router)
    a = parent("A")
    with current(a):
        out.write("12345")
        out.write("67890")  # exactly max_buffer: still buffered
        assert iopub.published == []
        out.write("X")  # past max_buffer: emitted now, no message over max_buffer
        assert iopub.published == [("stdout", "1234567890", a), ("stdout", "X", a)]
        out.write("tail")
        assert iopub.flush_soon_calls == 1  # same buffer, not a new one
    router.flush_all()
    assert [t for _, t, _ in iopub.published] == ["1234567890", "X", "tail"]


def test_one_huge_write_is_emitted_at_once_in_pieces_of_at_most_max_buffer_bytes(iopub):
    router = stream_router(iopub, max_buffer=100)
    with current(parent("A")):
        OutStream("stdout", router).write("x" * 1000)
    assert [len(t) for _, t, _ in iopub.published] == [100] * 10
    router.flush_all()  # the emitted buffer left nothing behind: no empty stream message
    assert len(iopub.published) == 10
    iopub.clear()
    with current(parent("B")):
        OutStream("stdout", router).write("\u00e9" * 300)  # 2 bytes each in UTF-8
    pieces = [t for _, t, _ in iopub.published]
    assert "".join(pieces) == "\u00e9" * 300
    assert max(len(t.encode()) for t in pieces) <= 100


def test_buffers_count_utf8_bytes(iopub):
    router = stream_router(iopub, max_buffer=10)
    with current(parent("A")):
        out = OutStream("stdout", router)
        out.write("\u20ac\u20ac\u20ac")  # 3 characters, 9 bytes: still buffered
        assert iopub.published == []
        out.write("\u20ac")  # 12 bytes: emitted
    assert len(iopub.published) >= 1


def test_flush_soon_once_per_new_buffer(iopub, router, streams):
    out, err = streams
    a, b = parent("A"), parent("B")
    with current(a):
        for _ in range(50):
            out.write("x")
    assert iopub.flush_soon_calls == 1
    run_in_parent(b, out.write, "y")
    run_in_parent(b, err.write, "z")
    assert iopub.flush_soon_calls == 2
    # the flush_soon comes before the buffer's first emission
    assert iopub.events[0] == ("flush_soon",)

    router.flush(a)  # A's buffer is gone: its next write starts a new one
    run_in_parent(a, out.write, "again")
    assert iopub.flush_soon_calls == 3
    router.flush_all()
    run_in_parent(b, out.write, "after flush_all")
    assert iopub.flush_soon_calls == 4


def test_concurrent_writers_never_mix(iopub):
    """Threads writing under their own parents, with tiny buffers: text stays per parent
    and in order."""
    router = stream_router(iopub, max_buffer=7)
    out = OutStream("stdout", router)
    parents = [parent(f"T{i}") for i in range(4)]
    barrier = threading.Barrier(len(parents))

    def work(p):
        current_parent.set(p)
        barrier.wait()
        for n in range(500):
            out.write(f"{p['msg_id']}:{n};")

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(work, p)) for p in parents
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    router.flush_all()
    for p in parents:
        text = "".join(t for _, t, q in iopub.published if q is p)
        assert text == "".join(f"{p['msg_id']}:{n};" for n in range(500))
    assert all(q in parents for _, _, q in iopub.published)


def test_a_write_that_meets_a_flush_goes_into_the_next_buffer(iopub):
    """A writer that found a buffer just as a flush was sending it waits for the flush,
    then writes into a new buffer: nothing is lost, and the order holds."""
    sending, release = threading.Event(), threading.Event()
    events = iopub.events
    publish = iopub.publish

    def slow_publish(msg_type, content, parent, metadata=None, buffers=None):
        if content.get("text") == "first ":
            sending.set()
            release.wait(5)
        publish(msg_type, content, parent, metadata, buffers)

    iopub.publish = slow_publish
    router = stream_router(iopub)
    a = parent("A")
    router.write_for(a, "stdout", "first ")
    flusher = threading.Thread(target=router.flush, args=(a,))
    flusher.start()
    assert sending.wait(5)  # the flush holds the buffer's lock while it sends
    writer = threading.Thread(target=router.write_for, args=(a, "stdout", "second"))
    writer.start()
    writer.join(0.2)
    assert writer.is_alive()  # waiting for the flush, not writing into what it sends
    release.set()
    flusher.join()
    writer.join()
    router.flush(a)
    assert [e[2]["text"] for e in events if e[0] == "publish"] == ["first ", "second"]


def test_writers_for_different_requests_do_not_wait_for_each_other(iopub):
    """Each request's buffer has its own lock: a flush sending A's text does not hold
    up a write for B."""
    sending, release = threading.Event(), threading.Event()
    publish = iopub.publish

    def slow_publish(msg_type, content, parent, metadata=None, buffers=None):
        if parent["msg_id"] == "A":
            sending.set()
            release.wait(5)
        publish(msg_type, content, parent, metadata, buffers)

    iopub.publish = slow_publish
    router = stream_router(iopub)
    a, b = parent("A"), parent("B")
    router.write_for(a, "stdout", "a")
    flusher = threading.Thread(target=router.flush, args=(a,))
    flusher.start()
    assert sending.wait(5)
    writer = threading.Thread(target=router.write_for, args=(b, "stdout", "b"))
    writer.start()
    writer.join(2)
    blocked = writer.is_alive()
    release.set()
    flusher.join()
    writer.join()
    assert not blocked


# -- OutStream ---------------------------------------------------------------------------


def test_write_rejects_bytes(streams, iopub):
    out, err = streams
    with pytest.raises(TypeError, match="must be str, not bytes"):
        out.write(b"bytes")
    with pytest.raises(TypeError):
        err.write(bytearray(b"x"))
    with pytest.raises(TypeError):
        out.write(None)
    assert iopub.events == []


def test_write_returns_len(streams, iopub, router):
    out, _ = streams
    with current(parent("A")):
        assert out.write("hello") == 5
        assert out.write("héllo ✓") == 7  # characters, not bytes
        assert out.write("") == 0
    router.flush_all()
    assert [t for _, t, _ in iopub.published] == ["hellohéllo ✓"]


def test_empty_write_starts_no_buffer(streams, iopub):
    out, _ = streams
    with current(parent("A")):
        out.write("")
    assert iopub.events == []


def test_print_and_writelines(streams, iopub, router):
    out, err = streams
    a = parent("A")
    with current(a):
        print("x", 1, sep="-", file=out)
        out.writelines(["a\n", "b\n"])
        print("oops", file=err)
    router.flush_all()
    assert iopub.published == [("stdout", "x-1\na\nb\n", a), ("stderr", "oops\n", a)]


def test_flush_flushes_the_current_parent_only(streams, iopub):
    out, _ = streams
    a, b = parent("A"), parent("B")
    run_in_parent(a, out.write, "a")
    run_in_parent(b, out.write, "b")
    run_in_parent(a, out.flush)
    assert iopub.published == [("stdout", "a", a)]


def test_close_flushes_and_stays_open(streams, iopub):
    out, _ = streams
    a = parent("A")
    with current(a):
        out.write("before close")
        out.close()
        assert iopub.published == [("stdout", "before close", a)]
        assert not out.closed
        assert out.write("after close") == 11


def test_stream_attributes(streams):
    out, err = streams
    assert out.name == "stdout" and err.name == "stderr"
    assert out.encoding == "utf-8"
    assert out.writable() and not out.readable()
    assert not out.isatty()


# -- threads started by user code ---------------------------------------------------------


def _thread_writing(out: OutStream, text: str) -> threading.Thread:
    return threading.Thread(target=out.write, args=(text,))


def test_thread_output_goes_to_the_parent_that_started_it(
    restore_thread_start, streams, iopub, router
):
    propagate_parent_to_threads()
    out, _ = streams
    a, b = parent("A"), parent("B")
    with current(a):
        ta = _thread_writing(out, "from thread of A")
        ta.start()
    tb = None

    def start_b():
        nonlocal tb
        tb = _thread_writing(out, "from thread of B")
        tb.start()

    run_in_parent(b, start_b)
    ta.join()
    tb.join()
    router.flush_all()
    assert sorted(iopub.published, key=lambda e: e[1]) == [
        ("stdout", "from thread of A", a),
        ("stdout", "from thread of B", b),
    ]


def test_thread_keeps_its_parent_after_the_request_ended(
    restore_thread_start, streams, iopub, router
):
    propagate_parent_to_threads()
    out, _ = streams
    a = parent("A")
    go, done = threading.Event(), threading.Event()

    def late_writer():
        go.wait(5)
        print("late", file=out)
        # a thread started from that thread inherits the same parent
        inner = _thread_writing(out, "grandchild\n")
        inner.start()
        inner.join()
        done.set()

    with current(a):
        t = threading.Thread(target=late_writer)
        t.start()
    # the request is over (parent reset) and another one is current here
    with current(parent("B")):
        go.set()
        assert done.wait(5)
    t.join()
    router.flush_all()
    assert iopub.published == [("stdout", "late\ngrandchild\n", a)]


def test_thread_started_without_a_parent_has_none(restore_thread_start, streams, iopub, router):
    propagate_parent_to_threads()
    out, _ = streams
    with current(None):
        t = _thread_writing(out, "nobody's")
        t.start()
        t.join()
    router.flush_all()
    assert iopub.published == [("stdout", "nobody's", None)]


def test_get_parent_in_a_thread(restore_thread_start):
    propagate_parent_to_threads()
    a = parent("A")
    seen = []
    with current(a):
        t = threading.Thread(target=lambda: seen.append(get_parent()))
        t.start()
        t.join()
    assert seen == [a]
    # in the starting thread, the ContextVar wins over any thread attribute
    setattr(threading.current_thread(), ctx._THREAD_ATTR, parent("stale"))
    try:
        with current(a):
            assert get_parent() is a
    finally:
        delattr(threading.current_thread(), ctx._THREAD_ATTR)


@pytest.mark.skipif(
    getattr(__import__("sys").flags, "thread_inherit_context", False),
    reason="threads inherit the context on this interpreter",
)
def test_without_propagation_threads_lose_the_parent(restore_thread_start, streams, iopub, router):
    """Documents why ``propagate_parent_to_threads`` exists."""
    out, _ = streams
    with current(parent("A")):
        t = _thread_writing(out, "lost")
        t.start()
        t.join()
    router.flush_all()
    assert iopub.published == [("stdout", "lost", None)]


# -- IOPub on a real XPUB socket, with its task group running ------------------------------


def decoded(frames: list[bytes]) -> dict:
    """Verify and decode with jupyter_client, as a frontend would."""
    client = Session(key=KEY)
    idents, msg_list = client.feed_identities(frames)
    msg = client.deserialize(msg_list)
    msg["topic"] = idents
    return msg


class Subscriber:
    """A frontend's SUB socket on the kernel's XPUB."""

    def __init__(self, context: zmq.Context, address: str, topic: bytes = b"") -> None:
        self.socket = context.socket(zmq.SUB)
        self.socket.linger = 0
        self.socket.connect(address)
        self.socket.subscribe(topic)

    def next(self, timeout: float = 5) -> dict:
        assert self.socket.poll(int(timeout * 1000)), "nothing arrived"
        return decoded(self.socket.recv_multipart())

    def next_of(self, msg_type: str, timeout: float = 5) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if msg["msg_type"] == msg_type:
                return msg

    def drain(self, wait: float = 0.1) -> list[dict]:
        msgs = []
        while self.socket.poll(int(wait * 1000)):
            msgs.append(decoded(self.socket.recv_multipart()))
        return msgs


@pytest.fixture(params=["asyncio", "trio"])
def wired_iopub(request):
    """An IOPub whose task group runs, a stream router on it, and one subscriber
    that has already received its welcome."""
    context = zmq.Context()
    xpub = context.socket(zmq.XPUB)
    address = f"inproc://iopub-{id(xpub)}"
    xpub.bind(address)
    iop = IOPub(xpub, Codec(KEY), request.param, flush_interval=0.01)
    router = StreamRouter(iop.publish, iop.flush_soon)
    fd_output: list[tuple[str, str]] = []
    read_end, write_end = os.pipe()
    iop.start(router.flush_all)
    iop.forward_fds({"stdout": read_end}, lambda name, text: fd_output.append((name, text)))
    sub = Subscriber(context, address)
    assert sub.next_of("iopub_welcome")["content"] == {"subscription": ""}
    ns = SimpleNamespace(iopub=iop, router=router, sub=sub, context=context, address=address,
                         fd_write=write_end, fd_output=fd_output)
    yield ns
    iop.stop()
    os.close(write_end)
    os.close(read_end)
    sub.socket.close()
    context.term()


def test_each_new_subscriber_gets_a_welcome_on_its_topic(wired_iopub):
    w = wired_iopub
    status_only = Subscriber(w.context, w.address, b"kernel.status")
    welcome = status_only.next()
    assert welcome["msg_type"] == "iopub_welcome"
    assert welcome["content"] == {"subscription": "kernel.status"}
    assert welcome["topic"] == [b"kernel.status"]
    assert welcome["parent_header"] == {}
    # a subscriber of everything sees that welcome too (it matches its topic)
    assert w.sub.next_of("iopub_welcome")["content"] == {"subscription": "kernel.status"}
    # a second subscriber of everything gets a welcome of its own
    again = Subscriber(w.context, w.address)
    assert again.next_of("iopub_welcome")["content"] == {"subscription": ""}
    # JEP 65: a topic that is not UTF-8 gets no welcome
    binary = Subscriber(w.context, w.address, b"\xff\xfe")
    assert not binary.socket.poll(300)
    for sub in (status_only, again, binary):
        sub.socket.close()


def test_publish_sends_signed_frames_at_once(wired_iopub):
    w = wired_iopub
    p = parent("A", subshell_id="sub")
    w.iopub.publish("display_data", {"data": {"text/plain": "x"}}, p, {"m": 1}, [b"buf"])
    w.iopub.status("busy", p)
    display, status = w.sub.next(), w.sub.next()
    assert display["topic"] == [b"kernel.display_data"]
    assert display["content"] == {"data": {"text/plain": "x"}}
    assert display["metadata"] == {"m": 1}
    assert display["buffers"][0] == b"buf"
    assert display["header"]["subshell_id"] == "sub"
    assert display["parent_header"] == p  # verbatim
    assert status["topic"] == [b"kernel.status"]
    assert status["content"] == {"execution_state": "busy"}


def test_publish_order_holds_and_stop_flushes_what_is_buffered(wired_iopub):
    w = wired_iopub
    out = OutStream("stdout", w.router)
    a, b = parent("A"), parent("B")
    with current(a):
        w.iopub.status("busy", a)
        out.write("a-text")
        w.router.publish("execute_result", {"data": {}}, a)  # its buffered text goes first
    with current(b):
        out.write("b-text")
    w.iopub.stop()  # flushes what is buffered, then closes
    w.iopub.status("idle", b)  # after stop: dropped, no error
    summary = [(m["msg_type"], m["parent_header"].get("msg_id"), m["content"].get("text"))
               for m in w.sub.drain()]
    assert summary == [
        ("status", "A", None),
        ("stream", "A", "a-text"),
        ("execute_result", "A", None),
        ("stream", "B", "b-text"),
    ]


@pytest.mark.timeout(10)
def test_the_timer_flushes_a_burst_after_the_interval(wired_iopub):
    w = wired_iopub
    out = OutStream("stdout", w.router)  # keep a reference: IOBase.__del__ closes (= flushes)
    with current(parent("A")):
        out.write("tick")
        out.write(" tock")
    stream = w.sub.next_of("stream")
    assert stream["content"] == {"name": "stdout", "text": "tick tock"}


@pytest.mark.timeout(10)
def test_forward_fd_output_waits_for_text_the_iopub_thread_is_forwarding():
    """The iopub thread may have emptied the pipe and still be forwarding the text:
    forward_fd_output returns only after that, so the text comes before the idle."""
    context = zmq.Context()
    xpub = context.socket(zmq.XPUB)
    xpub.bind("inproc://fd-forwarding")
    iop = IOPub(xpub, Codec(KEY), "asyncio", flush_interval=0.01)
    forwarding, forwarded = threading.Event(), []

    def slow_forward(name, text):
        forwarding.set()
        time.sleep(0.3)  # the iopub thread, between its read and the text's arrival
        forwarded.append(text)

    read_end, write_end = os.pipe()
    iop.start(lambda: None)
    iop.forward_fds({"stdout": read_end}, slow_forward)
    try:
        os.write(write_end, b"from C")
        assert forwarding.wait(5)
        iop.forward_fd_output()  # the pipe is empty now
        assert forwarded == ["from C"]
    finally:
        iop.stop()
        os.close(write_end)
        os.close(read_end)
        context.term()


@pytest.mark.timeout(10)
def test_fd_output_is_read_by_the_task_group_and_the_rest_on_stop(wired_iopub):
    w = wired_iopub
    os.write(w.fd_write, "caf\u00e9 ".encode())
    deadline = time.monotonic() + 5
    while not w.fd_output and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.fd_output == [("stdout", "caf\u00e9 ")]
    os.write(w.fd_write, "half \u00e9".encode()[:-1])  # a character cut in two
    os.write(w.fd_write, "\u00e9".encode()[-1:] + b" last")
    w.iopub.stop()
    assert "".join(text for _, text in w.fd_output) == "caf\u00e9 half \u00e9 last"


def test_a_flush_requested_before_start_is_kept():
    context = zmq.Context()
    xpub = context.socket(zmq.XPUB)
    xpub.bind("inproc://before-start")
    iop = IOPub(xpub, Codec(KEY), "asyncio", flush_interval=0.01)
    flushed = threading.Event()
    iop.flush_soon()  # a write before the iopub thread runs
    iop.start(flushed.set)
    assert flushed.wait(5)
    iop.stop()
    context.term()


@pytest.mark.timeout(10)
def test_a_message_published_during_a_timed_flush_waits_for_the_buffered_text(iopub):
    """The timer's ``flush_all`` is paused while it sends A's buffered text; a
    publisher of A that flushes and then publishes meanwhile must come after it."""
    sending, release = threading.Event(), threading.Event()

    def publish(msg_type, content, parent, metadata=None, buffers=None):
        if msg_type == "stream":
            sending.set()
            release.wait(5)
        iopub.events.append(("publish", msg_type, dict(content), parent))

    iopub.publish = publish
    router = stream_router(iopub)
    a = parent("A")
    router.write_for(a, "stdout", "text")
    flusher = threading.Thread(target=router.flush_all)
    flusher.start()
    assert sending.wait(5)

    def publish_after_flush():
        router.flush(a)
        publish("display_data", {}, a)

    publisher = threading.Thread(target=publish_after_flush)
    publisher.start()
    publisher.join(0.2)  # the bug: it would publish now, ahead of the text
    release.set()
    flusher.join()
    publisher.join()
    assert [e[1] for e in iopub.events if e[0] == "publish"] == ["stream", "display_data"]


@pytest.mark.timeout(10)
def test_lone_surrogate_in_output_does_not_kill_iopub(wired_iopub):
    w = wired_iopub
    out = OutStream("stdout", w.router)
    run_in_parent(parent("A"), out.write, "bad \ud800 text")
    run_in_parent(parent("B"), out.write, "good text")
    w.router.flush_all()  # must not raise
    texts = [m["content"].get("text") for m in w.sub.drain()]
    assert "good text" in texts
    assert len(texts) == 2


def test_in_a_fork_each_line_is_written_whole(monkeypatch):
    """A forked child writes to fd 1 itself, a line per write: print() writes its
    arguments one by one, and children printing at once must not interleave them."""
    writes: list[tuple[int, bytes]] = []
    monkeypatch.setattr(streams_module, "_write_all", lambda fd, data: writes.append((fd, data)))
    out = OutStream("stdout", StreamRouter(lambda *a, **k: None, lambda: None))
    out.forked()
    print("child", 0, False, file=out)
    out.write("two\nlines and a st")
    out.write("art")
    assert writes == [(1, b"child 0 False\n"), (1, b"two\n")]
    out.flush()
    assert writes[-1] == (1, b"lines and a start")
    out.flush()  # nothing left
    assert len(writes) == 3
