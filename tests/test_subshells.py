"""Black-box tests of kernel subshells (JEP 91, messaging protocol 5.5).

Everything here talks to a real kernel process through ``KernelHarness``.
Most tests share one kernel per module (``shared``), which is replaced if a
test left it dead; tests that interrupt, delete busy subshells or shut the
kernel down get a kernel of their own (``fresh_kernel``), so a failure there
cannot leave a spinning thread behind for the other tests.

Timing bounds are generous on purpose: CI machines are small and shared.
"""

from __future__ import annotations

import ast
import time
import uuid
from contextlib import contextmanager

import pytest

from .harness import KernelHarness


class KernelDied(AssertionError):
    pass


# --- fixtures and helpers ---------------------------------------------------------------
@pytest.fixture
def shared(revivable_kernel):
    return revivable_kernel


def reply(k: KernelHarness, msg_id: str, timeout: float = 20) -> dict:
    """The shell reply to ``msg_id``; fails fast if the kernel process died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return k.reply(msg_id, timeout=0.25)
        except TimeoutError:
            if not k.is_alive():
                raise KernelDied(f"kernel died before replying to {msg_id}") from None
            if time.monotonic() > deadline:
                raise


def iopub(k: KernelHarness, msg_id: str, timeout: float = 20) -> list[dict]:
    """The iopub messages of ``msg_id`` up to its idle; fails fast if the kernel died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return k.iopub(msg_id, timeout=0.25)
        except TimeoutError:
            if not k.is_alive():
                raise KernelDied(f"kernel died before idle of {msg_id}") from None
            if time.monotonic() > deadline:
                raise


def run(k: KernelHarness, code: str, subshell_id: str | None = None, timeout: float = 20,
        **content) -> tuple[dict, list[dict]]:
    msg_id = k.execute(code, subshell_id, **content)
    return reply(k, msg_id, timeout), iopub(k, msg_id, timeout)


def value(k: KernelHarness, code: str, subshell_id: str | None = None):
    """The repr of an expression's value, run in ``subshell_id``, parsed back."""
    rep, msgs = run(k, code, subshell_id)
    assert rep["content"]["status"] == "ok", rep["content"]
    results = [m for m in msgs if m["msg_type"] == "execute_result"]
    assert results, [m["msg_type"] for m in msgs]
    return ast.literal_eval(results[0]["content"]["data"]["text/plain"])


def wait_started(k: KernelHarness, msg_id: str, timeout: float = 10) -> None:
    """Wait until the request's execute_input is out (its code is about to run)."""
    deadline = time.monotonic() + timeout
    while not any(m["msg_type"] == "execute_input" for m in k._iopub[msg_id]):
        if time.monotonic() > deadline:
            if not k.is_alive():
                raise KernelDied(f"kernel died before {msg_id} started")
            raise TimeoutError(f"{msg_id} did not start")
        k._pump(0.01)


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def assert_error(content: dict, ename: str | None = None) -> None:
    assert content["status"] == "error", content
    assert isinstance(content["ename"], str) and content["ename"]
    assert isinstance(content["evalue"], str)
    assert isinstance(content["traceback"], list)
    if ename is not None:
        assert content["ename"] == ename, content


def statuses(msgs: list[dict]) -> list[str]:
    return [m["content"]["execution_state"] for m in msgs if m["msg_type"] == "status"]


@contextmanager
def subshells(k: KernelHarness, n: int = 1):
    ids = [k.create_subshell() for _ in range(n)]
    try:
        yield ids if n > 1 else ids[0]
    finally:
        if k.is_alive():
            for sid in ids:
                k.delete_subshell(sid)




SPIN = "while True:\n    pass\n"


def warm_up(k: KernelHarness) -> None:
    """Show one traceback first: IPython imports its traceback formatter on first use,
    which takes seconds while other threads spin; we measure interrupts, not imports."""
    rep, _ = run(k, "raise ValueError('warm-up')")
    assert rep["content"]["status"] == "error"


def spin_for(seconds: float) -> str:
    return (
        "import time\n_t0 = time.monotonic()\n"
        f"while time.monotonic() - _t0 < {seconds}:\n    pass\n"
    )


