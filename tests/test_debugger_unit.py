"""The debugger's parts that need no kernel: DAP framing, request checks, cell names,
the stopped-thread bookkeeping, and cancelling a pending interrupt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ipykernel.compiler import murmur2_x86

from subshell_kernel.adapter import cells
from subshell_kernel.adapter.debug_events import StoppedThreads, continued_event
from subshell_kernel.core import dap

# -- DAP framing -----------------------------------------------------------------------

messages = st.lists(st.dictionaries(st.text(max_size=8), st.one_of(
    st.integers(), st.text(max_size=30), st.booleans(), st.none()), max_size=4), max_size=5)


@given(messages, st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_decoder_reassembles_messages_cut_anywhere(sent, cuts):
    stream = b"".join(dap.encode(m) for m in sent)
    decoder, received, position = dap.Decoder(), [], 0
    for cut in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        received += decoder.feed(stream[position:position + cut])
        position += cut
        if position >= len(stream):
            break
    received += decoder.feed(stream[position:])
    assert received == sent


def test_decoder_ignores_other_header_fields_and_rejects_what_is_not_dap():
    body = json.dumps({"type": "event", "event": "é"}).encode()
    framed = b"Content-Type: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    assert dap.Decoder().feed(framed) == [{"type": "event", "event": "é"}]
    for bad in (b"Content-Length: x\r\n\r\n{}", b"Length: 2\r\n\r\n{}",
                b"Content-Length: 2\r\n\r\n[]", b"Content-Length: 1\r\n\r\n{",
                b"x" * (dap.MAX_HEADER + 1)):
        with pytest.raises(dap.DapError):
            dap.Decoder().feed(bad)


def test_check_request_says_what_is_wrong():
    assert dap.check_request({"command": "next", "seq": 3}) == {
        "command": "next", "seq": 3, "type": "request", "arguments": {}}
    for bad, words in (([], "JSON object"), ({}, "command"), ({"command": 1}, "command"),
                       ({"command": "x", "seq": True}, "seq"),
                       ({"command": "x", "arguments": []}, "arguments")):
        with pytest.raises(dap.DapError, match=words):
            dap.check_request(bad)
    error = dap.error({"seq": 7, "command": "x"}, "no")
    assert error == {"type": "response", "seq": 0, "request_seq": 7, "success": False,
                     "command": "x", "message": "no", "body": {}}


# -- cell names ------------------------------------------------------------------------


@given(st.text(st.characters(exclude_categories=("Cs",))))
def test_murmur2_is_the_hash_jupyterlab_and_ipykernel_use(code):
    assert cells.murmur2(code.encode()) == murmur2_x86(code, cells.HASH_SEED)
    assert cells.CellCompiler().get_code_name(code, "", 1) == cells.cell_file(code)


@pytest.mark.parametrize("code", ["pass", "é" * 10, "x = 1\n" * 20000])
def test_cell_hash_is_murmur2_whether_remembered_or_not(code):
    expected = murmur2_x86(code, cells.HASH_SEED)
    assert cells.cell_hash(code) == cells.cell_hash(code) == expected


def test_cell_file_is_prefix_hash_suffix():
    assert cells.cell_file("pass") == f"{cells.prefix()}{murmur2_x86('pass', 0xC70F6907)}.py"
    assert cells.prefix() == os.path.join(cells.cell_directory(), "")
    assert os.path.basename(cells.cell_directory()) == f"ipykernel_{os.getpid()}"


def test_the_cell_directory_is_private_and_never_someone_elses(tmp_path, monkeypatch):
    monkeypatch.setattr(cells.tempfile, "gettempdir", lambda: str(tmp_path))
    path = cells.write_cell("x = 1\n")
    assert open(path).read() == "x = 1\n"
    assert os.stat(cells.cell_directory()).st_mode & 0o777 == 0o700
    os.chmod(cells.cell_directory(), 0o755)
    cells.ensure_cell_directory()
    assert os.stat(cells.cell_directory()).st_mode & 0o777 == 0o700
    # a symlink planted where the directory goes is refused, not followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for p in tmp_path.glob("ipykernel_*/*"):
        p.unlink()
    os.rmdir(cells.cell_directory())
    os.symlink(elsewhere, cells.cell_directory())
    with pytest.raises(PermissionError):
        cells.write_cell("y = 2\n")
    assert list(elsewhere.iterdir()) == []


# -- stopped threads ---------------------------------------------------------------------


def _stopped(tid: int, reason: str = "breakpoint") -> dict:
    return {"type": "event", "event": "stopped",
            "body": {"threadId": tid, "reason": reason, "allThreadsStopped": False}}


def test_stopped_threads_follow_the_events_and_end_each_stop_once():
    announced: list[dict] = []
    threads = StoppedThreads(announced.append)
    threads.on_event(_stopped(2))
    threads.on_event(_stopped(3))
    assert threads.ids() == [2, 3]
    # an interrupted stop: the kernel announces the end, debugpy's late one is dropped
    threads.left(3)
    threads.on_event(continued_event(3))
    assert threads.ids() == [2]
    assert [e["event"] for e in announced] == ["stopped", "stopped", "continued", "stopped"]
    assert announced[-1] == _stopped(2)  # the one still stopped, shown again
    threads.left(2)
    threads.left(2)
    assert threads.ids() == [] and [e["event"] for e in announced][-1] == "continued"


def test_a_step_is_not_followed_by_another_threads_stop():
    announced: list[dict] = []
    threads = StoppedThreads(announced.append)
    for tid in (1, 2):
        threads.on_event(_stopped(tid))
    threads.resuming(2, stepping=True)
    threads.on_event(continued_event(2))
    assert announced[-1] == continued_event(2) and threads.ids() == [1]
    threads.on_event(_stopped(2, "step"))
    threads.resuming(2, stepping=False)
    threads.on_event(continued_event(2))
    assert announced[-1] == _stopped(1)
    threads.on_event({"type": "event", "event": "thread",
                      "body": {"threadId": 1, "reason": "exited"}})
    threads.on_event({"type": "event", "event": "continued",
                      "body": {"threadId": 9, "allThreadsContinued": True}})
    assert threads.ids() == [] and announced[-1]["body"]["allThreadsContinued"]


# -- cancelling a pending interrupt ---------------------------------------------------------


def test_cancelling_a_pending_interrupt_leaves_traced_threads_running():
    """On CPython 3.11 the C API's cancel (SetAsyncExc with NULL) made the next call of a
    traced thread spin forever; the kernel lets a pending interrupt fire instead. Run in a
    child process, which a regression would hang."""
    script = textwrap.dedent("""
        import sys, threading
        from subshell_kernel.runtime.threads import fire_pending_exception, raise_in_thread
        try:  # (raised into itself, it may fire already as raise_in_thread returns)
            raise_in_thread(threading.get_ident(), KeyboardInterrupt)
            fire_pending_exception()
        except KeyboardInterrupt:
            pass
        def traced():
            sys.settrace(lambda *a: None)
            (lambda: None)()
            print("returned")
        t = threading.Thread(target=traced)
        t.start()
        t.join(5)
        print("hung" if t.is_alive() else "ok")
        sys.stdout.flush()
        import os; os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.split() == ["returned", "ok"], out
