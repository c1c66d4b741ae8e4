"""GUI event loops on a live kernel: ``%matplotlib qt``, ``%gui tk``, ``%gui`` off, errors.

The kernels run on a virtual screen: this module starts its own Xvfb, which
picks a free display number itself (``-displayfd``), and hands ``DISPLAY`` to
the kernels it starts.  Without Xvfb, PySide6 or tkinter the tests skip, and
fail under SUBSHELL_KERNEL_STRICT=1 (CI): ``scripts/setup.sh`` installs them.

One kernel per backend walks through a session (a GUI timer firing between
cells and during ``await``, requests pipelined across a switch, a subshell
answering, interrupts with a Qt window open, the GUI off and on, shutdown
with windows open); one kernel without a display checks the errors.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time

import pytest

from .harness import KernelHarness, skip_unless_strict


@pytest.fixture(scope="module")
def display():
    """A private X server (Xvfb) for this module; yields its DISPLAY value."""
    if shutil.which("Xvfb") is None:
        skip_unless_strict("Xvfb is not installed (Debian: xvfb)")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp", "-screen", "0", "800x600x24"],
        pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as f:
            number = f.readline().strip()  # written once the server accepts clients
        if not number:
            pytest.fail(f"Xvfb did not start (exit status {server.wait(5)})")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


def require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        skip_unless_strict(f"{what} is not installed")


@pytest.fixture(params=["subshell", "subshell-trio"], ids=["asyncio", "trio"])
def gui_kernel(request, display):
    require("PySide6", "PySide6 (the test extras install it)")
    require("tkinter", "tkinter (Python's Tk support)")
    require("matplotlib", "matplotlib")
    k = KernelHarness(request.param, env=dict(os.environ, DISPLAY=display))
    yield k
    k.close()


def ok(k: KernelHarness, code: str, subshell_id: str | None = None) -> str:
    """Run ``code``; assert it succeeded with nothing on stderr; return its stdout."""
    reply, _ = k.run(code, subshell_id)
    msg_id = reply["parent_header"]["msg_id"]
    assert reply["content"]["status"] == "ok", reply["content"]
    assert k.stdout(msg_id, "stderr") == ""
    return k.stdout(msg_id)


def value(k: KernelHarness, expr: str) -> int:
    return int(ok(k, f"print({expr})"))


def ticks_while_idle(k: KernelHarness, seconds: float) -> int:
    before = value(k, "ticks[0]")
    time.sleep(seconds)
    return value(k, "ticks[0]") - before


def interrupted_after(k: KernelHarness, code: str, subshell_id: str | None = None) -> float:
    """Seconds from SIGINT to the reply of a blocking ``code`` (a KeyboardInterrupt)."""
    msg_id = k.execute(code, subshell_id)
    time.sleep(0.5)
    start = time.monotonic()
    k.km.interrupt_kernel()
    reply = k.reply(msg_id, timeout=10)
    assert reply["content"].get("ename") == "KeyboardInterrupt", reply["content"]
    return time.monotonic() - start


FIGURE_TIMER = """\
import anyio, time, matplotlib, matplotlib.pyplot as plt
fig = plt.figure()
ticks = [0]
timer = fig.canvas.new_timer(interval=10)
timer.add_callback(lambda: ticks.__setitem__(0, ticks[0] + 1))
timer.start()
print(matplotlib.get_backend())
"""

RAW_TIMER = {
    "qt": """\
from PySide6 import QtCore, QtWidgets
ticks = [0]
timer = QtCore.QTimer()
timer.timeout.connect(lambda: ticks.__setitem__(0, ticks[0] + 1))
timer.start(10)
window = QtWidgets.QLabel('a window'); window.show()
""",
    "tk": """\
import tkinter
ticks = [0]
window = tkinter.Toplevel(tkinter._default_root); tkinter.Label(window, text='open').pack()
def tick():
    ticks[0] += 1
    window.after(10, tick)
window.after(10, tick)
""",
}


def check_timer_fires(k: KernelHarness) -> None:
    """The GUI's timer fires while the kernel is idle, and during an ``await`` cell."""
    assert ticks_while_idle(k, 0.5) >= 5
    during = ok(k, "import anyio\nn = ticks[0]\nawait anyio.sleep(0.5)\nprint(ticks[0] - n)")
    assert int(during) >= 5


def check_interrupts(k: KernelHarness, subshell_id: str) -> None:
    """Blocking code in the parent, and in a subshell while the parent waits in the GUI
    loop (the signal must wake that loop to be handled at all)."""
    assert interrupted_after(k, "import time; time.sleep(30)") < 3
    assert interrupted_after(k, "import time; time.sleep(30)", subshell_id) < 1.5
    assert ticks_while_idle(k, 0.3) >= 3