# --- lifetime -----------------------------------------------------------------------------
def test_create_list_delete(shared):
    k = shared
    assert k.list_subshells() == []

    created = k.control("create_subshell_request")
    assert created["msg_type"] == "create_subshell_reply"
    assert created["content"]["status"] == "ok"
    a = created["content"]["subshell_id"]
    assert isinstance(a, str) and a
    b = k.create_subshell()
    assert a != b

    listed = k.control("list_subshell_request")
    assert listed["msg_type"] == "list_subshell_reply"
    assert listed["content"]["status"] == "ok"
    assert sorted(listed["content"]["subshell_id"]) == sorted([a, b])  # parent not listed

    deleted = k.control("delete_subshell_request", {"subshell_id": a})
    assert deleted["msg_type"] == "delete_subshell_reply"
    assert deleted["content"] == {"status": "ok"}
    assert k.list_subshells() == [b]

    assert_error(k.delete_subshell(a))  # twice
    assert_error(k.delete_subshell("no-such-subshell"))
    assert_error(k.control("delete_subshell_request", {})["content"])  # no id at all
    assert k.delete_subshell(b) == {"status": "ok"}
    assert k.list_subshells() == []


def test_kernel_info_advertises_subshells(shared):
    info = shared.control("kernel_info_request")["content"]
    assert info["protocol_version"] == "5.5"
    assert "kernel subshells" in info["supported_features"]
    shell_info = reply(shared, shared.send("kernel_info_request"))["content"]
    assert shell_info["protocol_version"] == "5.5"
    assert "kernel subshells" in shell_info["supported_features"]


def test_non_execute_requests_in_a_subshell(shared):
    """kernel_info/complete/is_complete answered by the subshell, replies tagged with it."""
    with subshells(shared) as sid:
        for msg_type, content in [
            ("kernel_info_request", {}),
            ("complete_request", {"code": "impor", "cursor_pos": 5}),
            ("is_complete_request", {"code": "for i in x:"}),
        ]:
            mid = shared.send(msg_type, content, sid)
            rep = reply(shared, mid)
            assert rep["content"]["status"] in ("ok", "incomplete"), rep["content"]
            assert rep["parent_header"]["subshell_id"] == sid
            assert statuses(iopub(shared, mid)) == ["busy", "idle"]
        mid = shared.send("complete_request", {"code": "impor", "cursor_pos": 5}, sid)
        assert "import" in reply(shared, mid)["content"]["matches"]


# --- threads and routing ----------------------------------------------------------------
WHO = (
    "import threading\n"
    "(threading.get_ident(), threading.current_thread() is threading.main_thread())"
)


def test_each_subshell_has_its_own_thread(shared):
    k = shared
    parent_ident, parent_is_main = value(k, WHO)
    assert parent_is_main
    with subshells(k, 2) as (a, b):
        a_ident, a_is_main = value(k, WHO, a)
        b_ident, b_is_main = value(k, WHO, b)
        assert not a_is_main and not b_is_main
        assert len({parent_ident, a_ident, b_ident}) == 3
        assert value(k, WHO, a)[0] == a_ident  # a subshell keeps its thread


def test_execute_in_subshell_is_attributed_to_it(shared):
    k = shared
    with subshells(k) as sid:
        mid = k.execute("print('hello from the subshell')\n6 * 7", sid)
        rep = reply(k, mid)
        msgs = iopub(k, mid)
        assert rep["msg_type"] == "execute_reply"
        assert rep["content"]["status"] == "ok"
        assert rep["parent_header"]["msg_id"] == mid
        assert rep["parent_header"]["subshell_id"] == sid
        types = [m["msg_type"] for m in msgs]
        assert types[0] == "status" and types[-1] == "status"
        for needed in ("execute_input", "stream", "execute_result"):
            assert needed in types, types
        assert statuses(msgs) == ["busy", "idle"]
        for m in msgs:
            assert m["parent_header"]["msg_id"] == mid, m
            assert m["parent_header"]["subshell_id"] == sid, m
        assert k.stdout(mid) == "hello from the subshell\n"
        # nothing of this request was filed under any other parent
        for other, others in k._iopub.items():
            if other != mid:
                assert not any(
                    m["msg_type"] == "stream" and "hello from the subshell" in m["content"]["text"]
                    for m in others
                )


@pytest.mark.parametrize("parent_code", ["import time\ntime.sleep(3)", spin_for(3)],
                         ids=["sleep", "cpu"])
