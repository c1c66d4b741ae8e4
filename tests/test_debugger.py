"""The debugger over the wire: debug_request on control, debug_event on iopub.

What ipykernel's own test_debugger.py checks runs against this kernel through
``benchmarks/ipykernel_suite.py test_debugger.py``; these tests cover what it
cannot: breakpoints in child subshells (ipykernel never traces them), the
parent and other subshells answering while one is stopped, interrupts and
deletes of a stopped cell, two stopped subshells at once, the trio backend
and ``await`` cells, what debugging costs before and after a session, and
bad requests.
"""

from __future__ import annotations

import os
import time

import psutil
import pytest
from ipykernel.compiler import murmur2_x86

from subshell_kernel.kernelspec import kernel_json

from .debug_session import INITIALIZE, DebugSession
from .harness import KernelHarness

pytestmark = pytest.mark.timeout(120)

FUNC = """\
import threading
def double(x):
    y = x * 2
    return y

result = double(21)
print(threading.current_thread().name, result)
"""
FUNC_LINE = 3  # y = x * 2


@pytest.fixture(scope="module")
def debugged():
    """A kernel with a debug session attached (asyncio)."""
    k = KernelHarness("subshell")
    session = DebugSession(k)
    session.start()
    yield session
    k.close()


def _subshell_names(session: DebugSession) -> dict[str, int]:
    """subshell id -> DAP thread id, from the thread names the debugger lists."""
    return {name.removeprefix("subshell-"): tid for tid, name in session.thread_names().items()
            if name.startswith("subshell-")}


def _stop_in(session: DebugSession, code: str, line: int, subshell_id: str | None = None):
    """Run ``code`` with a breakpoint at ``line``; return (msg_id, stopped event)."""
    session.breakpoint(code, line)
    msg_id = session.k.execute(code, subshell_id)
    return msg_id, session.wait_event("stopped", reason="breakpoint")


def _continue(session: DebugSession, thread_id: int, msg_id: str) -> dict:
    """Continue a stopped thread; its cell's reply, once its output is in (idle)."""
    body = session.ok("continue", {"threadId": thread_id})
    assert body["allThreadsContinued"] is False
    reply = session.k.reply(msg_id, 20)["content"]
    session.k.iopub(msg_id, 20)
    return reply


def test_kernel_info_and_kernelspec_advertise_the_debugger(debugged):
    content = debugged.k.control("kernel_info_request")["content"]
    assert content["debugger"] is True
    assert "debugger" in content["supported_features"]
    assert kernel_json()["metadata"]["debugger"] is True


def test_every_cell_is_named_by_the_hash_jupyterlab_computes(debugged):
    info = debugged.ok("debugInfo")
    code = "import sys\nname = sys._getframe().f_code.co_filename"
    debugged.k.run(code)
    reply, _ = debugged.k.run("print(name)")
    expected = f"{info['tmpFilePrefix']}{murmur2_x86(code, info['hashSeed'])}" \
               f"{info['tmpFileSuffix']}"
    assert debugged.k.stdout(reply["parent_header"]["msg_id"]).strip() == expected
    assert info["hashMethod"] == "Murmur2" and "ipykernel_" in info["tmpFilePrefix"]
    assert debugged.ok("dumpCell", {"code": code})["sourcePath"] == expected
    assert open(expected).read() == code