def test_a_gui_loop_hosts_the_kernel(gui_kernel):
    """asyncio: %matplotlib tk, then %gui qt; trio: %matplotlib qt, then %gui tk."""
    k = gui_kernel
    first, second = ("tk", "qt") if "trio" not in k.km.kernel_name else ("qt", "tk")
    # a figure's timer fires between cells and during await
    assert ok(k, f"%matplotlib {first}") == ""
    assert ok(k, FIGURE_TIMER).strip() == f"{first}agg"
    check_timer_fires(k)

    # plt.pause runs a GUI loop inside the cell: the figure's timer keeps firing, the
    # loop is not re-entered, and a request sent meanwhile runs after it
    paused = k.execute("pause_over = False; n, t = ticks[0], time.monotonic(); plt.pause(1.0)\n"
                       "print(ticks[0] - n, time.monotonic() - t); pause_over = True")
    time.sleep(0.3)
    # (not ``time.monotonic() - t >= 1.0``: Qt's coarse timers may end the pause 5% early)
    queued = k.execute("print('after the pause:', pause_over)")
    k.iopub(paused), k.iopub(queued)  # up to their idle: all their output is in
    count, seconds = k.stdout(paused).split()
    assert int(count) >= 20 and float(seconds) < 2.0  # starved: 4 ticks, 2.3 s
    assert k.stdout(queued) == "after the pause: True\n"

    # a subshell answers on its own thread while the parent's await cell runs in the GUI
    subshell_id = k.create_subshell()
    parent = k.execute("await anyio.sleep(1)")
    assert ok(k, "import threading; print(threading.current_thread().name)",
              subshell_id).startswith("subshell-")
    assert k.reply(parent)["content"]["status"] == "ok"
    if first == "qt":  # interrupts with the figure's Qt window open
        check_interrupts(k, subshell_id)

    # %gui: off; with no GUI loop running, a new figure's timer never fires
    ok(k, "timer.stop(); plt.close('all'); ticks[0] = 0\n%gui")
    ok(k, "ticks[0] = 0; fig = plt.figure(); timer = fig.canvas.new_timer(interval=10)\n"
          "timer.add_callback(lambda: ticks.__setitem__(0, ticks[0] + 1)); timer.start()")
    assert ticks_while_idle(k, 0.3) <= 1
    ok(k, "timer.stop()")

    # the other GUI, with requests pipelined across the switch: none is lost or
    # refused, all run in order on the new loop
    ok(k, "n = 0")
    ids = [k.execute(f"%gui {second}"), *(k.execute("n += 1") for _ in range(20))]
    assert [k.reply(i)["content"]["status"] for i in ids] == ["ok"] * 21
    assert value(k, "n") == 20
    ok(k, RAW_TIMER[second])
    check_timer_fires(k)
    if second == "qt":  # interrupts with a Qt window open
        check_interrupts(k, subshell_id)

    # shutdown with a window open: the GUI loop ends and the process exits 0
    k.kc.shutdown()
    assert k.km.provisioner.process.wait(10) == 0


@pytest.fixture(scope="module")
def headless_kernel():
    env = {name: v for name, v in os.environ.items() if name not in ("DISPLAY", "WAYLAND_DISPLAY")}
    k = KernelHarness("subshell", env=env)
    yield k
    k.close()


def error_of(k: KernelHarness, code: str) -> str:
    reply, _ = k.run(code)
    assert reply["content"]["status"] == "error", reply["content"]
    assert reply["content"]["ename"] == "UsageError"
    return reply["content"]["evalue"]


@pytest.mark.parametrize("code", ["%gui qt", "%matplotlib qt", "%gui tk", "%matplotlib tk"])
def test_no_display_is_an_error_that_says_so(headless_kernel, code):
    require("PySide6", "PySide6 (the test extras install it)")
    require("tkinter", "tkinter (Python's Tk support)")
    assert "no display ($DISPLAY is not set)" in error_of(headless_kernel, code)
    assert value(headless_kernel, "6 * 7") == 42  # Qt did not abort the process


def test_a_display_nobody_answers_is_an_error_that_says_so(headless_kernel):
    require("PySide6", "PySide6 (the test extras install it)")
    k = headless_kernel
    ok(k, "import os; os.environ['DISPLAY'] = ':65000'")  # no X server there
    try:
        assert "cannot open the display ':65000'" in error_of(k, "%gui qt")
    finally:
        ok(k, "del os.environ['DISPLAY']")
    assert value(k, "6 * 7") == 42


def test_a_missing_toolkit_is_an_error_that_says_which(headless_kernel):
    k = headless_kernel
    if importlib.util.find_spec("PyQt5") or importlib.util.find_spec("PySide2"):
        pytest.skip("a Qt 5 binding is installed here")
    assert "no Qt 5 binding is installed (tried PyQt5, PySide2)" in error_of(k, "%gui qt5")
    ok(k, "import sys; sys.modules['tkinter'] = None")  # as in a Python built without Tk
    try:
        assert "tkinter is not available" in error_of(k, "%gui tk")
    finally:
        ok(k, "del sys.modules['tkinter']")
    assert "'wx' is not supported" in error_of(k, "%gui wx")
    assert value(k, "6 * 7") == 42