def test_subshell_answers_while_parent_is_busy(shared, parent_code):
    k = shared
    with subshells(k) as sid:
        run(k, "warm = 1", sid)  # first use of a subshell sets up its history
        busy = k.execute(parent_code)
        wait_started(k, busy)
        time.sleep(0.2)
        t0 = time.monotonic()
        rep, _ = run(k, "1 + 1", sid, timeout=5)
        elapsed = time.monotonic() - t0
        assert rep["content"]["status"] == "ok"
        assert busy not in k._replies, "the parent finished first: nothing was measured"
        assert elapsed < 0.5, f"subshell took {elapsed:.2f} s while the parent was busy"
        assert reply(k, busy)["content"]["status"] == "ok"


def test_subshells_run_concurrently(shared):
    k = shared
    with subshells(k, 2) as (a, b):
        run(k, "import time", a)
        run(k, "import time", b)
        t0 = time.monotonic()
        ids = [k.execute("import time\ntime.sleep(1)", s) for s in (None, a, b)]
        for mid in ids:
            assert reply(k, mid)["content"]["status"] == "ok"
        elapsed = time.monotonic() - t0
        assert elapsed < 1.8, f"three 1 s sleeps (parent, a, b) took {elapsed:.2f} s"


def test_subshells_share_the_user_namespace(shared):
    k = shared
    name = f"barrier_{uuid.uuid4().hex[:8]}"
    run(k, f"import threading\n{name} = threading.Barrier(2, timeout=10)")
    with subshells(k) as sid:
        in_parent = k.execute(f"{name}.wait()\n'parent passed'")
        in_sub = k.execute(f"{name}.wait()\n'subshell passed'", sid)
        assert reply(k, in_parent)["content"]["status"] == "ok"
        assert reply(k, in_sub)["content"]["status"] == "ok"
        assert value(k, f"{name}.broken") is False
        # and a name bound in a subshell is visible in the parent
        run(k, f"{name}_from_sub = 'yes'", sid)
        assert value(k, f"{name}_from_sub") == "yes"


def test_requests_in_one_subshell_run_in_order(shared):
    k = shared
    name = f"order_{uuid.uuid4().hex[:8]}"
    with subshells(k) as sid:
        run(k, f"{name} = []", sid)
        ids = [k.execute(f"{name}.append({i})", sid) for i in range(20)]
        counts = [reply(k, mid)["content"]["execution_count"] for mid in ids]
        assert counts == sorted(counts) and len(set(counts)) == 20
        assert value(k, name, sid) == list(range(20))


# --- execution counts and history ---------------------------------------------------------
def test_each_subshell_has_its_own_execution_count(shared):
    k = shared
    with subshells(k, 2) as (a, b):
        parent_counts = [run(k, f"p{i} = {i}")[0]["content"]["execution_count"] for i in range(3)]
        assert parent_counts == [parent_counts[0] + i for i in range(3)]

        rep, msgs = run(k, "'in a'", a)
        assert rep["content"]["execution_count"] == 1
        assert [m["content"]["execution_count"] for m in msgs
                if m["msg_type"] in ("execute_input", "execute_result")] == [1, 1]
        assert run(k, "'in a again'", a)[0]["content"]["execution_count"] == 2
        assert run(k, "'in b'", b)[0]["content"]["execution_count"] == 1
        # the parent's count did not move
        assert run(k, "p3 = 3")[0]["content"]["execution_count"] == parent_counts[-1] + 1
        # nor do silent or store_history=False executes count
        run(k, "1", a, store_history=False)
        run(k, "1", a, silent=True)
        assert run(k, "'third in a'", a)[0]["content"]["execution_count"] == 3


def _history(k, subshell_id, **content):
    body = {"output": False, "raw": True, **content}
    rep = reply(k, k.send("history_request", body, subshell_id))
    assert rep["content"]["status"] == "ok", rep["content"]
    assert rep["parent_header"].get("subshell_id") == subshell_id
    return rep["content"]["history"]


def test_history_range_is_per_subshell(shared):
    k = shared
    tag = uuid.uuid4().hex[:8]
    with subshells(k) as sid:
        parent_inputs = [f"hp_{tag}_{i} = {i}" for i in range(3)]
        sub_inputs = [f"hs_{tag}_{i} = {i}" for i in range(2)]
        for code in parent_inputs:
            run(k, code)
        for code in sub_inputs:
            run(k, code, sid)
        sub_hist = _history(k, sid, hist_access_type="range", session=0, start=1, stop=None)
        assert [h[2] for h in sub_hist] == sub_inputs
        assert [h[1] for h in sub_hist] == [1, 2]
        parent_hist = _history(k, None, hist_access_type="range", session=0, start=1, stop=None)
        parent_codes = [h[2] for h in parent_hist]
        assert parent_codes[-3:] == parent_inputs
        assert not any(f"hs_{tag}" in c for c in parent_codes)


