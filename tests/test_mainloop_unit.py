"""``runtime.mainloop`` and ``runtime.guests`` without a display.

``SelectorToolkit`` is a real host loop (``selectors`` on the main thread)
behind the same interface as Qt and Tk, so these tests drive the real trio
guest run, the real stepped asyncio loop, the switches between native and
hosted loops, and a real ``Subshell`` handing its inbox from one loop to the
next while another thread keeps delivering.
"""

from __future__ import annotations

import selectors
import threading
import time

import anyio
import pytest
from jupyter_client.session import Session

from subshell_kernel.core.lifecycle import Outbox
from subshell_kernel.core.protocol import Codec
from subshell_kernel.runtime.mainloop import MainLoop
from subshell_kernel.runtime.subshell import Subshell
from subshell_kernel.transport.loop import call_soon_threadsafe

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


class SelectorToolkit:
    """A GUI loop without windows: watches fds, one timer, runs until quit."""

    name = "selector"

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.timer: tuple[float, object] | None = None
        self.depth = 0  # how many run() calls are active (2: a nested loop)
        self.wakeups = 0
        self._quit = False

    def watch(self, fd, callback):
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def unwatch(self, fd):
        self.selector.unregister(fd)

    def set_timer(self, ms, callback):
        self.timer = None if ms is None else (time.monotonic() + ms / 1000, callback)

    def _once(self, limit: float | None) -> None:
        due = None if self.timer is None else self.timer[0]
        until = min(x for x in (due, limit) if x is not None) if (due or limit) else None
        events = self.selector.select(None if until is None else max(0, until - time.monotonic()))
        self.wakeups += 1
        for key, _ in events:
            key.data()
        if self.timer is not None and time.monotonic() >= self.timer[0]:
            callback, self.timer = self.timer[1], None
            callback()

    def run(self):
        self._quit = False
        self.depth += 1
        try:
            while not self._quit:
                self._once(None)
        finally:
            self.depth -= 1

    def run_nested(self, seconds: float) -> None:
        """What plt.pause does: this GUI loop, inside a callback, for ``seconds``."""
        self.depth += 1
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                self._once(deadline)
        finally:
            self.depth -= 1

    def quit(self):
        self._quit = True

    def close(self):
        self.selector.close()


def main_loop(backend: str, toolkit: SelectorToolkit) -> MainLoop:
    return MainLoop(backend, {}, lambda fd: (lambda: None), make=lambda gui: toolkit)


@BACKENDS
def test_serve_runs_again_on_each_new_loop(backend):
    toolkit = SelectorToolkit()
    loops = main_loop(backend, toolkit)
    plan = ["selector", None, "selector", None]
    seen = []

    async def serve() -> bool:
        await anyio.sleep(0.01)  # timers work
        await anyio.to_thread.run_sync(time.sleep, 0.01)  # so do wake-ups from threads
        seen.append((loops.gui, toolkit.depth))
        if not plan:
            return False
        loops.switch(plan.pop(0))
        return True

    loops.run(serve)
    assert seen == [(None, 0), ("selector", 1), (None, 0), ("selector", 1), (None, 0)]


@BACKENDS
def test_a_nested_gui_loop_does_not_reenter_or_spin(backend):
    toolkit = SelectorToolkit()
    loops = main_loop(backend, toolkit)
    loops.switch("selector")
    events = []

    async def serve(first: list) -> bool:
        if first:
            first.pop()
            return True  # now switch to the toolkit
        call_soon = call_soon_threadsafe()
        threading.Timer(0.1, call_soon, (lambda: events.append(("woken", toolkit.depth)),)).start()
        before = toolkit.wakeups
        toolkit.run_nested(0.4)  # a plt.pause inside a cell
        events.append(("nested loop ended", toolkit.wakeups - before < 40))
        await anyio.sleep(0.05)
        return False

    loops.run(serve, [True])
    # the wake-up ran after the nested loop, on the outer one, and the nested loop slept
    assert events == [("nested loop ended", True), ("woken", 1)]


class Recorder:
    def __init__(self):
        self.replies: list[str] = []
        self.outbox = Outbox(status=lambda state, parent: None,
                             reply=lambda msg, content: self.replies.append(content["n"]),
                             flush=lambda parent: None)


class State:
    execution_count = 1

    def bind(self):
        pass

    def close(self):
        pass


@BACKENDS
def test_the_inbox_moves_to_the_next_loop_in_order_while_deliveries_go_on(backend):
    """Every 10th request switches loops (native, hosted, native...) while a thread
    delivers 300 requests as fast as it can: each is answered once, in order."""
    key = b"k"
    session = Session(key=key)
    codec = Codec(key)
    toolkit = SelectorToolkit()
    loops = main_loop(backend, toolkit)
    rec = Recorder()

    async def handle(sub, msg):
        n = msg.content["n"]
        if n % 10 == 9:
            loops.switch(None if loops.gui else "selector")
        return {"status": "ok", "n": n}

    sub = Subshell(None, State(), {"kernel_info_request": handle}, rec.outbox, backend,
                   main_loop=loops)
    messages = [codec.parse(session.serialize(session.msg("kernel_info_request", {"n": n})))
                for n in range(300)]

    def feed():
        for msg in messages:
            assert sub.deliver(msg)
            if msg.content.get("n", 0) % 50 == 0:
                time.sleep(0.005)
        deadline = time.monotonic() + 30
        while len(rec.replies) < len(messages) and time.monotonic() < deadline:
            time.sleep(0.01)
        sub.stop()

    for msg in messages:
        msg.decode()
    threading.Thread(target=feed, daemon=True).start()
    sub.run()
    assert rec.replies == list(range(300))
