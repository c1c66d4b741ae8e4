"""Core messaging of the parent subshell (protocol 5.5), as a frontend sees it.

Every test talks to a real kernel process through jupyter_client.  Tests that
do not break the kernel share the module-scoped ``kernel`` (asyncio backend);
tests that shut it down or otherwise ruin it take a ``fresh_kernel``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
import zmq
from jupyter_client.session import Session

from .harness import KernelHarness


@pytest.fixture(scope="module")
def kernel(request):
    """The module's kernel: asyncio, or the kernelspec a test names (``BOTH_BACKENDS``)."""
    k = KernelHarness(getattr(request, "param", "subshell"))
    yield k
    k.close()

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def of_type(msgs: list[dict], msg_type: str) -> list[dict]:
    return [m for m in msgs if m["msg_type"] == msg_type]


def streams(msgs: list[dict]) -> list[tuple[str, str]]:
    return [(m["content"]["name"], m["content"]["text"]) for m in of_type(msgs, "stream")]


def ok(reply: dict) -> dict:
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]


def request(k: KernelHarness, msg_type: str, content: dict | None = None, timeout: float = 30):
    """Send a shell request; return (reply, iopub messages up to its idle)."""
    msg_id = k.send(msg_type, content or {})
    return k.reply(msg_id, timeout), k.iopub(msg_id, timeout)