def test_history_tail_is_per_subshell(shared):
    k = shared
    tag = uuid.uuid4().hex[:8]
    with subshells(k, 2) as (a, b):
        parent_inputs = [f"tp_{tag}_{i} = {i}" for i in range(3)]
        for code in parent_inputs:
            run(k, code)
        run(k, f"tb_{tag} = 1", b)
        run(k, f"ta_{tag} = 1", a)
        # history reaches the database from saving threads: keep looking for a second
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            a_tail = [h[2] for h in _history(k, a, hist_access_type="tail", n=10)]
            parent_tail = [h[2] for h in _history(k, None, hist_access_type="tail", n=3)]
            assert a_tail[-1] == f"ta_{tag} = 1"
            foreign = [c for c in a_tail if f"tp_{tag}" in c or f"tb_{tag}" in c]
            assert foreign == [], f"inputs of the parent or of another subshell: {a_tail}"
            assert parent_tail == parent_inputs, parent_tail
            time.sleep(0.1)


# --- unknown subshells --------------------------------------------------------------------
def _assert_unknown_subshell_answer(k, mid, reply_type):
    rep = reply(k, mid)
    assert rep["msg_type"] == reply_type
    assert_error(rep["content"])
    assert statuses(iopub(k, mid)) == ["busy", "idle"]
    assert [m["msg_type"] for m in k._iopub[mid]] == ["status", "status"]


def test_unknown_subshell_id_gets_an_error_reply(shared):
    k = shared
    mid = k.execute("unknown_ran = True", "no-such-subshell")
    _assert_unknown_subshell_answer(k, mid, "execute_reply")
    mid = k.send("complete_request", {"code": "pri", "cursor_pos": 3}, "no-such-subshell")
    _assert_unknown_subshell_answer(k, mid, "complete_reply")
    mid = k.send("comm_msg", {"comm_id": "nope", "data": {}}, "no-such-subshell")
    assert statuses(iopub(k, mid)) == ["busy", "idle"]
    assert mid not in k._replies

    sid = k.create_subshell()
    assert k.delete_subshell(sid) == {"status": "ok"}
    mid = k.execute("unknown_ran = True", sid)
    _assert_unknown_subshell_answer(k, mid, "execute_reply")
    assert reply(k, mid)["parent_header"]["subshell_id"] == sid
    mid = k.send("complete_request", {"code": "pri", "cursor_pos": 3}, sid)
    _assert_unknown_subshell_answer(k, mid, "complete_reply")
    assert value(k, "'unknown_ran' in globals()") is False


# --- errors, silence, output ----------------------------------------------------------------
def test_stop_on_error_aborts_only_that_subshells_queue(shared):
    k = shared
    tag = uuid.uuid4().hex[:8]
    with subshells(k) as sid:
        run(k, "import time", sid)
        parent_busy = k.execute("import time\ntime.sleep(1)")
        parent_queued = k.execute(f"parent_{tag} = 'ran'")
        failing = k.execute("time.sleep(0.3)\n1 / 0", sid)
        queued = [k.execute(f"sub_{tag}_{i} = 'ran'", sid) for i in range(2)]

        assert_error(reply(k, failing)["content"], "ZeroDivisionError")
        for mid in queued:
            assert reply(k, mid)["content"]["status"] == "aborted"
        assert reply(k, parent_busy)["content"]["status"] == "ok"
        assert reply(k, parent_queued)["content"]["status"] == "ok"
        assert value(k, f"parent_{tag}") == "ran"
        assert value(k, f"[n for n in globals() if n.startswith('sub_{tag}')]") == []
        # later requests to that subshell run again
        assert value(k, "'alive'", sid) == "alive"


