"""Unit tests for stdout/stderr routing (``subshell_kernel.streams``) and the
iopub publisher (``subshell_kernel.iopub``), without sockets or a kernel process.

``StreamRouter`` is driven with a fake IOPub that records calls; ``IOPub`` is
given a fake socket.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from contextlib import contextmanager
from typing import Any

import pytest
import zmq
from jupyter_client.session import Session

from subshell_kernel import context as ctx
from subshell_kernel.context import current_parent, get_parent, propagate_parent_to_threads
from subshell_kernel.iopub import IOPub
from subshell_kernel.protocol import DELIM, Codec
from subshell_kernel.streams import OutStream, StreamRouter

KEY = b"0f6b2c1e-stream-tests"


# -- fakes and helpers ----------------------------------------------------------------


class FakeIOPub:
    """Records ``publish`` and ``flush_soon`` calls in one ordered log."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.on_flush_due = lambda: None

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


@pytest.fixture
def router(iopub) -> StreamRouter:
    return StreamRouter(iopub)


@pytest.fixture
def streams(router):
    return OutStream("stdout", router), OutStream("stderr", router)


@pytest.fixture
def restore_thread_start(monkeypatch):
    """``propagate_parent_to_threads`` patches ``Thread.start`` globally: undo it."""
    monkeypatch.setattr(threading.Thread, "start", threading.Thread.start)
    yield


# -- StreamRouter ---------------------------------------------------------------------


def test_router_installs_itself_as_the_periodic_flush(iopub, router):
    assert iopub.on_flush_due == router.flush_all


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
    router = StreamRouter(iopub, max_buffer=10)
    out = OutStream("stdout", router)
    a = parent("A")
    with current(a):
        out.write("12345")
        out.write("67890")  # exactly max_buffer: still buffered
        assert iopub.published == []
        out.write("X")  # past max_buffer: emitted now
        assert iopub.published == [("stdout", "1234567890X", a)]
        out.write("tail")
        assert iopub.flush_soon_calls == 1  # same buffer, not a new one
    router.flush_all()
    assert iopub.published == [("stdout", "1234567890X", a), ("stdout", "tail", a)]


def test_one_huge_write_is_emitted_at_once(iopub):
    router = StreamRouter(iopub, max_buffer=100)
    with current(parent("A")):
        OutStream("stdout", router).write("x" * 1000)
    assert [len(t) for _, t, _ in iopub.published] == [1000]
    router.flush_all()  # the emitted buffer left nothing behind: no empty stream message
    assert len(iopub.published) == 1


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
    router = StreamRouter(iopub, max_buffer=7)
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
    propagate_parent_to_threads()  # idempotent
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
    threading.Thread.start = ctx._original_start
    out, _ = streams
    with current(parent("A")):
        t = _thread_writing(out, "lost")
        t.start()
        t.join()
    router.flush_all()
    assert iopub.published == [("stdout", "lost", None)]


# -- IOPub with a fake socket -------------------------------------------------------------


class FakeSocket:
    """Collects multipart messages sent frame by frame, as ``send_frames`` does."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[list[bytes]] = []
        self.fail_after = fail_after
        self.closed = False
        self._parts: list[bytes] = []

    def send(self, frame, flags: int = 0) -> None:
        if self.closed or self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise zmq.ZMQError(zmq.ENOTSOCK)
        self._parts.append(bytes(frame))
        if not flags & zmq.SNDMORE:
            self.sent.append(self._parts)
            self._parts = []

    def close(self, linger=None) -> None:
        self.closed = True


def decoded(frames: list[bytes]) -> dict:
    """Verify and decode with jupyter_client, as a frontend would."""
    client = Session(key=KEY)
    idents, msg_list = client.feed_identities(frames)
    msg = client.deserialize(msg_list)
    msg["topic"] = idents
    return msg


@pytest.fixture
def real_iopub():
    sock = FakeSocket()
    iop = IOPub(sock, Codec(KEY), flush_interval=0.01)  # type: ignore[arg-type]
    iop.socket = sock
    yield iop
    iop.stop()


def test_iopub_publish_sends_signed_frames_at_once(real_iopub):
    p = parent("A", subshell_id="sub")
    real_iopub.publish("display_data", {"data": {"text/plain": "x"}}, p, {"m": 1}, [b"buf"])
    real_iopub.status("busy", p)
    sent = real_iopub.socket.sent
    assert len(sent) == 2
    display, status = decoded(sent[0]), decoded(sent[1])
    assert display["topic"] == [b"kernel.display_data"]
    assert display["content"] == {"data": {"text/plain": "x"}}
    assert display["metadata"] == {"m": 1}
    assert display["buffers"][0] == b"buf"
    assert display["header"]["subshell_id"] == "sub"
    assert json.loads(sent[0][sent[0].index(DELIM) + 3]) == p  # parent verbatim
    assert status["topic"] == [b"kernel.status"]
    assert status["content"] == {"execution_state": "busy"}


def test_iopub_keeps_publish_order_and_flushes_streams_on_stop(real_iopub):
    router = StreamRouter(real_iopub)  # type: ignore[arg-type]
    out = OutStream("stdout", router)
    a, b = parent("A"), parent("B")
    with current(a):
        real_iopub.status("busy", a)
        out.write("a-text")
        router.flush(a)  # publishers flush their request's stream first...
        real_iopub.publish("execute_result", {"data": {}}, a)  # ...then publish
    with current(b):
        out.write("b-text")  # still buffered when the stop arrives
    real_iopub.stop()
    real_iopub.status("idle", b)  # after stop: dropped, no error

    msgs = [decoded(f) for f in real_iopub.socket.sent]
    summary = [(m["msg_type"], m["parent_header"]["msg_id"], m["content"].get("text")) for m in msgs]
    assert summary == [
        ("status", "A", None),
        ("stream", "A", "a-text"),
        ("execute_result", "A", None),
        ("stream", "B", "b-text"),  # flushed by the stop
    ]
    assert real_iopub.socket.closed


@pytest.mark.timeout(10)
def test_iopub_timer_flushes_streams_after_the_interval(real_iopub):
    router = StreamRouter(real_iopub)  # type: ignore[arg-type]
    real_iopub.start()
    out = OutStream("stdout", router)  # keep a reference: IOBase.__del__ closes (= flushes)
    with current(parent("A")):
        out.write("tick")
    deadline = time.monotonic() + 5
    while not real_iopub.socket.sent and time.monotonic() < deadline:
        time.sleep(0.005)
    [stream] = [decoded(f) for f in real_iopub.socket.sent]
    assert stream["content"] == {"name": "stdout", "text": "tick"}


def test_iopub_survives_a_failing_socket():
    sock = FakeSocket(fail_after=1)
    iop = IOPub(sock, Codec(KEY))  # type: ignore[arg-type]
    iop.status("busy", None)
    iop.status("idle", None)  # raises inside: logged, not propagated
    iop.status("never sent", None)
    assert len(sock.sent) == 1


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
    router = StreamRouter(iopub)  # type: ignore[arg-type]
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
def test_lone_surrogate_in_output_does_not_kill_iopub(real_iopub):
    router = StreamRouter(real_iopub)  # type: ignore[arg-type]
    out = OutStream("stdout", router)
    a, b = parent("A"), parent("B")
    run_in_parent(a, out.write, "bad \ud800 text")
    run_in_parent(b, out.write, "good text")
    real_iopub.stop()  # flushes: must not raise
    texts = [decoded(f)["content"].get("text") for f in real_iopub.socket.sent]
    assert "good text" in texts
    assert len(texts) == 2
