"""A drop-in for ipykernel: what a frontend, a library or ipykernel's own tests expect of
a Python kernel beyond the messaging spec's minimum.

The protocol details ipykernel's tests found (``metadata.started``,
``connect_request``, one payload per source, ``''`` on ``sys.path``, the status
of a failing display formatter); streams with a real file descriptor and
forked processes; and the shell and kernel as libraries see them
(``adapter/recognition.py``).  One kernel for the module, started as
jupyter_server starts one (``JPY_SESSION_NAME``) and with ``--profile-dir``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta

import pytest

from .harness import KernelHarness
from .test_ecosystem import of_type, ok, run_ok

SESSION_NAME = "/home/someone/analysis.ipynb"


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return tmp_path_factory.mktemp("profile_dropin")


@pytest.fixture(scope="module")
def kernel(profile):
    k = KernelHarness("subshell", env={**os.environ, "JPY_SESSION_NAME": SESSION_NAME},
                      extra_arguments=["--profile-dir", str(profile)])
    yield k
    k.close()


def when(value: str | datetime) -> datetime:
    """jupyter_client parses header dates; metadata holds the ISO 8601 text."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(
        value.replace("Z", "+00:00"))


def wait_for_text(kernel, msg_id: str, text: str, name: str = "stdout", timeout: float = 10):
    """Output a thread or the fd pipes carry may arrive after the request's idle."""
    deadline = time.monotonic() + timeout
    while text not in kernel.stdout(msg_id, name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not in {name} of {msg_id}: "
                               f"{kernel.stdout(msg_id, name)!r}")
        kernel._pump(0.02)


# -- protocol -----------------------------------------------------------------------------
def test_replies_say_when_their_request_started(kernel):
    """JupyterLab's cell timing reads ``metadata.started`` of the execute reply."""
    first = kernel.execute("pass")
    second = kernel.execute("import time; time.sleep(0.3)")  # queued behind the first
    kernel.reply(first)
    reply = kernel.reply(second)
    started, ended = when(reply["metadata"]["started"]), when(reply["header"]["date"])
    assert ended - started >= timedelta(seconds=0.3)
    assert started >= when(kernel.reply(first)["header"]["date"]) - timedelta(milliseconds=5)
    control = kernel.control("kernel_info_request")
    assert when(control["metadata"]["started"]) <= when(control["header"]["date"])


def test_connect_request_names_the_ports_on_shell_and_control(kernel):
    with open(kernel.km.connection_file) as f:
        expected = {k: v for k, v in json.load(f).items() if k.endswith("_port")}
    assert len(expected) == 5
    msg_id = kernel.send("connect_request")
    assert ok(kernel.reply(msg_id)) == {"status": "ok", **expected}
    assert kernel.control("connect_request")["content"] == {"status": "ok", **expected}


def test_one_payload_per_source(kernel):
    """``?`` twice, or ``set_next_input`` in a loop: the frontend gets one of each."""
    reply, _ = kernel.run("len?\nlen?")
    assert [p["source"] for p in ok(reply)["payload"]] == ["page"]
    reply, _ = kernel.run("for i in range(3):\n    get_ipython().set_next_input(f'x = {i}')")
    (payload,) = ok(reply)["payload"]
    assert payload["source"] == "set_next_input" and payload["text"] == "x = 2"


def test_a_module_beside_the_notebook_imports_after_chdir(kernel, tmp_path):
    (tmp_path / "beside_the_notebook.py").write_text("ANSWER = 42\n")
    _, _, stdout = run_ok(kernel, f"import os, sys\nos.chdir({str(tmp_path)!r})\n"
                                  "import beside_the_notebook\n"
                                  "print(beside_the_notebook.ANSWER, '' in sys.path)")
    assert stdout == "42 True\n"
    run_ok(kernel, f"os.chdir({os.getcwd()!r})")


def test_a_failing_repr_makes_the_reply_an_error(kernel):
    """As under ipykernel: the cell's value could not be shown, so the cell failed."""
    run_ok(kernel, "class Unshowable:\n    def __repr__(self):\n        1 / 0")
    reply, msgs = kernel.run("Unshowable()")
    content = reply["content"]
    assert content["status"] == "error" and content["ename"] == "ZeroDivisionError"
    assert [m["content"]["ename"] for m in of_type(msgs, "error")] == ["ZeroDivisionError"]
    # a traceback shown on purpose, or a failing display() call, is not the cell failing
    run_ok(kernel, "try:\n    1 / 0\nexcept ZeroDivisionError:\n    get_ipython().showtraceback()")
    run_ok(kernel, "display(Unshowable())")


# -- streams ------------------------------------------------------------------------------
def test_stdout_has_a_descriptor_that_reaches_the_frontend(kernel):
    code = ("import faulthandler, os, sys\n"
            "faulthandler.enable()\n"
            "os.write(sys.stdout.fileno(), b'written to the fd\\n')\n"
            "faulthandler.dump_traceback(all_threads=False)\n"
            "print(os.path.sameopenfile(sys.stdout.fileno(), 1),\n"
            "      os.path.sameopenfile(sys.stderr.fileno(), 2), sys.stdout.isatty())")
    reply, _ = kernel.run(code)
    ok(reply)
    msg_id = reply["parent_header"]["msg_id"]
    wait_for_text(kernel, msg_id, "written to the fd\n")
    wait_for_text(kernel, msg_id, "line 4 in <module>", "stderr")
    # fd output reaches the stream as the iopub thread reads the pipe, after the fact,
    # but it never splits the line print() is writing (it goes in before that line)
    assert "True True False\n" in kernel.stdout(msg_id)