def test_output_of_concurrent_subshells_is_not_mixed(shared):
    k = shared
    name = f"go_{uuid.uuid4().hex[:8]}"
    code = (
        "import time\n"
        f"{name}.wait()\n"
        "for i in range(200):\n"
        "    print(f'@TAG@ {i}')\n"
        "    if i % 10 == 0:\n"
        "        time.sleep(0.001)\n"
    )
    run(k, f"import threading\n{name} = threading.Barrier(3, timeout=10)")
    with subshells(k, 2) as (a, b):
        ids = {
            tag: k.execute(code.replace("@TAG@", tag), sid)
            for tag, sid in (("parent", None), ("alpha", a), ("beta", b))
        }
        for mid in ids.values():
            assert reply(k, mid)["content"]["status"] == "ok"
            iopub(k, mid)
        for tag, mid in ids.items():
            streams = [m for m in k._iopub[mid] if m["msg_type"] == "stream"]
            lines = "".join(m["content"]["text"] for m in streams).splitlines()
            misrouted = [line for line in lines if not line.startswith(tag + " ")]
            assert misrouted == [], f"{len(misrouted)} lines of other requests under {tag}"
            assert lines == [f"{tag} {i}" for i in range(200)]


def test_threads_started_by_a_subshell_cell_print_to_that_cell(shared):
    k = shared
    with subshells(k) as sid:
        code = (
            "import threading, time\n"
            "def work(delay, text):\n"
            "    time.sleep(delay)\n"
            "    print(text)\n"
            "t = threading.Thread(target=work, args=(0, 'while the cell runs'))\n"
            "t.start(); t.join()\n"
            "threading.Thread(target=work, args=(0.3, 'after the cell ended')).start()\n"
        )
        mid = k.execute(code, sid)
        assert reply(k, mid)["content"]["status"] == "ok"
        iopub(k, mid)
        assert wait_for(lambda: (k._pump(0.01), "after the cell ended" in k.stdout(mid))[1], 5)
        assert k.stdout(mid) == "while the cell runs\nafter the cell ended\n"
        for m in k._iopub[mid]:
            assert m["parent_header"]["subshell_id"] == sid


def test_silent_execute_in_subshell_publishes_no_result_or_error(shared):
    k = shared
    with subshells(k) as sid:
        rep, msgs = run(k, "from IPython.display import display\ndisplay('shown')\n42", sid,
                        silent=True)
        assert rep["content"]["status"] == "ok"
        assert [m["msg_type"] for m in msgs] == ["status", "status"]
        rep, msgs = run(k, "1 / 0", sid, silent=True)
        assert_error(rep["content"], "ZeroDivisionError")
        assert [m["msg_type"] for m in msgs] == ["status", "status"]


def test_silent_execute_in_subshell_publishes_no_stream(shared):
    k = shared
    with subshells(k) as sid:
        code = (
            "import sys, threading\n"
            "print('psst')\n"
            "sys.stderr.write('err')\n"
            "t = threading.Thread(target=print, args=('from a thread',))\n"
            "t.start(); t.join()\n"
        )
        mid = k.execute(code, sid, silent=True)
        assert reply(k, mid)["content"]["status"] == "ok"
        iopub(k, mid)
        time.sleep(0.2)  # a late stream flush would land here
        k._pump(0.05)
        assert [m["msg_type"] for m in k._iopub[mid]] == ["status", "status"]


# --- stdin -----------------------------------------------------------------------------------
def test_input_in_a_subshell(shared):
    k = shared
    with subshells(k) as sid:
        mid = k.execute("v = input('name? ')\nprint('got', v)", sid, allow_stdin=True)
        request = k.stdin_request(timeout=10)
        assert request["msg_type"] == "input_request"
        assert request["content"]["prompt"] == "name? "
        assert request["parent_header"]["msg_id"] == mid
        assert request["parent_header"]["subshell_id"] == sid
        k.input_reply(request, "world")
        assert reply(k, mid)["content"]["status"] == "ok"
        iopub(k, mid)
        assert k.stdout(mid) == "got world\n"


