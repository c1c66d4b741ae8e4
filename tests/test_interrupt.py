"""Interrupting the parent subshell: signal mode (SIGINT) and message mode (control).

Each test has a fresh kernel of its own (``any_kernel``: asyncio and trio), so a
broken interrupt cannot spoil other tests.  A cell announces that it runs by
printing (with ``flush=True``) before it blocks; the interrupt is sent only
once that output has arrived.
"""

from __future__ import annotations

import re
import time

import pytest

from .harness import KernelHarness

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
INTERRUPT_BOUND = 5.0  # seconds from interrupt to execute_reply (generous: 2 shared cores)
MACHINERY = (
    "site-packages/anyio", "asyncio/", "/trio/", "subshell_kernel", "site-packages/IPython",
)


def is_trio(k: KernelHarness) -> bool:
    return k.km.kernel_name == "subshell-trio"


def wait_started(k: KernelHarness, msg_id: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while "started" not in k.stdout(msg_id):
        if msg_id in k._replies:
            raise AssertionError(f"cell ended before it started: {k._replies[msg_id]['content']}")
        if time.monotonic() > deadline:
            raise TimeoutError("cell did not start")
        k._pump(0.01)
    time.sleep(0.1)  # let it reach the blocking call


def interrupt_signal(k: KernelHarness) -> None:
    k.km.interrupt_kernel()


def interrupt_message(k: KernelHarness) -> None:
    reply = k.control("interrupt_request", timeout=5)
    assert reply["msg_type"] == "interrupt_reply"
    assert reply["content"]["status"] == "ok"


def interrupt_and_check(k: KernelHarness, code: str, how) -> dict:
    """Run ``code`` (which prints 'started' then blocks), interrupt it, check the error."""
    msg_id = k.execute(code)
    wait_started(k, msg_id)
    t0 = time.monotonic()
    how(k)
    reply = k.reply(msg_id, timeout=INTERRUPT_BOUND)
    elapsed = time.monotonic() - t0
    content = reply["content"]
    assert content["status"] == "error", content
    assert content["ename"] == "KeyboardInterrupt", content
    assert elapsed < INTERRUPT_BOUND
    msgs = k.iopub(msg_id, timeout=5)
    errors = [m for m in msgs if m["msg_type"] == "error"]
    assert len(errors) == 1 and errors[0]["content"]["ename"] == "KeyboardInterrupt"
    assert_runs_normally(k)
    return content


def traceback_text(content: dict) -> str:
    return ANSI.sub("", "\n".join(content["traceback"]))


def assert_user_frames_only(content: dict) -> None:
    tb = traceback_text(content)
    for fragment in MACHINERY:
        assert fragment not in tb, f"{fragment!r} in interrupt traceback:\n{tb}"


def assert_runs_normally(k: KernelHarness) -> None:
    """The next cell (which itself blocks a little) runs to completion."""
    reply, msgs = k.run("import time\ntime.sleep(0.3)\n'after interrupt'", timeout=10)
    assert reply["content"]["status"] == "ok", reply["content"]
    results = [m for m in msgs if m["msg_type"] == "execute_result"]
    assert results[0]["content"]["data"]["text/plain"] == "'after interrupt'"


# -- signal mode ---------------------------------------------------------------------------
def test_kernelspec_uses_signal_mode(any_kernel):
    assert any_kernel.km.kernel_spec.interrupt_mode == "signal"


def test_signal_interrupt_blocking_sleep(any_kernel):
    content = interrupt_and_check(
        any_kernel, "import time\nprint('started', flush=True)\ntime.sleep(30)", interrupt_signal
    )
    assert_user_frames_only(content)
    assert "time.sleep(30)" in traceback_text(content)


def test_signal_interrupt_busy_loop(any_kernel):
    interrupt_and_check(
        any_kernel, "print('started', flush=True)\nwhile True:\n    pass", interrupt_signal
    )


def test_signal_interrupt_await_native(any_kernel):
    k = any_kernel
    if is_trio(k):
        code = "import trio\nprint('started', flush=True)\nawait trio.sleep(30)"
    else:
        code = "import asyncio\nprint('started', flush=True)\nawait asyncio.sleep(30)"
    content = interrupt_and_check(k, code, interrupt_signal)
    assert_user_frames_only(content)
    assert "sleep(30)" in traceback_text(content)  # the cell's own frame is kept


# -- message mode (interrupt_request on control) ----------------------------------------------
def test_message_interrupt_blocking(any_kernel):
    content = interrupt_and_check(
        any_kernel, "import time\nprint('started', flush=True)\ntime.sleep(30)", interrupt_message
    )
    assert_user_frames_only(content)


def test_message_interrupt_await(any_kernel):
    k = any_kernel
    if is_trio(k):
        code = "import trio\nprint('started', flush=True)\nawait trio.sleep(30)"
    else:
        code = "import asyncio\nprint('started', flush=True)\nawait asyncio.sleep(30)"
    content = interrupt_and_check(k, code, interrupt_message)
    assert_user_frames_only(content)
    assert "sleep(30)" in traceback_text(content)


def test_message_interrupt_await_anyio_nested(fresh_kernel):
    code = (
        "import anyio\n"
        "async def inner():\n"
        "    await anyio.sleep(30)\n"
        "async def outer():\n"
        "    async with anyio.create_task_group() as tg:\n"
        "        tg.start_soon(inner)\n"
        "print('started', flush=True)\n"
        "await outer()"
    )
    content = interrupt_and_check(fresh_kernel, code, interrupt_message)
    assert_user_frames_only(content)


def test_message_interrupt_busy_loop(fresh_kernel):
    interrupt_and_check(
        fresh_kernel, "print('started', flush=True)\nn = 0\nwhile True:\n    n += 1",
        interrupt_message,
    )


@pytest.mark.parametrize("how", [interrupt_signal, interrupt_message], ids=["signal", "message"])
def test_interrupt_input(fresh_kernel, how):
    k = fresh_kernel
    msg_id = k.execute("x = input('? ')", allow_stdin=True)
    k.stdin_request(timeout=10)
    how(k)
    reply = k.reply(msg_id, timeout=INTERRUPT_BOUND)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert_runs_normally(k)


def test_interrupt_then_state_preserved(fresh_kernel):
    k = fresh_kernel
    k.run("kept = [1, 2, 3]")
    interrupt_and_check(
        k, "import time\nkept.append(4)\nprint('started', flush=True)\ntime.sleep(30)\n"
        "kept.append(5)", interrupt_signal,
    )
    reply, msgs = k.run("kept")
    results = [m for m in msgs if m["msg_type"] == "execute_result"]
    assert results[0]["content"]["data"]["text/plain"] == "[1, 2, 3, 4]"


# -- idle ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", [interrupt_signal, interrupt_message], ids=["signal", "message"])
def test_interrupt_while_idle_is_harmless(any_kernel, how):
    k = any_kernel
    reply, _ = k.run("1")
    assert reply["content"]["status"] == "ok"
    how(k)
    time.sleep(0.3)
    assert k.is_alive()
    # no late KeyboardInterrupt leaks into the next cells, blocking or awaiting
    assert_runs_normally(k)
    reply, _ = k.run("import anyio\nawait anyio.sleep(0.3)\n'ok'", timeout=10)
    assert reply["content"]["status"] == "ok", reply["content"]


# -- queued requests and races -------------------------------------------------------------
def test_interrupt_aborts_queued_executes(fresh_kernel):
    """An interrupted cell is an error: with stop_on_error, what was queued is aborted."""
    k = fresh_kernel
    k.run("queued_ran = []")
    first = k.execute("import time\nprint('started', flush=True)\ntime.sleep(30)")
    second = k.execute("queued_ran.append(2)")
    wait_started(k, first)
    interrupt_signal(k)
    assert k.reply(first, timeout=INTERRUPT_BOUND)["content"]["ename"] == "KeyboardInterrupt"
    assert k.reply(second, timeout=5)["content"]["status"] == "aborted"
    reply, msgs = k.run("queued_ran")
    results = [m for m in msgs if m["msg_type"] == "execute_result"]
    assert results[0]["content"]["data"]["text/plain"] == "[]"


def test_interrupt_races_with_cell_end(any_kernel):
    """Interrupts landing at random points, often just as a short cell ends.

    Every cell either completes or fails with KeyboardInterrupt, and no late
    interrupt escapes into the kernel's own code or into the next cell.
    """
    import random

    k = any_kernel
    rng = random.Random(1234)
    for i in range(16):
        kind = i % 3
        if kind == 0:
            code = f"import time\ntime.sleep({rng.random() * 0.08:.3f})"
        elif kind == 1:
            code = f"import anyio\nawait anyio.sleep({rng.random() * 0.08:.3f})"
        else:
            code = f"x = 0\nfor j in range({rng.randint(0, 100000)}):\n    x += j"
        msg_id = k.execute(code, stop_on_error=False)
        time.sleep(rng.random() * 0.1)
        interrupt_signal(k) if rng.random() < 0.5 else interrupt_message(k)
        content = k.reply(msg_id, timeout=INTERRUPT_BOUND)["content"]
        assert content["status"] == "ok" or content["ename"] == "KeyboardInterrupt", content
        # a sentinel cell, not interrupted, must complete
        reply, _ = k.run("import time\ntime.sleep(0.02)\n'sentinel'", timeout=10)
        assert reply["content"]["status"] == "ok", (i, code, reply["content"])
    assert k.is_alive()


TRACE_A_CALL = """\
import sys
def f():
    return 1
sys.settrace(lambda *a: None)
f()
sys.settrace(None)
print("traced")
"""


def test_the_parent_can_trace_after_a_subshell_was_interrupted(fresh_kernel):
    """Leaving user code in a child subshell used to drop a pending interrupt with
    PyThreadState_SetAsyncExc(id, NULL), which leaves CPython 3.11's "async exception"
    flag set for good: the next sys.settrace on the parent (pdb, a debugger) then spun
    for ever at its first function call."""
    k = fresh_kernel
    sub = k.create_subshell()
    reply, _ = k.run("x = 1", sub)
    assert reply["content"]["status"] == "ok"
    spin = k.execute("print('started', flush=True)\nwhile True:\n    pass", sub)
    wait_started(k, spin)
    k.control("interrupt_request", {"subshell_id": sub})
    assert k.reply(spin, timeout=INTERRUPT_BOUND)["content"]["ename"] == "KeyboardInterrupt"
    reply, _ = k.run(TRACE_A_CALL, timeout=10)
    assert reply["content"]["status"] == "ok"
    assert k.stdout(reply["parent_header"]["msg_id"]) == "traced\n"