def test_a_breakpoint_in_a_child_subshell_stops_only_that_subshell(debugged):
    k = debugged.k
    sub, other = k.create_subshell(), k.create_subshell()
    try:
        msg_id, stopped = _stop_in(debugged, FUNC, FUNC_LINE, sub)
        thread_id = stopped["body"]["threadId"]
        assert stopped["body"]["allThreadsStopped"] is False
        assert _subshell_names(debugged)[sub] == thread_id
        assert debugged.stopped_threads() == [thread_id]
        frames = debugged.frames(thread_id)
        # only the cell's frames: the kernel's, IPython's and the event loop's are hidden
        assert [(f["name"], f["line"]) for f in frames] == [("double", 3), ("<module>", 6)]
        assert {os.path.dirname(f["source"]["path"]) for f in frames} == {
            debugged.ok("debugInfo")["tmpFilePrefix"].rstrip(os.sep)}
        assert debugged.local_variables(frames[0]["id"])["x"]["value"] == "21"

        # everything else keeps answering while the subshell is stopped
        start = time.monotonic()
        reply, _ = k.run("6 * 7", timeout=10)
        assert reply["content"]["status"] == "ok"
        reply, _ = k.run("import threading; print(threading.current_thread().name)",
                         subshell_id=other, timeout=10)
        assert reply["content"]["status"] == "ok"
        assert k.stdout(reply["parent_header"]["msg_id"]).strip() == f"subshell-{other}"
        assert k.control("kernel_info_request")["content"]["status"] == "ok"
        assert other in k.list_subshells()
        assert time.monotonic() - start < 8
        assert debugged.stopped_threads() == [thread_id]

        assert _continue(debugged, thread_id, msg_id)["status"] == "ok"
        assert k.stdout(msg_id).strip() == f"subshell-{sub} 42"
        debugged.wait_event("continued", threadId=thread_id)
        assert debugged.stopped_threads() == []
    finally:
        k.delete_subshell(sub)
        k.delete_subshell(other)


def test_rich_inspect_and_copy_to_globals_at_a_subshell_breakpoint(debugged):
    code = (
        "from IPython.display import HTML\n"
        "def make():\n"
        "    page = HTML('<b>in a subshell</b>')\n"
        "    return page\n"
        "make()\n"
    )
    k = debugged.k
    sub = k.create_subshell()
    try:
        msg_id, stopped = _stop_in(debugged, code, 4, sub)
        thread_id = stopped["body"]["threadId"]
        frame_id = debugged.frames(thread_id)[0]["id"]
        rich = debugged.ok("richInspectVariables", {"variableName": "page", "frameId": frame_id})
        assert rich["data"]["text/html"] == "<b>in a subshell</b>"
        assert "text/plain" in rich["data"]
        copied = debugged.request("copyToGlobals", {
            "srcVariableName": "page", "dstVariableName": "page_copy", "srcFrameId": frame_id})
        assert copied["success"] and copied["command"] == "copyToGlobals", copied
        # the copy is a global of the shared namespace: the parent sees it at once
        reply, _ = k.run("print(type(page_copy).__name__, page_copy.data)", timeout=10)
        assert k.stdout(reply["parent_header"]["msg_id"]).strip() == "HTML <b>in a subshell</b>"
        assert _continue(debugged, thread_id, msg_id)["status"] == "ok"
        # not stopped: the variables panel reads the namespace itself
        names = {v["name"] for v in debugged.ok("inspectVariables")["variables"]}
        assert "page_copy" in names and not names & {"In", "Out", "get_ipython", "_i1"}
        rich = debugged.ok("richInspectVariables", {"variableName": "page_copy"})
        assert rich["data"]["text/html"] == "<b>in a subshell</b>"
    finally:
        k.delete_subshell(sub)


