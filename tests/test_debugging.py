"""pdb in the kernel, and ``%autoawait`` with another library's loop.

``pdb.set_trace()``, ``breakpoint()``, ``%debug`` and ``%pdb`` read their
commands from the frontend over stdin, in the parent subshell and in a child;
an interrupt while the debugger waits ends the cell and leaves the kernel
usable (``adapter/debugging.py``).  After ``%autoawait trio`` in an asyncio
kernel (or the reverse), an ``await`` cell runs on that library's loop and an
interrupt cancels it (``adapter/autoawait.py``).
"""

from __future__ import annotations

import time

import pytest

from .test_ecosystem import ok, plain, run_ok

PARENT_AND_CHILD = pytest.mark.parametrize("where", ["parent", "subshell"])


def subshell_of(kernel, where: str) -> str | None:
    return kernel.create_subshell() if where == "subshell" else None


def debug(kernel, code: str, answers: list[str], subshell_id: str | None = None):
    """Run ``code``, answer each ``input_request`` in turn; (reply, prompts, stdout)."""
    msg_id = kernel.execute(code, subshell_id, allow_stdin=True)
    prompts = []
    for answer in answers:
        request = kernel.stdin_request()
        assert request["parent_header"]["msg_id"] == msg_id
        prompts.append(request["content"]["prompt"])
        kernel.input_reply(request, answer)
    reply = kernel.reply(msg_id)
    kernel.iopub(msg_id)
    return reply, prompts, plain(kernel.stdout(msg_id))


def test_set_trace_on_a_cells_last_line_stops_in_the_cell(kernel):
    reply, prompts, stdout = debug(kernel, "x = 6 * 7\nimport pdb; pdb.set_trace()",
                                   ["p x", "c"])
    ok(reply)
    assert prompts == ["ipdb> ", "ipdb> "]  # IPython's debugger, as under ipykernel
    assert "--Return--" in stdout and "<module>" in stdout and "pdb.set_trace()" in stdout
    assert "42\n" in stdout
    # not in the display hook that shows the cell's value (the kernel's own code)
    assert "displayhook" not in stdout and "adapter/shell.py" not in stdout


@PARENT_AND_CHILD
def test_breakpoint_in_a_function(kernel, where):
    sid = subshell_of(kernel, where)
    code = "def f():\n    y = 41\n    breakpoint()\n    return y + 1\nf()"
    reply, prompts, stdout = debug(kernel, code, ["p y", "c"], sid)
    ok(reply)
    assert prompts == ["ipdb> ", "ipdb> "]
    assert "41\n" in stdout
    assert kernel._iopub[reply["parent_header"]["msg_id"]][-2]["content"]["data"] == {
        "text/plain": "42"}


@PARENT_AND_CHILD
def test_an_interrupt_ends_a_debugging_session(kernel, where):
    """pdb catches KeyboardInterrupt and prompts again; the kernel's debugger ends."""
    sid = subshell_of(kernel, where)
    msg_id = kernel.execute("import pdb\nfor i in range(3):\n    pdb.set_trace()",
                            sid, allow_stdin=True)
    kernel.stdin_request()
    queued = kernel.execute("queued = True", sid)
    time.sleep(0.2)
    if sid is None:
        kernel.km.interrupt_kernel()
    else:
        assert kernel.control("interrupt_request", {"subshell_id": sid})["content"] == {
            "status": "ok"}
    reply = kernel.reply(msg_id, timeout=10)["content"]
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert kernel.reply(queued)["content"]["status"] == "aborted"  # as after any interrupt
    _, _, stdout = run_ok(kernel, "print(i, 'queued' in dir())")
    assert stdout == "0 False\n"
    assert kernel._stdin == []  # no debugger left asking


def test_debug_magic_after_an_error(kernel):
    reply, _ = kernel.run("def g(v):\n    return 1 / v\ng(0)")
    assert reply["content"]["ename"] == "ZeroDivisionError"
    reply, prompts, stdout = debug(kernel, "%debug", ["p v", "q"])
    ok(reply)
    assert prompts == ["ipdb> ", "ipdb> "]
    assert "return 1 / v" in stdout and "0\n" in stdout


def test_pdb_magic_enters_the_debugger_on_error(kernel):
    run_ok(kernel, "%pdb on")
    try:
        reply, prompts, stdout = debug(kernel, "def h(w):\n    return w[5]\nh([])", ["p w", "q"])
        assert reply["content"]["ename"] == "IndexError"
        assert prompts == ["ipdb> ", "ipdb> "]
        assert "[]\n" in stdout
    finally:
        run_ok(kernel, "%pdb off")


# -- %autoawait ------------------------------------------------------------------------------
def test_autoawait_trio_in_an_asyncio_kernel(kernel):
    run_ok(kernel, "%autoawait trio")
    try:
        _, _, stdout = run_ok(kernel, "import sniffio, trio\nawait trio.sleep(0.01)\n"
                                      "print(sniffio.current_async_library())")
        assert stdout == "trio\n"
        msg_id = kernel.execute("print('sleeping', flush=True)\nawait trio.sleep(30)")
        while "sleeping" not in kernel.stdout(msg_id):
            kernel._pump(0.02)
        start = time.monotonic()
        kernel.km.interrupt_kernel()
        reply = kernel.reply(msg_id, timeout=10)["content"]
        assert reply["ename"] == "KeyboardInterrupt" and time.monotonic() - start < 5
    finally:
        run_ok(kernel, "%autoawait asyncio")
    _, _, stdout = run_ok(kernel, "import asyncio\nawait asyncio.sleep(0)\n"
                                  "print(sniffio.current_async_library())")
    assert stdout == "asyncio\n"


def test_autoawait_asyncio_in_a_trio_kernel(trio_kernel):
    _, _, stdout = run_ok(trio_kernel, "%autoawait")
    assert "trio" in stdout  # the kernel's own loop, by default
    run_ok(trio_kernel, "%autoawait asyncio")
    _, _, stdout = run_ok(trio_kernel, "import asyncio, sniffio\nawait asyncio.sleep(0.01)\n"
                                       "print(sniffio.current_async_library())")
    assert stdout == "asyncio\n"
    msg_id = trio_kernel.execute("await asyncio.sleep(30)")
    time.sleep(0.5)
    trio_kernel.km.interrupt_kernel()
    assert trio_kernel.reply(msg_id, timeout=10)["content"]["ename"] == "KeyboardInterrupt"