def test_two_subshells_waiting_for_input_get_their_own_replies(shared):
    k = shared
    with subshells(k, 2) as (a, b):
        code = "v = input('{who}? ')\nprint('{who} got', v)"
        mid_a = k.execute(code.format(who="A"), a, allow_stdin=True)
        mid_b = k.execute(code.format(who="B"), b, allow_stdin=True)
        requests = {}
        for _ in range(2):
            r = k.stdin_request(timeout=10)
            requests[r["parent_header"]["msg_id"]] = r
        assert set(requests) == {mid_a, mid_b}
        assert requests[mid_a]["parent_header"]["subshell_id"] == a
        assert requests[mid_b]["parent_header"]["subshell_id"] == b
        k.input_reply(requests[mid_b], "for-B")  # the second request first
        assert reply(k, mid_b)["content"]["status"] == "ok"
        assert mid_a not in k._replies  # A still waits for its own answer
        k.input_reply(requests[mid_a], "for-A")
        assert reply(k, mid_a)["content"]["status"] == "ok"
        iopub(k, mid_a)
        iopub(k, mid_b)
        assert k.stdout(mid_a) == "A got for-A\n"
        assert k.stdout(mid_b) == "B got for-B\n"


# --- comms -----------------------------------------------------------------------------------
def test_comm_msg_is_handled_on_the_subshell_it_names(shared):
    k = shared
    run(k, "import comm\ncomm.get_comm_manager().register_target('echo', lambda c, m: "
        "c.on_msg(lambda msg: c.send({'echo': msg['content']['data']})))")
    comm_id = uuid.uuid4().hex
    opened = k.send("comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}})
    iopub(k, opened)
    info = reply(k, k.send("comm_info_request", {"target_name": "echo"}))["content"]
    assert comm_id in info["comms"]
    with subshells(k) as sid:
        busy = k.execute("import time\ntime.sleep(3)")
        wait_started(k, busy)
        t0 = time.monotonic()
        msg_id = k.send("comm_msg", {"comm_id": comm_id, "data": {"x": 1}}, sid)
        deadline = t0 + 5
        echoes: list[dict] = []
        while not echoes and time.monotonic() < deadline:
            k._pump(0.01)
            echoes = [m for m in k._iopub[msg_id] if m["msg_type"] == "comm_msg"]
        elapsed = time.monotonic() - t0
        assert echoes, "no echo"
        assert elapsed < 1.0, f"echo took {elapsed:.2f} s while the parent slept"
        assert busy not in k._replies
        echo = echoes[0]
        assert echo["content"]["comm_id"] == comm_id
        assert echo["content"]["data"] == {"echo": {"x": 1}}
        assert echo["parent_header"]["msg_id"] == msg_id
        assert echo["parent_header"]["subshell_id"] == sid
        assert statuses(iopub(k, msg_id)) == ["busy", "idle"]
        assert reply(k, busy)["content"]["status"] == "ok"
    closed = k.send("comm_close", {"comm_id": comm_id, "data": {}})
    iopub(k, closed)


# --- interrupt -------------------------------------------------------------------------------
def test_interrupt_request_interrupts_every_busy_subshell(fresh_kernel):
    k = fresh_kernel
    warm_up(k)
    sid = k.create_subshell()
    in_sub = k.execute(SPIN, sid)
    in_parent = k.execute(SPIN)
    wait_started(k, in_sub)
    wait_started(k, in_parent)
    time.sleep(0.2)
    t0 = time.monotonic()
    assert k.control("interrupt_request")["content"]["status"] == "ok"
    assert_error(reply(k, in_sub, timeout=5)["content"], "KeyboardInterrupt")
    assert_error(reply(k, in_parent, timeout=5)["content"], "KeyboardInterrupt")
    assert time.monotonic() - t0 < 5
    # both still work afterwards
    assert value(k, "'ok'", sid) == "ok"
    assert value(k, "'ok'") == "ok"


def interrupt_in_a_subshell(k, code: str, interrupt) -> tuple[str, dict, float]:
    """Run ``code`` in a new subshell, interrupt it 0.3 s in with ``interrupt()``;
    return the subshell id, the reply content and the seconds the reply took."""
    warm_up(k)
    sid = k.create_subshell()
    mid = k.execute(code, sid)
    wait_started(k, mid)
    time.sleep(0.3)
    t0 = time.monotonic()
    interrupt()
    content = reply(k, mid, timeout=10)["content"]
    return sid, content, time.monotonic() - t0


def test_interrupt_cancels_an_await_cell_in_a_subshell(fresh_kernel):
    k = fresh_kernel
    sid, content, elapsed = interrupt_in_a_subshell(
        k, "import asyncio\nawait asyncio.sleep(30)", lambda: k.control("interrupt_request")
    )
    assert_error(content, "KeyboardInterrupt")
    assert elapsed < 1.0, f"cancelling took {elapsed:.2f} s"
    assert value(k, "'ok'", sid) == "ok"


def test_interrupt_an_await_cell_that_blocks(fresh_kernel):
    k = fresh_kernel
    warm_up(k)
    sid = k.create_subshell()
    code = "import asyncio\nawait asyncio.sleep(0)\n" + SPIN
    in_sub = k.execute(code, sid)
    in_parent = k.execute(code)
    wait_started(k, in_sub)
    wait_started(k, in_parent)
    time.sleep(0.3)
    k.control("interrupt_request")
    assert_error(reply(k, in_sub, timeout=5)["content"], "KeyboardInterrupt")
    assert_error(reply(k, in_parent, timeout=2)["content"], "KeyboardInterrupt")


def test_interrupt_one_subshell_by_id(fresh_kernel):
    """Our extension: interrupt_request content.subshell_id names the one to interrupt."""
    k = fresh_kernel
    warm_up(k)
    a, b = k.create_subshell(), k.create_subshell()
    in_a = k.execute(SPIN, a)
    in_b = k.execute(spin_for(2) + "'b finished'", b)
    in_parent = k.execute(SPIN)
    for mid in (in_a, in_b, in_parent):
        wait_started(k, mid)
    time.sleep(0.2)
    rep = k.control("interrupt_request", {"subshell_id": a})
    assert rep["content"]["status"] == "ok"
    assert_error(reply(k, in_a, timeout=5)["content"], "KeyboardInterrupt")
    assert in_parent not in k._replies, "the parent was interrupted together with a"
    # subshell_id null names the parent subshell
    assert k.control("interrupt_request", {"subshell_id": None})["content"]["status"] == "ok"
    assert_error(reply(k, in_parent, timeout=5)["content"], "KeyboardInterrupt")
    rep_b = reply(k, in_b, timeout=10)  # b ran its 2 s to the end: not interrupted
    assert rep_b["content"]["status"] == "ok", rep_b["content"]
    assert any(m["msg_type"] == "execute_result" for m in iopub(k, in_b))
    assert_error(k.control("interrupt_request", {"subshell_id": "no-such-subshell"})["content"])


def test_signal_interrupt_reaches_a_busy_subshell(fresh_kernel):
    k = fresh_kernel
    warm_up(k)
    sid = k.create_subshell()
    mid = k.execute(SPIN, sid)
    wait_started(k, mid)
    time.sleep(0.2)
    k.km.interrupt_kernel()  # interrupt_mode "signal": SIGINT to the kernel process
    assert_error(reply(k, mid, timeout=5)["content"], "KeyboardInterrupt")
    assert value(k, "'ok'", sid) == "ok"
    assert value(k, "'ok'") == "ok"  # the idle parent was not hurt


def test_interrupt_ends_time_sleep_in_a_subshell_at_once(fresh_kernel):
    k = fresh_kernel
    sid, content, elapsed = interrupt_in_a_subshell(
        k, "import time\nprint('started', flush=True)\ntime.sleep(30)", k.km.interrupt_kernel
    )
    assert_error(content, "KeyboardInterrupt")
    assert elapsed < 2.0, f"time.sleep(30) in a subshell took {elapsed:.2f} s to interrupt"
    # a sleep that is not interrupted lasts as long as asked
    code = "t0 = time.monotonic(); time.sleep(0.2); round(time.monotonic() - t0, 1)"
    assert value(k, code, sid) == 0.2


def test_interrupt_wakes_a_subshell_waiting_in_input(fresh_kernel):
    k = fresh_kernel
    warm_up(k)
    sid = k.create_subshell()
    mid = k.execute("input('never answered? ')", sid, allow_stdin=True)
    request = k.stdin_request(timeout=10)
    assert request["parent_header"]["msg_id"] == mid
    k.control("interrupt_request", {"subshell_id": sid})
    assert_error(reply(k, mid, timeout=5)["content"], "KeyboardInterrupt")
    k.input_reply(request, "too late")  # a reply nobody waits for is dropped
    assert value(k, "'still fine'", sid) == "still fine"


# --- deletion and shutdown ---------------------------------------------------------------------
def test_delete_a_busy_subshell(fresh_kernel):
    k = fresh_kernel
    warm_up(k)
    baseline = k.stable_threads()
    sid = k.create_subshell()
    running = k.execute(SPIN, sid)
    queued = [k.execute(f"queued_{i} = 1", sid) for i in range(2)]
    wait_started(k, running)
    time.sleep(0.2)
    t0 = time.monotonic()
    assert k.delete_subshell(sid) == {"status": "ok"}
    assert time.monotonic() - t0 < 1.0
    assert sid not in k.list_subshells()
    assert reply(k, running, timeout=5)["content"]["status"] in ("error", "aborted")
    for mid in queued:
        assert reply(k, mid, timeout=5)["content"]["status"] == "aborted"
        assert statuses(iopub(k, mid)) == ["busy", "idle"]
    assert wait_for(lambda: k.threads() == baseline, 5), (k.threads(), baseline)
    assert value(k, "[n for n in ('queued_0', 'queued_1') if n in globals()]") == []


def test_create_and_delete_many_subshells(shared):
    k = shared
    baseline_list = k.list_subshells()
    baseline = k.stable_threads()
    ids = [k.create_subshell() for _ in range(20)]
    assert len(set(ids)) == 20
    assert sorted(k.list_subshells()) == sorted(baseline_list + ids)
    assert k.threads() >= baseline + 20
    for sid in ids:
        assert k.delete_subshell(sid) == {"status": "ok"}
    assert k.list_subshells() == baseline_list
    assert wait_for(lambda: k.threads() == baseline, 5), (k.threads(), baseline)


def _shutdown_and_wait(k: KernelHarness, limit: float = 3.0) -> tuple[float, int | None, str]:
    """Send shutdown_request on control and wait for the process to end.

    Returns (seconds until it ended, its exit status or None if still running, msg_id)."""
    msg = k.session.msg("shutdown_request", {"restart": False})
    t0 = time.monotonic()
    k.kc.control_channel.send(msg)
    process = k.km.provisioner.process
    wait_for(lambda: process.poll() is not None, limit, 0.02)
    return time.monotonic() - t0, process.returncode, msg["header"]["msg_id"]


def test_shutdown_with_idle_subshells_exits_cleanly_every_time():
    outcomes = []  # a regression here was intermittent (1 in 3): try several times
    for _ in range(8):
        k = KernelHarness("subshell")
        try:
            k.create_subshell()
            k.create_subshell()
            run(k, "'parent ran'")
            outcomes.append(_shutdown_and_wait(k))
        finally:
            k.close()
    bad = [(round(t, 2), rc) for t, rc, _ in outcomes if rc != 0 or t >= 2.0]
    assert bad == [], f"(seconds, exit status) of shutdowns that were not clean: {bad}"


def test_shutdown_with_busy_subshells_exits_quickly(fresh_kernel):
    k = fresh_kernel
    spinning, sleeping = k.create_subshell(), k.create_subshell()
    ids = [k.execute(SPIN, spinning), k.execute("import time\ntime.sleep(60)", sleeping),
           k.execute(SPIN)]
    for mid in ids:
        wait_started(k, mid)
    time.sleep(0.2)
    elapsed, returncode, msg_id = _shutdown_and_wait(k, 5)
    assert returncode is not None, "kernel still running after 5 s"
    assert elapsed < 2.0, f"kernel took {elapsed:.2f} s to exit"
    assert returncode == 0, f"kernel died with {returncode}, not a clean exit"
    shutdown_reply = k.kc.control_channel.get_msg(timeout=2)
    assert shutdown_reply["parent_header"]["msg_id"] == msg_id
    assert shutdown_reply["content"] == {"status": "ok", "restart": False}


# --- trio ----------------------------------------------------------------------------------------
def test_trio_subshell_awaits(trio_kernel):
    k = trio_kernel
    with subshells(k) as sid:
        rep, msgs = run(k, "import trio\nawait trio.sleep(0.1)\n'trio done'", sid)
        assert rep["content"]["status"] == "ok", rep["content"]
        assert rep["parent_header"]["subshell_id"] == sid
        results = [m for m in msgs if m["msg_type"] == "execute_result"]
        assert results[0]["content"]["data"]["text/plain"] == "'trio done'"
        assert value(k, WHO, sid)[1] is False
        mid = k.execute("await trio.sleep(30)", sid)
        wait_started(k, mid)
        time.sleep(0.3)
        t0 = time.monotonic()
        k.control("interrupt_request", {"subshell_id": sid})
        assert_error(reply(k, mid, timeout=5)["content"], "KeyboardInterrupt")
        assert time.monotonic() - t0 < 1.0