def test_interrupt_ends_a_stopped_cell_and_the_next_breakpoint_still_hits(debugged):
    k = debugged.k
    sub = k.create_subshell()
    try:
        for subshell_id, interrupt in (
            (sub, lambda: k.control("interrupt_request", {"subshell_id": sub})),
            (None, k.km.interrupt_kernel),  # SIGINT, as the kernelspec's interrupt mode
        ):
            msg_id, stopped = _stop_in(debugged, FUNC, FUNC_LINE, subshell_id)
            thread_id = stopped["body"]["threadId"]
            interrupt()
            reply = k.reply(msg_id, 20)["content"]
            assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt")
            # the user's frames, where it stopped; none of the debugger's, which stopped it
            # (formatting pydevd's own large files took ~0.5 s a thread)
            shown = "\n".join(reply["traceback"])
            assert "double" in shown and "pydevd" not in shown, shown
            debugged.wait_event("continued", threadId=thread_id)
            assert debugged.stopped_threads() == []
            # the thread stops again at the breakpoint (not before it), and continues
            msg_id = k.execute(FUNC, subshell_id)
            again = debugged.wait_event("stopped")
            assert again["body"]["threadId"] == thread_id, again
            assert again["body"]["reason"] == "breakpoint"
            assert debugged.frames(thread_id)[0]["line"] == FUNC_LINE
            assert _continue(debugged, thread_id, msg_id)["status"] == "ok"
    finally:
        k.delete_subshell(sub)


def test_deleting_a_stopped_subshell_ends_its_cell(debugged):
    k = debugged.k
    sub = k.create_subshell()
    msg_id, stopped = _stop_in(debugged, FUNC, FUNC_LINE, sub)
    assert k.delete_subshell(sub)["status"] == "ok"
    reply = k.reply(msg_id, 20)["content"]
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    debugged.wait_event("continued", threadId=stopped["body"]["threadId"])
    assert debugged.stopped_threads() == []
    assert sub not in k.list_subshells()
    reply, _ = k.run("1 + 1")
    assert reply["content"]["status"] == "ok"


def test_two_stopped_subshells_step_and_continue_each_on_its_own(debugged):
    k = debugged.k
    first, second = k.create_subshell(), k.create_subshell()
    try:
        first_msg, first_stop = _stop_in(debugged, FUNC, FUNC_LINE, first)
        second_msg = k.execute(FUNC, second)
        second_stop = debugged.wait_event("stopped", reason="breakpoint")
        one, two = first_stop["body"]["threadId"], second_stop["body"]["threadId"]
        assert one != two and sorted(debugged.stopped_threads()) == sorted([one, two])

        debugged.ok("next", {"threadId": two})
        stepped = debugged.wait_event("stopped", threadId=two, reason="step")
        assert stepped and debugged.frames(two)[0]["line"] == FUNC_LINE + 1
        assert debugged.local_variables(debugged.frames(two)[0]["id"])["y"]["value"] == "42"
        assert debugged.frames(one)[0]["line"] == FUNC_LINE  # the other did not move

        assert _continue(debugged, two, second_msg)["status"] == "ok"
        # the one still stopped is announced again (JupyterLab shows one stopped thread)
        debugged.wait_event("stopped", threadId=one)
        assert debugged.stopped_threads() == [one]
        assert k.stdout(second_msg).strip() == f"subshell-{second} 42"
        assert first_msg not in k._replies
        assert _continue(debugged, one, first_msg)["status"] == "ok"
        assert debugged.stopped_threads() == []
    finally:
        k.delete_subshell(first)
        k.delete_subshell(second)


def test_the_debug_server_accepts_no_other_connection(debugged):
    """debugpy's in-process server would accept any local process, which could then
    run code as the kernel's user: once the kernel is connected it listens no more."""
    assert _listening_ports(debugged.k.pid) == _zmq_ports(debugged.k)


def test_bad_debug_requests_are_answered_with_errors(debugged):
    k = debugged.k
    for content in ([], {"seq": 1}, {"command": "", "seq": 2},
                    {"command": "attach", "seq": "x"}, {"command": "dumpCell", "arguments": 3}):
        reply = k.control("debug_request", content)["content"]
        assert reply["type"] == "response" and reply["success"] is False, (content, reply)
    for command, arguments in (
        ("dumpCell", {}),
        ("copyToGlobals", {"srcVariableName": "a", "dstVariableName": "x'] or print('p') or ['",
                           "srcFrameId": 1}),
        ("copyToGlobals", {"srcVariableName": "a", "dstVariableName": "b", "srcFrameId": "f"}),
        ("richInspectVariables", {"variableName": "__import__('os')"}),
        ("source", {"source": {"path": "/nonexistent/cell.py"}}),
        ("stackTrace", {"threadId": 999}),
        ("noSuchCommand", {}),
    ):
        reply = debugged.request(command, arguments)
        assert reply["success"] is False and reply["command"] == command, reply
        assert reply["request_seq"] == debugged.seq
    reply, _ = k.run("1 + 1")
    assert reply["content"]["status"] == "ok"