def wait_until(k: KernelHarness, predicate, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        k._pump(0.01)


def pump_for(k: KernelHarness, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        k._pump(0.02)


# -- runs first: nothing has imported much into the kernel yet ------------------------------
def test_tornado_not_imported(kernel):
    reply, msgs = kernel.run("import sys\n'tornado' in sys.modules")
    ok(reply)
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "False"


# -- kernel_info -------------------------------------------------------------------------
def _check_kernel_info(content: dict) -> None:
    assert content["status"] == "ok"
    assert content["protocol_version"] == "5.5"
    assert "kernel subshells" in content["supported_features"]
    assert content["language_info"]["name"] == "python"
    assert content["language_info"]["file_extension"] == ".py"
    assert content["implementation"]
    assert isinstance(content["banner"], str)


def test_kernel_info_shell(kernel):
    reply, msgs = request(kernel, "kernel_info_request")
    assert reply["msg_type"] == "kernel_info_reply"
    _check_kernel_info(reply["content"])
    assert [m["content"]["execution_state"] for m in msgs] == ["busy", "idle"]


def test_kernel_info_control(kernel):
    reply = kernel.control("kernel_info_request")
    assert reply["msg_type"] == "kernel_info_reply"
    _check_kernel_info(reply["content"])
    msgs = kernel.iopub(reply["parent_header"]["msg_id"], timeout=5)
    assert [m["content"]["execution_state"] for m in msgs if m["msg_type"] == "status"] == [
        "busy", "idle"
    ]


# -- status around every request ---------------------------------------------------------
@pytest.mark.parametrize(
    "msg_type, content",
    [
        ("execute_request", {"code": "1", "silent": False, "store_history": False}),
        ("complete_request", {"code": "pri", "cursor_pos": 3}),
        ("inspect_request", {"code": "len", "cursor_pos": 3, "detail_level": 0}),
        ("history_request", {"hist_access_type": "tail", "n": 1, "output": False, "raw": True}),
        ("is_complete_request", {"code": "x = 1"}),
        ("kernel_info_request", {}),
        ("comm_info_request", {}),
    ],
)
def test_busy_idle_around_request(kernel, msg_type, content):
    msg_id = kernel.send(msg_type, content)
    reply = kernel.reply(msg_id, timeout=10)
    assert reply["msg_type"] == msg_type.replace("_request", "_reply")
    assert reply["parent_header"]["msg_id"] == msg_id
    msgs = kernel.iopub(msg_id, timeout=10)
    status = of_type(msgs, "status")
    assert msgs[0]["msg_type"] == "status" and msgs[0]["content"]["execution_state"] == "busy"
    assert msgs[-1]["msg_type"] == "status" and msgs[-1]["content"]["execution_state"] == "idle"
    assert [s["content"]["execution_state"] for s in status] == ["busy", "idle"]
    for m in msgs:
        assert m["parent_header"]["msg_id"] == msg_id
        assert m["parent_header"]["msg_type"] == msg_type
        assert m["parent_header"]["session"] == kernel.session.session


# -- execute -----------------------------------------------------------------------------
def test_execute_input_and_result_counts(kernel):
    reply, msgs = kernel.run("6 * 7")
    content = ok(reply)
    n = content["execution_count"]
    (inp,) = of_type(msgs, "execute_input")
    assert inp["content"]["code"] == "6 * 7"
    assert inp["content"]["execution_count"] == n
    (res,) = of_type(msgs, "execute_result")
    assert res["content"]["data"]["text/plain"] == "42"
    assert res["content"]["execution_count"] == n
    # the next stored cell gets the next number
    reply2, msgs2 = kernel.run("None")
    assert ok(reply2)["execution_count"] == n + 1
    assert of_type(msgs2, "execute_input")[0]["content"]["execution_count"] == n + 1
    assert not of_type(msgs2, "execute_result")  # None is not displayed


def test_display_and_update_display(kernel):
    code = (
        "from IPython.display import display, update_display\n"
        "display({'text/plain': 'first'}, raw=True, display_id='dd1')\n"
        "update_display({'text/plain': 'second'}, raw=True, display_id='dd1')\n"
    )
    reply, msgs = kernel.run(code)
    ok(reply)
    (disp,) = of_type(msgs, "display_data")
    assert disp["content"]["data"]["text/plain"] == "first"
    assert disp["content"]["transient"]["display_id"] == "dd1"
    (upd,) = of_type(msgs, "update_display_data")
    assert upd["content"]["data"]["text/plain"] == "second"
    assert upd["content"]["transient"]["display_id"] == "dd1"
    assert msgs.index(disp) < msgs.index(upd)


def test_clear_output(kernel):
    code = (
        "from IPython.display import clear_output\n"
        "print('before')\nclear_output(wait=True)\nprint('after')"
    )
    reply, msgs = kernel.run(code)
    ok(reply)
    kinds = [(m["msg_type"], m["content"].get("text")) for m in msgs
             if m["msg_type"] in ("stream", "clear_output")]
    assert kinds == [("stream", "before\n"), ("clear_output", None), ("stream", "after\n")]
    assert of_type(msgs, "clear_output")[0]["content"]["wait"] is True


def test_error_message_and_reply(kernel):
    reply, msgs = kernel.run("def f():\n    return 1/0\nf()")
    content = reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "ZeroDivisionError"
    assert "division by zero" in content["evalue"]
    assert isinstance(content["traceback"], list) and content["traceback"]
    (err,) = of_type(msgs, "error")
    assert err["content"]["ename"] == "ZeroDivisionError"
    assert err["content"]["evalue"] == content["evalue"]
    tb = plain("\n".join(err["content"]["traceback"]))
    assert "ZeroDivisionError" in tb and "return 1/0" in tb
    assert not of_type(msgs, "execute_result")


def test_syntax_error_reply(kernel):
    reply, msgs = kernel.run("def f(:\n    pass")
    content = reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "SyntaxError"
    (err,) = of_type(msgs, "error")
    assert err["content"]["ename"] == "SyntaxError"
    assert ok(kernel.run("1")[0])


def test_silent_publishes_only_status(kernel):
    before = ok(kernel.run("None")[0])["execution_count"]
    code = "from IPython.display import display\ndisplay('nope')\nsilent_var = 5\n1 + 1"
    reply, msgs = kernel.run(code, silent=True, store_history=True)
    ok(reply)
    assert [m["msg_type"] for m in msgs] == ["status", "status"], [
        (m["msg_type"], m["content"]) for m in msgs
    ]
    reply, msgs = kernel.run("silent_var")
    assert ok(reply)["execution_count"] == before + 1  # silent forces store_history off
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "5"


def test_silent_publishes_no_stream(kernel):
    code = "import sys\nprint('shh')\nprint('hush', file=sys.stderr)"
    reply, msgs = kernel.run(code, silent=True)
    ok(reply)
    assert [m["msg_type"] for m in msgs] == ["status", "status"], [
        (m["msg_type"], m["content"]) for m in msgs
    ]


def test_store_history_false_keeps_count(kernel):
    n = ok(kernel.run("'a'")[0])["execution_count"]
    reply, msgs = kernel.run("'b'", store_history=False)
    ok(reply)
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'b'"
    reply = kernel.run("'c'")[0]
    assert ok(reply)["execution_count"] == n + 1
    hist = ok(request(kernel, "history_request",
                      {"hist_access_type": "tail", "n": 2, "output": False, "raw": True})[0])
    assert [h[2] for h in hist["history"]] == ["'a'", "'c'"]  # 'b' was not stored


def test_user_expressions(kernel):
    kernel.run("ue_x = 20")
    reply, _ = kernel.run(
        "ue_y = 2",
        user_expressions={"sum": "ue_x + ue_y", "bad": "undefined_name_xyz", "s": "'hi'"},
    )
    ue = ok(reply)["user_expressions"]
    assert ue["sum"]["status"] == "ok"
    assert ue["sum"]["data"]["text/plain"] == "22"
    assert ue["s"]["data"]["text/plain"] == "'hi'"
    assert ue["bad"]["status"] == "error"
    assert ue["bad"]["ename"] == "NameError"


def test_stop_on_error_aborts_queued(kernel):
    kernel.run("soe_ran = []")
    first = kernel.execute("import time\ntime.sleep(0.5)\nraise ValueError('first fails')")
    second = kernel.execute("soe_ran.append(2)")
    third = kernel.execute("soe_ran.append(3)")
    assert kernel.reply(first)["content"]["status"] == "error"
    assert kernel.reply(second)["content"]["status"] == "aborted"
    assert kernel.reply(third)["content"]["status"] == "aborted"
    for msg_id in (second, third):  # aborted requests still get busy/idle
        states = [m["content"]["execution_state"] for m in of_type(kernel.iopub(msg_id), "status")]
        assert states == ["busy", "idle"]
    # requests sent after the error was handled run again
    reply, msgs = kernel.run("soe_ran")
    ok(reply)
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "[]"


def test_stop_on_error_false_runs_queued(kernel):
    kernel.run("soe2_ran = []")
    first = kernel.execute(
        "import time\ntime.sleep(0.5)\nraise ValueError('first fails')", stop_on_error=False
    )
    second = kernel.execute("soe2_ran.append(2)")
    third = kernel.execute("soe2_ran.append(3)")
    assert kernel.reply(first)["content"]["status"] == "error"
    assert kernel.reply(second)["content"]["status"] == "ok"
    assert kernel.reply(third)["content"]["status"] == "ok"
    reply, msgs = kernel.run("soe2_ran")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "[2, 3]"


# -- completion, inspection, history, is_complete ------------------------------------------
def test_complete_import(kernel):
    reply, _ = request(kernel, "complete_request", {"code": "import o", "cursor_pos": 8})
    c = ok(reply)
    assert "os" in c["matches"]
    assert c["cursor_start"] == 7 and c["cursor_end"] == 8


def test_complete_builtin_and_namespace(kernel):
    kernel.run("my_completion_var_123 = 1")
    c = ok(request(kernel, "complete_request", {"code": "pri", "cursor_pos": 3})[0])
    assert "print" in c["matches"]
    assert c["cursor_start"] == 0 and c["cursor_end"] == 3
    code = "x = my_completion_va"
    c = ok(request(kernel, "complete_request", {"code": code, "cursor_pos": len(code)})[0])
    assert "my_completion_var_123" in c["matches"]
    assert c["cursor_start"] == 4


def test_inspect(kernel):
    c = ok(request(kernel, "inspect_request",
                   {"code": "print", "cursor_pos": 5, "detail_level": 0})[0])
    assert c["found"] is True
    assert "print" in plain(c["data"]["text/plain"])
    c = ok(request(kernel, "inspect_request",
                   {"code": "no_such_name_qq", "cursor_pos": 5, "detail_level": 0})[0])
    assert c["found"] is False


def test_inspect_detail_shows_source(kernel):
    kernel.run("def inspected_fn(a):\n    'the docstring'\n    return a * 41")
    c = ok(request(kernel, "inspect_request",
                   {"code": "x = inspected_fn(", "cursor_pos": 16, "detail_level": 0})[0])
    assert c["found"] and "the docstring" in plain(c["data"]["text/plain"])
    c = ok(request(kernel, "inspect_request",
                   {"code": "inspected_fn", "cursor_pos": 12, "detail_level": 1})[0])
    assert "return a * 41" in plain(c["data"]["text/plain"])


def test_cells_reach_the_history_file_in_order(kernel):
    """Back-to-back cells are in IPython's history.sqlite soon after, each once, in order:
    the saving thread gathers them into few commits (``adapter.history``)."""
    codes = [f"history_file_marker = {i}" for i in range(10)]
    lines = [ok(kernel.run(code)[0])["execution_count"] for code in codes]
    path = Path(os.environ["IPYTHONDIR"]) / "profile_default" / "history.sqlite"
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(path) as db:
            found = db.execute("SELECT line, source_raw FROM history WHERE source_raw LIKE "
                               "'history_file_marker = %' ORDER BY line").fetchall()
        if len(found) >= len(codes) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert found == list(zip(lines, codes))


def test_history_tail_range_search(kernel):
    codes = ["hist_marker_a = 1", "hist_marker_b = 2", "hist_marker_a + hist_marker_b"]
    for code in codes:
        ok(kernel.run(code)[0])
    last_count = ok(kernel.run("'last'")[0])["execution_count"]
    codes.append("'last'")

    tail = ok(request(kernel, "history_request",
                      {"hist_access_type": "tail", "n": 4, "output": False, "raw": True})[0])
    hist = tail["history"]
    assert [h[2] for h in hist] == codes
    assert hist[-1][1] == last_count

    rng = ok(request(kernel, "history_request", {
        "hist_access_type": "range", "session": 0, "start": last_count - 3,
        "stop": last_count + 1, "output": False, "raw": True})[0])
    assert [h[2] for h in rng["history"]] == codes
    assert [h[1] for h in rng["history"]] == list(range(last_count - 3, last_count + 1))

    out = ok(request(kernel, "history_request",
                     {"hist_access_type": "tail", "n": 2, "output": True, "raw": True})[0])
    assert [h[2][0] for h in out["history"]] == codes[-2:]
    # outputs are kept in memory for the current session (not in the db by default)
    out = ok(request(kernel, "history_request", {
        "hist_access_type": "range", "session": 0, "start": last_count - 1,
        "stop": last_count + 1, "output": True, "raw": True})[0])
    assert [h[2] for h in out["history"]] == [["hist_marker_a + hist_marker_b", "3"],
                                              ["'last'", "'last'"]]

    found = ok(request(kernel, "history_request", {
        "hist_access_type": "search", "pattern": "hist_marker_?=*", "output": False,
        "raw": True})[0])
    assert not found["history"]  # glob is literal about the missing space
    found = ok(request(kernel, "history_request", {
        "hist_access_type": "search", "pattern": "hist_marker_* = *", "output": False,
        "raw": True})[0])
    assert {h[2] for h in found["history"]} >= {"hist_marker_a = 1", "hist_marker_b = 2"}


@pytest.mark.parametrize(
    "code, status, indent",
    [
        ("x = 1", "complete", None),
        ("print('hello')", "complete", None),
        ("for i in range(3):", "incomplete", "    "),
        ("def f():\n    if True:", "incomplete", "        "),
        ("x = [1,\n", "incomplete", None),
        ("import = 7q", "invalid", None),
    ],
)
def test_is_complete(kernel, code, status, indent):
    c = request(kernel, "is_complete_request", {"code": code})[0]["content"]
    assert c["status"] == status
    if status == "incomplete":
        assert "indent" in c
        if indent is not None:
            assert c["indent"] == indent


def test_comm_info(kernel):
    c = ok(request(kernel, "comm_info_request", {"target_name": "ci_target"})[0])
    assert c["comms"] == {}
    reply, msgs = kernel.run("import comm\nci_comm = comm.create_comm(target_name='ci_target')")
    ok(reply)
    (opened,) = of_type(msgs, "comm_open")
    comm_id = opened["content"]["comm_id"]
    assert opened["content"]["target_name"] == "ci_target"
    c = ok(request(kernel, "comm_info_request", {"target_name": "ci_target"})[0])
    assert c["comms"] == {comm_id: {"target_name": "ci_target"}}
    c = ok(request(kernel, "comm_info_request")[0])
    assert c["comms"][comm_id] == {"target_name": "ci_target"}
    reply, msgs = kernel.run("ci_comm.close()")
    assert of_type(msgs, "comm_close")[0]["content"]["comm_id"] == comm_id
    c = ok(request(kernel, "comm_info_request", {"target_name": "ci_target"})[0])
    assert c["comms"] == {}


# -- stdin -------------------------------------------------------------------------------
def test_input_over_stdin(kernel):
    msg_id = kernel.execute("name = input('your name? ')\nprint('got', name)", allow_stdin=True)
    req = kernel.stdin_request(timeout=10)
    assert req["msg_type"] == "input_request"
    assert req["content"]["prompt"] == "your name? "
    assert req["content"]["password"] is False
    assert req["parent_header"]["msg_id"] == msg_id
    kernel.input_reply(req, "alice")
    ok(kernel.reply(msg_id, timeout=10))
    kernel.iopub(msg_id)
    assert kernel.stdout(msg_id) == "got alice\n"


def test_getpass_over_stdin(kernel):
    msg_id = kernel.execute(
        "import getpass\npw = getpass.getpass('pw: ')\nprint('len', len(pw))", allow_stdin=True
    )
    req = kernel.stdin_request(timeout=10)
    assert req["content"]["prompt"] == "pw: "
    assert req["content"]["password"] is True
    kernel.input_reply(req, "s3cret")
    ok(kernel.reply(msg_id, timeout=10))
    kernel.iopub(msg_id)
    assert kernel.stdout(msg_id) == "len 6\n"


def test_input_without_stdin_is_an_error(kernel):
    reply, msgs = kernel.run("input('x? ')", allow_stdin=False)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "StdinNotImplementedError"
    assert of_type(msgs, "error")
    assert not kernel._stdin  # no input_request was sent


# -- streams -----------------------------------------------------------------------------
# Output order and attribution hold on both backends (the iopub thread's task group runs the
# flush timer and the fd readers on the kernel's backend).
BOTH_BACKENDS = pytest.mark.parametrize(
    "kernel", ["subshell", "subshell-trio"], indirect=True, ids=["asyncio", "trio"]
)


@BOTH_BACKENDS
def test_stdout_batched_and_in_order(kernel):
    reply, msgs = kernel.run("for i in range(1000):\n    print(i)")
    ok(reply)
    out = of_type(msgs, "stream")
    assert all(m["content"]["name"] == "stdout" for m in out)
    assert "".join(m["content"]["text"] for m in out) == "".join(f"{i}\n" for i in range(1000))
    assert len(out) < 100


@BOTH_BACKENDS
def test_large_and_unicode_output(kernel):
    reply, msgs = kernel.run("print('x' * 200000)\nprint('h\u00e9llo \u2713 \U0001F600')")
    ok(reply)
    text = kernel.stdout(reply["parent_header"]["msg_id"])
    assert text == "x" * 200000 + "\nh\u00e9llo \u2713 \U0001F600\n"


@BOTH_BACKENDS
def test_write_without_newline_then_result(kernel):
    reply, msgs = kernel.run("import sys\nsys.stdout.write('partial')\n5")
    ok(reply)
    seq = [m["msg_type"] for m in msgs if m["msg_type"] in ("stream", "execute_result")]
    assert seq == ["stream", "execute_result"]
    assert of_type(msgs, "stream")[0]["content"]["text"] == "partial"


@BOTH_BACKENDS
def test_output_is_live_while_cell_runs(kernel):
    msg_id = kernel.execute("import time\nprint('early')\ntime.sleep(2.5)\nprint('late')")
    t0 = time.monotonic()
    wait_until(kernel, lambda: "early" in kernel.stdout(msg_id), timeout=5, what="early output")
    assert time.monotonic() - t0 < 2.0  # sent by the flush timer, not at the end of the cell
    assert msg_id not in kernel._replies
    ok(kernel.reply(msg_id))
    kernel.iopub(msg_id)
    assert kernel.stdout(msg_id) == "early\nlate\n"


@BOTH_BACKENDS
def test_stdout_stderr_interleaving(kernel):
    reply, msgs = kernel.run(
        "import sys\nprint('one')\nprint('two', file=sys.stderr)\nprint('three')"
    )
    ok(reply)
    assert streams(msgs) == [("stdout", "one\n"), ("stderr", "two\n"), ("stdout", "three\n")]


@BOTH_BACKENDS
def test_stream_before_result_and_display(kernel):
    reply, msgs = kernel.run(
        "from IPython.display import display\nprint('a')\ndisplay('d')\nprint('b')\n'r'"
    )
    ok(reply)
    seq: list[tuple[str, str]] = []
    for m in msgs:  # where a stream splits in two is timing (the flush timer), not meaning
        kind = m["msg_type"]
        if kind == "stream" and seq and seq[-1][0] == "stream":
            seq[-1] = ("stream", seq[-1][1] + m["content"]["text"])
        elif kind == "stream":
            seq.append((kind, m["content"]["text"]))
        elif kind in ("display_data", "execute_result"):
            seq.append((kind, m["content"]["data"]["text/plain"]))
    assert seq == [("stream", "a\n"), ("display_data", "'d'"), ("stream", "b\n"),
                   ("execute_result", "'r'")]


@BOTH_BACKENDS
def test_output_from_thread_goes_to_cell(kernel):
    code = (
        "import threading, time\n"
        "def work():\n"
        "    for i in range(3):\n"
        "        print('thread', i)\n"
        "        time.sleep(0.02)\n"
        "t = threading.Thread(target=work)\n"
        "t.start()\n"
        "t.join()\n"
        "time.sleep(0.1)\n"
        "print('cell done')"
    )
    msg_id = kernel.execute(code)
    ok(kernel.reply(msg_id))
    kernel.iopub(msg_id)
    assert kernel.stdout(msg_id) == "thread 0\nthread 1\nthread 2\ncell done\n"


# -- top-level await ---------------------------------------------------------------------
@pytest.fixture(params=["kernel", "trio_kernel"], ids=["asyncio", "trio"])
def backend_kernel(request):
    return request.param, request.getfixturevalue(request.param)


def test_top_level_await_anyio(backend_kernel):
    name, k = backend_kernel
    reply, msgs = k.run(
        "import anyio, sniffio\nawait anyio.sleep(0.1)\nsniffio.current_async_library()",
        timeout=10,
    )
    ok(reply)
    expected = "'asyncio'" if name == "kernel" else "'trio'"
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == expected


def test_top_level_await_native(backend_kernel):
    name, k = backend_kernel
    if name == "kernel":
        code = "import asyncio\nt0 = asyncio.get_running_loop().time()\nawait asyncio.sleep(0.1)\n"
    else:
        code = "import trio\nt0 = trio.current_time()\nawait trio.sleep(0.1)\n"
    code += "print('slept')\n'awaited'"
    reply, msgs = k.run(code, timeout=10)
    ok(reply)
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'awaited'"
    assert streams(msgs) == [("stdout", "slept\n")]


def test_await_error_reply(kernel):
    reply, msgs = kernel.run(
        "import asyncio\nasync def boom():\n    await asyncio.sleep(0)\n    raise KeyError('k')\n"
        "await boom()"
    )
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyError"
    assert of_type(msgs, "error")[0]["content"]["ename"] == "KeyError"


def test_top_level_async_with_and_comprehension(backend_kernel):
    _, k = backend_kernel
    reply, msgs = k.run(
        "import anyio\nhits = []\nasync def hit(i):\n    await anyio.sleep(0.01)\n"
        "    hits.append(i)\nasync with anyio.create_task_group() as tg:\n"
        "    for i in range(3):\n        tg.start_soon(hit, i)\n"
        "async def agen():\n    for i in range(3):\n        yield i\n"
        "(sorted(hits), [i async for i in agen()])",
        timeout=10,
    )
    ok(reply)
    text = of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"]
    assert text == "([0, 1, 2], [0, 1, 2])"


def test_error_reply_has_execution_count(kernel):
    reply, msgs = kernel.run("raise RuntimeError('counted')")
    content = reply["content"]
    assert content["status"] == "error"
    (inp,) = of_type(msgs, "execute_input")
    assert content["execution_count"] == inp["content"]["execution_count"]
    # a failing cell still uses up its number, as in IPython
    assert ok(kernel.run("1")[0])["execution_count"] == content["execution_count"] + 1


@pytest.mark.parametrize("code", [
    "import asyncio\nraise asyncio.CancelledError()",
    "import asyncio\nt = asyncio.ensure_future(asyncio.sleep(10))\nawait asyncio.sleep(0)\n"
    "t.cancel()\nawait t",
], ids=["raise", "await-cancelled-task"])
def test_user_cancelled_error_is_not_an_interrupt(kernel, code):
    reply, msgs = kernel.run(code, timeout=10)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "CancelledError"
    assert of_type(msgs, "error")[0]["content"]["ename"] == "CancelledError"


# -- rich output and magics ----------------------------------------------------------------
def test_matplotlib_inline_png(kernel):
    reply, msgs = kernel.run(
        "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3]);", timeout=90
    )
    ok(reply)
    pngs = [m for m in of_type(msgs, "display_data") if "image/png" in m["content"]["data"]]
    assert len(pngs) == 1
    import base64

    assert base64.b64decode(pngs[0]["content"]["data"]["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_rich_repr(kernel):
    reply, msgs = kernel.run("from IPython.display import HTML\nHTML('<b>bold</b>')")
    ok(reply)
    (res,) = of_type(msgs, "execute_result")
    assert res["content"]["data"]["text/html"] == "<b>bold</b>"
    assert "text/plain" in res["content"]["data"]


def test_time_cell_magic(kernel):
    reply, msgs = kernel.run("%%time\nsum(range(1000))")
    ok(reply)
    out = kernel.stdout(reply["parent_header"]["msg_id"])
    assert "Wall time" in out
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "499500"


def test_shell_escape(kernel):
    reply, msgs = kernel.run("!echo hi-from-shell")
    ok(reply)
    assert "hi-from-shell" in kernel.stdout(reply["parent_header"]["msg_id"])


def test_line_magic_and_pager_payload(kernel):
    reply, _ = kernel.run("%who_ls")
    ok(reply)
    reply, _ = kernel.run("len?")
    payload = ok(reply)["payload"]
    assert payload and payload[0]["source"] == "page"
    assert "text/plain" in payload[0]["data"]


def test_set_next_input_payload(kernel):
    reply, _ = kernel.run("get_ipython().set_next_input('next cell text')")
    payload = ok(reply)["payload"]
    assert {"source": "set_next_input", "text": "next cell text", "replace": False} in payload


@pytest.mark.parametrize("code", ["import sys\nsys.exit()", "raise SystemExit(3)"])
def test_system_exit_keeps_kernel(kernel, code):
    reply, _ = kernel.run(code, timeout=10)
    assert reply["content"]["status"] in ("ok", "error")
    time.sleep(0.2)
    assert kernel.is_alive()
    reply, msgs = kernel.run("'still here'", timeout=10)
    ok(reply)
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'still here'"


def test_exit_sends_ask_exit_payload(kernel):
    reply, _ = kernel.run("exit()")
    payload = ok(reply)["payload"]
    assert any(p["source"] == "ask_exit" for p in payload), payload
    assert next(p for p in payload if p["source"] == "ask_exit")["keepkernel"] is False
    assert kernel.is_alive()
    assert ok(kernel.run("1")[0])
    reply, _ = kernel.run("quit(keep_kernel=True)")
    assert {"source": "ask_exit", "keepkernel": True} in ok(reply)["payload"]


def test_heartbeat_echoes(kernel):
    info = kernel.km.get_connection_info()
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"{info['transport']}://{info['ip']}:{info['hb_port']}")
    try:
        for payload in (b"ping", b"\x00\xffbinary"):
            sock.send(payload)
            assert sock.poll(5000), "no heartbeat echo"
            assert sock.recv() == payload
    finally:
        sock.close()


def test_control_answers_while_shell_busy(kernel):
    msg_id = kernel.execute("import time\nprint('started', flush=True)\ntime.sleep(3)")
    wait_until(kernel, lambda: "started" in kernel.stdout(msg_id), what="cell start")
    t0 = time.monotonic()
    reply = kernel.control("kernel_info_request", timeout=5)
    assert time.monotonic() - t0 < 2.0
    assert reply["content"]["status"] == "ok"
    assert msg_id not in kernel._replies  # the cell was still running
    ok(kernel.reply(msg_id, timeout=10))


# -- security and robustness -----------------------------------------------------------------
def _raw_shell_socket(k: KernelHarness) -> zmq.Socket:
    info = k.km.get_connection_info()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"{info['transport']}://{info['ip']}:{info['shell_port']}")
    return sock


def test_bad_signature_is_dropped(kernel):
    info = kernel.km.get_connection_info()
    bad = Session(key=b"not-the-key", signature_scheme=info["signature_scheme"])
    sock = _raw_shell_socket(kernel)
    try:
        msg = bad.msg("execute_request", {
            "code": "print('pwned')\nPWNED = True", "silent": False, "store_history": True,
            "allow_stdin": False, "user_expressions": {}, "stop_on_error": True,
        })
        bad.send(sock, msg)
        assert sock.poll(1000) == 0, "kernel replied to a badly signed message"
        pump_for(kernel, 0.2)
        assert not kernel._iopub.get(msg["header"]["msg_id"])
    finally:
        sock.close()
    reply, msgs = kernel.run("'PWNED' in globals()")
    ok(reply)
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "False"
    assert all("pwned" not in m["content"].get("text", "")
               for ms in kernel._iopub.values() for m in ms if m["msg_type"] == "stream")


def test_replayed_message_is_dropped(kernel):
    kernel.run("replay_count = 0")
    sock = _raw_shell_socket(kernel)
    try:
        msg = kernel.session.msg("execute_request", {
            "code": "replay_count += 1", "silent": False, "store_history": True,
            "allow_stdin": False, "user_expressions": {}, "stop_on_error": True,
        })
        frames = kernel.session.serialize(msg)
        sock.send_multipart(frames)
        assert sock.poll(10000), "no reply to a valid message"
        sock.recv_multipart()
        sock.send_multipart(frames)  # the very same signed frames again
        assert sock.poll(1000) == 0, "kernel answered a replayed message"
    finally:
        sock.close()
    reply, msgs = kernel.run("replay_count")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "1"


def test_unknown_shell_message(kernel):
    reply, msgs = request(kernel, "foo_request", {"x": 1}, timeout=10)
    assert reply["msg_type"] == "foo_reply"
    assert reply["content"]["status"] == "error"
    assert msgs[-1]["content"]["execution_state"] == "idle"
    assert ok(kernel.run("2")[0])


def test_unknown_control_message(kernel):
    reply = kernel.control("foo_request", {"x": 1})
    assert reply["msg_type"] == "foo_reply"
    assert reply["content"]["status"] == "error"
    msgs = kernel.iopub(reply["parent_header"]["msg_id"], timeout=5)
    assert msgs[-1]["content"]["execution_state"] == "idle"
    assert ok(kernel.control("kernel_info_request"))


def test_execute_without_code(kernel):
    reply, msgs = request(kernel, "execute_request", {"silent": False}, timeout=10)
    assert reply["content"]["status"] == "error"
    assert msgs[-1]["content"]["execution_state"] == "idle"
    reply, msgs = request(kernel, "execute_request", {"code": 42}, timeout=10)
    assert reply["content"]["status"] == "error"
    reply, msgs = kernel.run("'fine'")
    ok(reply)
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'fine'"


def test_comm_opened_by_frontend(kernel):
    ok(kernel.run(
        "import comm\n"
        "def _echo_target(c, msg):\n"
        "    print('opened', msg['content']['data'])\n"
        "    c.on_msg(lambda m: c.send({'echo': m['content']['data']}))\n"
        "    c.on_close(lambda m: print('closed by frontend'))\n"
        "comm.get_comm_manager().register_target('echo_target', _echo_target)"
    )[0])
    comm_id = "frontend-comm-1"
    msg_id = kernel.send("comm_open",
                         {"comm_id": comm_id, "target_name": "echo_target", "data": {"a": 1}})
    kernel.iopub(msg_id, timeout=10)
    assert kernel.stdout(msg_id) == "opened {'a': 1}\n"
    info = ok(request(kernel, "comm_info_request", {"target_name": "echo_target"})[0])
    assert info["comms"] == {comm_id: {"target_name": "echo_target"}}

    msg_id = kernel.send("comm_msg", {"comm_id": comm_id, "data": {"ping": [1, 2]}})
    msgs = kernel.iopub(msg_id, timeout=10)
    (echo,) = of_type(msgs, "comm_msg")
    assert echo["content"] == {"comm_id": comm_id, "data": {"echo": {"ping": [1, 2]}}}
    assert echo["parent_header"]["msg_id"] == msg_id

    msg_id = kernel.send("comm_close", {"comm_id": comm_id, "data": {}})
    kernel.iopub(msg_id, timeout=10)
    assert kernel.stdout(msg_id) == "closed by frontend\n"
    info = ok(request(kernel, "comm_info_request", {"target_name": "echo_target"})[0])
    assert info["comms"] == {}


def test_comm_open_unknown_target_is_closed(kernel):
    msg_id = kernel.send("comm_open",
                         {"comm_id": "orphan-1", "target_name": "no_such_target", "data": {}})
    msgs = kernel.iopub(msg_id, timeout=10)
    closes = of_type(msgs, "comm_close")
    assert [c["content"]["comm_id"] for c in closes] == ["orphan-1"]
    # a message to a comm that does not exist is dropped; the kernel carries on
    msg_id = kernel.send("comm_msg", {"comm_id": "orphan-1", "data": {}})
    kernel.iopub(msg_id, timeout=10)
    assert ok(request(kernel, "comm_info_request")[0])["comms"].get("orphan-1") is None
    assert ok(kernel.run("1")[0])


# -- widgets -------------------------------------------------------------------------------
def test_ipywidgets_round_trip(kernel):
    reply, msgs = kernel.run(
        "import ipywidgets\nw = ipywidgets.IntSlider()\ndisplay(w)", timeout=60
    )
    ok(reply)
    opens = [m for m in of_type(msgs, "comm_open")
             if m["content"]["target_name"] == "jupyter.widget"
             and m["content"]["data"]["state"].get("_model_name") == "IntSliderModel"]
    assert len(opens) == 1
    comm_id = opens[0]["content"]["comm_id"]
    views = [m for m in of_type(msgs, "display_data")
             if "application/vnd.jupyter.widget-view+json" in m["content"]["data"]]
    assert views[0]["content"]["data"]["application/vnd.jupyter.widget-view+json"][
        "model_id"] == comm_id

    def update(value: int) -> str:
        msg_id = kernel.send("comm_msg", {
            "comm_id": comm_id,
            "data": {"method": "update", "state": {"value": value}, "buffer_paths": []},
        })
        kernel.iopub(msg_id, timeout=10)
        return msg_id

    update(7)
    reply, msgs = kernel.run("w.value")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "7"

    ok(kernel.run("w.observe(lambda ch: print('changed', ch['new']), 'value')")[0])
    msg_id = update(9)
    assert kernel.stdout(msg_id) == "changed 9\n"
    reply, msgs = kernel.run("w.value")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "9"

    # a change made by the kernel goes out as a comm_msg update
    reply, msgs = kernel.run("w.value = 3")
    updates = [m for m in of_type(msgs, "comm_msg") if m["content"]["comm_id"] == comm_id]
    assert updates and updates[-1]["content"]["data"]["method"] == "update"
    assert updates[-1]["content"]["data"]["state"]["value"] == 3


# -- shutdown (fresh kernels) ------------------------------------------------------------------
def _exited_within(k: KernelHarness, timeout: float) -> int | None:
    """The exit code if the kernel process ended within ``timeout`` s, else None."""
    deadline = time.monotonic() + timeout
    while k.km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return k.km.provisioner.process.poll()


@pytest.mark.parametrize("restart", [False, True])
def test_shutdown_on_control(fresh_kernel, restart):
    k = fresh_kernel
    ok(k.run("1")[0])
    reply = k.control("shutdown_request", {"restart": restart}, timeout=5)
    assert reply["msg_type"] == "shutdown_reply"
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["restart"] is restart
    # the reply is also broadcast on iopub, and the request's idle arrives
    msgs = k.iopub(reply["parent_header"]["msg_id"], timeout=3)
    shut = of_type(msgs, "shutdown_reply")
    assert shut and shut[0]["content"]["restart"] is restart
    # that the process then exits (within 2 s) is test_shutdown_exits_promptly's job


def test_shutdown_on_shell(fresh_kernel):
    k = fresh_kernel
    reply, msgs = request(k, "shutdown_request", {"restart": False}, timeout=5)
    assert reply["msg_type"] == "shutdown_reply"
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["restart"] is False


def test_shutdown_while_busy_replies(fresh_kernel):
    k = fresh_kernel
    msg_id = k.execute("import time\nprint('started', flush=True)\ntime.sleep(30)")
    wait_until(k, lambda: "started" in k.stdout(msg_id), what="cell start")
    reply = k.control("shutdown_request", {"restart": False}, timeout=5)
    assert reply["content"]["status"] == "ok"
    # the running cell is interrupted and still gets its reply
    assert k.reply(msg_id, timeout=5)["content"]["status"] in ("error", "aborted")


def test_shutdown_exits_promptly():
    """Shutdown, several times over (the failure is intermittent): exit 0 within 2 s."""
    cases = [("control", False, False), ("control", True, False), ("shell", False, False),
             ("control", False, True), ("control", False, False), ("control", True, False)]
    outcomes = []
    for channel, restart, busy in cases:
        k = KernelHarness("subshell")
        try:
            if busy:
                msg_id = k.execute("import time\nprint('started', flush=True)\ntime.sleep(30)")
                wait_until(k, lambda: "started" in k.stdout(msg_id), what="cell start")
            else:
                ok(k.run("1")[0])
            if channel == "control":
                reply = k.control("shutdown_request", {"restart": restart}, timeout=5)
            else:
                reply = k.reply(k.send("shutdown_request", {"restart": restart}), timeout=5)
            assert reply["content"]["status"] == "ok"
            outcomes.append((channel, restart, busy, _exited_within(k, 2.0)))
        finally:
            k.close()
    assert all(o[-1] == 0 for o in outcomes), outcomes


def test_shutdown_finalizes_what_user_code_left_open(tmp_path):
    """The kernel's own objects are frozen for the collector (``hooks``), user code's are
    not: at shutdown, files a cell or a user module left open, in reference cycles or
    not, are flushed, and a ``__del__`` in a cycle runs, as in a plain interpreter.  A
    freeze that took user objects too (at exit, say) leaves all but the first empty."""
    (tmp_path / "usermod.py").write_text(
        "class Holder:\n"
        "    def __init__(self, path):\n"
        "        self.f = open(path, 'w'); self.f.write('module cycle'); self.me = self\n"
        f"h = Holder({str(tmp_path / 'mod_cycle.txt')!r})\n"
        f"plain = open({str(tmp_path / 'mod_plain.txt')!r}, 'w'); plain.write('module plain')\n")
    k = KernelHarness("subshell")
    try:
        ok(k.run(
            f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import usermod\n"
            "class Holder:\n"
            "    def __init__(self, path):\n"
            "        self.f = open(path, 'w'); self.f.write('cell cycle'); self.me = self\n"
            f"h = Holder({str(tmp_path / 'cell_cycle.txt')!r})\n"
            f"plain = open({str(tmp_path / 'cell_plain.txt')!r}, 'w'); plain.write('cell plain')\n"
            "class Finalized:\n"
            "    def __del__(self):\n"
            f"        open({str(tmp_path / 'del.txt')!r}, 'w').write('ran')\n"
            "d = Finalized(); d.me = d\n")[0])
        assert k.control("shutdown_request", {"restart": False}, timeout=5)["content"][
            "status"] == "ok"
        assert _exited_within(k, 2.0) == 0
    finally:
        k.close()
    written = {name: (tmp_path / name).read_text() if (tmp_path / name).exists() else None
               for name in ("cell_plain.txt", "cell_cycle.txt", "mod_plain.txt",
                            "mod_cycle.txt", "del.txt")}
    assert written == {"cell_plain.txt": "cell plain", "cell_cycle.txt": "cell cycle",
                       "mod_plain.txt": "module plain", "mod_cycle.txt": "module cycle",
                       "del.txt": "ran"}


def test_gc_introspection_sees_every_object(fresh_kernel):
    """``gc.get_referrers`` and ``gc.get_objects`` find the kernel's frozen objects too
    (the user namespace refers to a user's variable), and the first call thaws them."""
    kernel = fresh_kernel
    reply, _ = kernel.run(
        "import gc\n"
        "frozen_before = gc.get_freeze_count() > 0\n"
        "_probe = object()\n"
        "_ns = get_ipython().user_ns\n"
        "(frozen_before, any(r is _ns for r in gc.get_referrers(_probe)),\n"
        " any(o is _ns for o in gc.get_objects()), gc.get_freeze_count())")
    ok(reply)
    result = kernel.iopub(reply["parent_header"]["msg_id"])[-2]
    assert result["content"]["data"]["text/plain"] == "(True, True, True, 0)"


@BOTH_BACKENDS
def test_fd_level_output_is_forwarded(kernel):
    """C code and subprocesses write to fds 1 and 2 directly; the frontend still sees it."""
    reply, _ = kernel.run(
        "import os, time\n"
        "os.system('echo from-a-subprocess; echo to-fd2 >&2')\n"
        "os.write(1, b'raw-fd1\\n')\n"
        "time.sleep(0.3)\n"
    )
    msg_id = reply["parent_header"]["msg_id"]
    assert "from-a-subprocess\n" in kernel.stdout(msg_id)
    assert "raw-fd1\n" in kernel.stdout(msg_id)
    assert "to-fd2\n" in kernel.stdout(msg_id, "stderr")


# -- iopub: XPUB subscriptions and the iopub thread ------------------------------------------
def _raw_subscriber(k: KernelHarness, topic: bytes) -> zmq.Socket:
    info = k.km.get_connection_info()
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
    sock.subscribe(topic)
    return sock


@pytest.mark.parametrize("topic", [b"", b"kernel.status"])
def test_a_new_subscriber_gets_iopub_welcome_with_its_topic(kernel, topic):
    """JEP 65: the kernel answers each subscription with ``iopub_welcome``, so a client
    knows it is subscribed (before, it could only guess and resend kernel_info)."""
    sock = _raw_subscriber(kernel, topic)
    try:
        assert sock.poll(5000), "no iopub_welcome within 5 s"
        frames = sock.recv_multipart()
        session = Session(key=kernel.session.key)
        idents, rest = session.feed_identities(frames)
        msg = session.deserialize(rest)  # checks the signature
        assert idents == [topic]
        assert msg["msg_type"] == "iopub_welcome"
        assert msg["content"] == {"subscription": topic.decode()}
        assert msg["parent_header"] == {}
    finally:
        sock.close()


def test_the_kernels_threads_are_those_on_the_map(kernel):
    """docs/architecture.md's thread table, at idle: one iopub thread carries the flush
    timer, both fd readers and the subscriptions (it replaced three threads)."""
    reply, _ = kernel.run("import threading\nsorted(t.name for t in threading.enumerate())")
    ok(reply)
    result = kernel.iopub(reply["parent_header"]["msg_id"])[-2]
    names = eval(result["content"]["data"]["text/plain"])
    expected = {"MainThread", "shell-router", "control", "iopub", "heartbeat", "parent-watch"}
    assert set(names) - {"IPythonHistorySavingThread"} == expected, names
