"""A frontend that stops reading iopub costs the kernel a bounded amount of memory,
and costs the frontend that keeps reading nothing.

A second subscriber process connects a SUB socket to iopub, receives its
``iopub_welcome`` and stops itself (SIGSTOP): a frozen browser tab, a laptop
asleep. A cell then prints 1 GB in 100-byte lines while this test reads iopub
as a live frontend, checks every one of the 10,000,000 lines arrives in order,
and asks control and a subshell for answers during the flood. Then a second
flood is interrupted, the frozen process is killed, and the kernel's memory
must come back down.

    python -m tests.test_frozen_subscriber python3   # the same measurement against ipykernel
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from .harness import KernelHarness

LINES = 10_000_000
LINE_WIDTH = 99  # + "\n": 100 bytes a line, 1 GB in all
FLOOD = f"for i in range({LINES}):\n    print(f'{{i:0{LINE_WIDTH}d}}')"
ENDLESS = f"i = 0\nwhile True:\n    print(f'{{i:0{LINE_WIDTH}d}}')\n    i += 1"
MAX_GROWTH_MB = 100

FROZEN_SUBSCRIBER = """\
import os, signal, sys, zmq
sock = zmq.Context().socket(zmq.SUB)
sock.connect(sys.argv[1])
sock.subscribe(b"")
welcomed = sock.poll(10000)  # a kernel without iopub_welcome: wait, then freeze anyway
print("subscribed" if welcomed else "no welcome", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[-1].split()[0]


class LiveReader(threading.Thread):
    """Reads iopub as a frontend that keeps reading, checking the flood line by line."""

    def __init__(self, kernel: KernelHarness, flood_id: str):
        super().__init__(daemon=True)
        self.channel = kernel.kc.iopub_channel
        self.flood_id = flood_id
        self.lines = 0
        self.error: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        partial, expected = "", 0
        while not self.done.is_set():
            try:
                msg = self.channel.get_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != self.flood_id:
                continue
            if msg["msg_type"] == "stream":
                text = partial + msg["content"]["text"]
                *complete, partial = text.split("\n")
                for line in complete:
                    if self.error is None and line != f"{expected:0{LINE_WIDTH}d}":
                        self.error = f"line {expected} is {line[:20]!r}..."
                    expected += 1
                self.lines = expected
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                self.done.set()


def measure(kernel_name: str) -> dict:
    """Run the whole scenario against ``kernel_name``; the figures for the assertions."""
    k = KernelHarness(kernel_name, eager_iopub=False)  # the LiveReader reads iopub
    frozen = None
    try:
        info = k.km.get_connection_info()
        frozen = subprocess.Popen(
            [sys.executable, "-c", FROZEN_SUBSCRIBER, f"tcp://{info['ip']}:{info['iopub_port']}"],
            stdout=subprocess.PIPE, text=True,
        )
        frozen.stdout.readline()
        deadline = time.monotonic() + 10
        while _state(frozen.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(frozen.pid) == "T", "the second subscriber did not stop"
        subshell = k.create_subshell()
        k.run("pass", subshell)
        time.sleep(0.5)
        baseline = _status_kb(k.pid, "VmRSS")
        with open(f"/proc/{k.pid}/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS

        flood_id = k.execute(FLOOD)
        reader = LiveReader(k, flood_id)
        reader.start()
        time.sleep(2)
        t0 = time.monotonic()
        k.control("kernel_info_request", timeout=30)
        control_s = time.monotonic() - t0
        probe = k.session.msg("execute_request", {"code": "1 + 1", "silent": False})
        probe["header"]["subshell_id"] = subshell
        t0 = time.monotonic()
        k.kc.shell_channel.send(probe)
        while True:  # the shell reply only: iopub belongs to the reader
            reply = k.kc.shell_channel.get_msg(timeout=60)
            if reply["parent_header"]["msg_id"] == probe["header"]["msg_id"]:
                break
        subshell_s = time.monotonic() - t0
        flood_reply = None
        t_flood = time.monotonic()
        while flood_reply is None and time.monotonic() - t_flood < 600:
            try:
                reply = k.kc.shell_channel.get_msg(timeout=1)
            except queue.Empty:
                continue
            if reply["parent_header"]["msg_id"] == flood_id:
                flood_reply = reply
        reader.done.wait(60)
        reader.done.set()
        peak = _status_kb(k.pid, "VmHWM")

        endless = k.execute(ENDLESS)
        time.sleep(1)
        t0 = time.monotonic()
        k.control("interrupt_request", timeout=30)
        while True:
            reply = k.kc.shell_channel.get_msg(timeout=60)
            if reply["parent_header"]["msg_id"] == endless:
                break
        interrupt_s = time.monotonic() - t0

        frozen.kill()
        frozen.wait(5)
        time.sleep(3)
        after = _status_kb(k.pid, "VmRSS")
        return {
            "kernel": kernel_name,
            "flood status": flood_reply and flood_reply["content"]["status"],
            "lines received": reader.lines,
            "line error": reader.error,
            "peak RSS growth MB": (peak - baseline) / 1024,
            "RSS after, over baseline MB": (after - baseline) / 1024,
            "control kernel_info during flood s": control_s,
            "subshell execute during flood s": subshell_s,
            "interrupt of a flood s": interrupt_s,
            "interrupt reply": reply["content"].get("ename", reply["content"]["status"]),
        }
    finally:
        if frozen is not None and frozen.poll() is None:
            frozen.kill()
        k.close()


@pytest.mark.timeout(900)
def test_a_frozen_subscriber_costs_bounded_memory_and_the_live_one_gets_everything():
    figures = measure("subshell")
    print(figures)
    assert figures["flood status"] == "ok"
    assert figures["line error"] is None and figures["lines received"] == LINES
    assert figures["peak RSS growth MB"] <= MAX_GROWTH_MB, figures
    assert figures["RSS after, over baseline MB"] <= 25, figures
    assert figures["control kernel_info during flood s"] < 5, figures
    assert figures["subshell execute during flood s"] < 10, figures
    assert figures["interrupt reply"] == "KeyboardInterrupt", figures
    assert figures["interrupt of a flood s"] < 5, figures


if __name__ == "__main__":
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    from . import conftest  # noqa: F401  (writes the kernelspecs the harness uses)

    print(measure(sys.argv[1] if len(sys.argv) > 1 else "subshell"))
    signal.signal(signal.SIGINT, signal.SIG_DFL)