def test_trio_backend_await_cells_in_the_parent_and_a_subshell(trio_kernel):
    session = DebugSession(trio_kernel)
    session.start()
    code = (
        "import trio\n"
        "async def later(n):\n"
        "    m = n + 1\n"
        "    return m\n"
        "await trio.sleep(0)\n"
        "print(await later(41))\n"
    )
    sub = trio_kernel.create_subshell()
    try:
        for subshell_id in (None, sub):
            msg_id, stopped = _stop_in(session, code, 3, subshell_id)
            thread_id = stopped["body"]["threadId"]
            assert (thread_id == 1) == (subshell_id is None)
            frames = session.frames(thread_id)
            assert (frames[0]["name"], frames[0]["line"]) == ("later", 3)
            assert session.local_variables(frames[0]["id"])["n"]["value"] == "41"
            assert _continue(session, thread_id, msg_id)["status"] == "ok"
            assert trio_kernel.stdout(msg_id).strip() == "42"
        # an interrupt ends a stopped await cell too
        msg_id, stopped = _stop_in(session, code, 3, sub)
        trio_kernel.control("interrupt_request", {"subshell_id": sub})
        assert trio_kernel.reply(msg_id, 20)["content"]["ename"] == "KeyboardInterrupt"
    finally:
        trio_kernel.delete_subshell(sub)
        session.stop()


def test_debugging_costs_nothing_before_and_after_a_session(fresh_kernel):
    k = fresh_kernel
    session = DebugSession(k)
    sub = k.create_subshell()
    probe = "import sys; print('debugpy' in sys.modules, sys.gettrace() is not None)"

    def state(subshell_id=None) -> str:
        reply, _ = k.run(probe, subshell_id)
        return k.stdout(reply["parent_header"]["msg_id"]).strip()

    # what JupyterLab sends to every kernel whose spec says debugger: true
    session.ok("debugInfo")
    session.ok("dumpCell", {"code": "x = 1"})
    assert state() == state(sub) == "False False"
    ports = _listening_ports(k.pid)

    session.start()
    assert state() == state(sub) == "True True"
    session.ok("disconnect", {"restart": False, "terminateDebuggee": False})
    assert state() == state(sub) == "True False"  # untraced from the first cell on
    assert _listening_ports(k.pid) == ports

    session.start()  # a second session traces every thread again
    assert state() == state(sub) == "True True"
    msg_id, stopped = _stop_in(session, FUNC, FUNC_LINE, sub)
    assert _continue(session, stopped["body"]["threadId"], msg_id)["status"] == "ok"


def test_shutdown_while_a_cell_is_stopped_exits_cleanly(fresh_kernel):
    k = fresh_kernel
    session = DebugSession(k)
    session.ok("initialize", INITIALIZE)
    session.ok("attach")
    sub = k.create_subshell()
    _stop_in(session, FUNC, FUNC_LINE, sub)
    k.execute(FUNC)
    session.wait_event("stopped")
    start = time.monotonic()
    k.kc.shutdown()
    process = k.km.provisioner.process
    assert process.wait(10) == 0
    assert time.monotonic() - start < 5


# -- helpers ---------------------------------------------------------------------------


def _listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on (LISTEN sockets it holds)."""
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


def _zmq_ports(k: KernelHarness) -> set[int]:
    info = k.km.get_connection_info()
    return {info[f"{name}_port"] for name in ("shell", "iopub", "stdin", "control", "hb")}