def test_closing_the_descriptor_it_gave_closes_nothing_of_the_kernels(kernel):
    code = ("import os, sys\n"
            "with open(sys.stdout.fileno(), 'w') as f:\n"
            "    f.write('through a file of its own\\n')\n"
            "os.write(1, b'fd 1 still reaches the frontend\\n')\n"
            "print('and so does print')")
    reply, _ = kernel.run(code)
    ok(reply)
    msg_id = reply["parent_header"]["msg_id"]
    wait_for_text(kernel, msg_id, "through a file of its own\n")
    wait_for_text(kernel, msg_id, "fd 1 still reaches the frontend\n")
    assert "and so does print\n" in kernel.stdout(msg_id)


def test_forked_processes_print_to_the_cell(kernel):
    code = ("import multiprocessing as mp, sys, time\n"
            "ctx = mp.get_context('fork')\n"
            "def child(i):\n"
            "    print('child', i, sys.stdout._is_master_process())\n"
            "    raise SystemExit(int('not a number'))\n"
            "procs = [ctx.Process(target=child, args=(i,)) for i in range(3)]\n"
            "for p in procs: p.start()\n"
            "for p in procs: p.join()\n"
            "time.sleep(0.3)  # the kernel reads the children's output from its fd pipes\n"
            "print('parent', sys.stdout._is_master_process(), [p.exitcode for p in procs])")
    reply, _ = kernel.run(code)
    ok(reply)
    msg_id = reply["parent_header"]["msg_id"]
    for i in range(3):
        wait_for_text(kernel, msg_id, f"child {i} False\n")
    assert "parent True [1, 1, 1]\n" in kernel.stdout(msg_id)
    assert kernel.stdout(msg_id, "stderr").count("ValueError: invalid literal") == 3


# -- the shell and the kernel, as libraries see them -----------------------------------------
def test_the_shell_as_libraries_see_it(kernel, profile):
    code = ("import os, sys\n"
            "ip = get_ipython()\n"
            "print(type(ip).__name__, type(ip).__module__)\n"
            "print(ip.config.IPKernelApp.connection_file)\n"
            "print(__session__)\n"
            "print(ip.profile_dir.location)\n"
            "print(os.environ['TERM'], os.environ['FORCE_COLOR'], os.environ['PAGER'])\n"
            "print(ip.kernel.language_info['name'], ip.kernel.shell is ip)")
    _, _, stdout = run_ok(kernel, code)
    assert stdout.splitlines() == [
        "ZMQInteractiveShell subshell_kernel.adapter.recognition",
        kernel.km.connection_file,
        SESSION_NAME,
        str(profile),
        "xterm-color 1 cat",
        "python True",
    ]


def test_get_parent_names_the_request_and_who_sent_it(kernel):
    msg_id = kernel.execute(
        "k = get_ipython().kernel\n"
        "p = get_ipython().get_parent()\n"
        "print(p['header']['msg_id'], p['content']['code'][:3], k.get_parent('shell')['msg_id'])\n"
        "print(k._parent_ident['shell'])")
    ok(kernel.reply(msg_id))
    kernel.iopub(msg_id)
    first, second = kernel.stdout(msg_id).splitlines()
    assert first == f"{msg_id} k = {msg_id}"
    assert second == repr([kernel.session.bsession])
    info = kernel.control("kernel_info_request")
    _, _, stdout = run_ok(kernel, "p = k.get_parent('control')\n"
                                  "print(p['header']['msg_id'], k._parent_ident['control'])")
    assert stdout == f"{info['parent_header']['msg_id']} {[kernel.session.bsession]!r}\n"


def test_set_thread_parent_sends_a_threads_output_elsewhere(kernel):
    first = kernel.execute("import threading\n"
                           "first = get_ipython().get_parent()\n"
                           "go = threading.Event(); done = threading.Event()")
    ok(kernel.reply(first))
    code = ("def work():\n"
            "    go.wait(10)\n"
            "    token = get_ipython().set_thread_parent(first)\n"
            "    print('to the first cell')\n"
            "    get_ipython().reset_thread_parent(token)\n"
            "    print('to the cell that started me')\n"
            "    done.set()\n"
            "threading.Thread(target=work).start()")
    second = kernel.execute(code)
    ok(kernel.reply(second))
    third = kernel.execute("go.set(); done.wait(10)")
    ok(kernel.reply(third))
    kernel.iopub(third)
    wait_for_text(kernel, second, "me\n")
    assert kernel.stdout(first) == "to the first cell\n"
    assert kernel.stdout(second) == "to the cell that started me\n"
    assert kernel.stdout(third) == ""


def test_fd_output_of_a_cell_comes_before_its_idle(kernel):
    """What a cell's subprocesses and C code wrote comes before the cell's idle: nbclient
    (``jupyter execute``) stops listening at the idle."""
    for i in range(20):
        reply, msgs = kernel.run(f"import os\nos.system('echo from a subprocess {i}')\n"
                                 f"os.write(2, b'{i}' * 30000)")
        ok(reply)
        text = "".join(m["content"]["text"] for m in of_type(msgs, "stream"))
        assert f"from a subprocess {i}\n" in text and text.count(str(i)) >= 30000, i
