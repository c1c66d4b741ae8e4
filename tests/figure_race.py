"""An ipympl figure redrawn from a subshell while the parent builds other figures.

This is what JupyterLab >= 4.4 does (``commsOverSubshells: perCommTarget``)
when a user resizes an interactive figure while a cell makes plots: the
canvas' ``resize`` and ``draw`` messages come on a subshell, and matplotlib is
not thread-safe.  ``run_once`` plays the frontend on one fresh kernel and
counts what went wrong; ``tests/test_comm_routing.py`` requires zero, and

    python -m tests.figure_race --kernels subshell,python3 --runs 10

prints the counts for this kernel and ipykernel side by side.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from .harness import KernelHarness

#: the figure the "user" looks at and resizes (``%matplotlib widget``: an ipympl canvas)
SHOWN_FIGURE = r"""
%matplotlib widget
import matplotlib.pyplot as plt
import numpy as np
fig, ax = plt.subplots()
ax.plot(np.arange(10) ** 2)
ax.set_title(r"$\sum_i x_i^2 + \sqrt{\alpha}$")
print(fig.canvas.comm.comm_id)
"""

#: the parent's long cell: figures with mathtext titles, laid out by tight_layout
BUILD = r"""
import matplotlib.pyplot as plt
for i in range({n}):
    f, a = plt.subplots(figsize=(3, 2))
    a.plot(range(10))
    a.set_title(r"$\alpha_{{%d}} = \frac{{1}}{{\sqrt{{x}}}}$" % i)
    a.set_xlabel(r"$\int_0^1 f(x)\,dx$")
    f.tight_layout()
    plt.close(f)
print("built", {n})
"""


@dataclass
class Outcome:
    kernel: str
    cell_status: str = "?"
    cell_error: str = ""
    cell_stderr: str = ""
    handler_errors: list[str] = field(default_factory=list)
    alive: bool = True
    requests: int = 0  # resize + draw messages sent while the cell ran
    frames_during_cell: int = 0  # images the canvas sent back while the cell ran
    slowest_frame: float = 0.0  # seconds from a draw request to its idle, the longest
    cell_seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return (self.cell_status != "ok" or bool(self.cell_stderr) or bool(self.handler_errors)
                or not self.alive)


def run_once(kernel_name: str, figures: int = 150, timeout: float = 300) -> Outcome:
    k = KernelHarness(kernel_name)
    out = Outcome(kernel_name)
    try:
        widgets = k.create_subshell()  # JupyterLab's subshell for "jupyter.widget" comms
        reply, _ = k.run(SHOWN_FIGURE, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
        comm_id = k.stdout(reply["parent_header"]["msg_id"]).split()[-1]

        def canvas(content: dict) -> str:
            data = {"method": "custom", "content": content}
            return k.send("comm_msg", {"comm_id": comm_id, "data": data}, widgets)

        k.iopub(canvas({"type": "initialized"}), timeout=60)
        sent: list[str] = []
        t0 = time.monotonic()
        build = k.execute(BUILD.format(n=figures))
        width = 0
        while build not in k._replies and k.is_alive():
            # as ipympl's frontend does: ask for the next frame once the last one came
            width += 1
            sent.append(canvas({"type": "resize", "width": 400 + width % 40, "height": 300}))
            sent.append(canvas({"type": "draw"}))
            asked = time.monotonic()
            deadline = asked + timeout
            while not _idle(k, sent[-1]) and build not in k._replies:
                k._pump(0.005)
                if time.monotonic() > deadline or not k.is_alive():
                    break
            if _idle(k, sent[-1]):
                out.slowest_frame = max(out.slowest_frame, time.monotonic() - asked)
            out.frames_during_cell += sum(
                1 for m in k._iopub[sent[-1]] if m["msg_type"] == "comm_msg" and m["buffers"])
            if time.monotonic() - t0 > timeout:
                break
        out.cell_seconds = time.monotonic() - t0
        out.requests = len(sent)
        out.alive = k.is_alive()
        if not out.alive:
            return out
        content = k.reply(build, timeout=timeout)["content"]
        out.cell_status = content["status"]
        out.cell_error = f"{content.get('ename', '')}: {content.get('evalue', '')}"[:300]
        for msg_id in sent:
            for m in k.iopub(msg_id, timeout=timeout):
                if m["msg_type"] == "error" or (m["msg_type"] == "stream"
                                                and m["content"]["name"] == "stderr"):
                    out.handler_errors.append(str(m["content"])[:300])
        k.iopub(build, timeout=timeout)
        out.cell_stderr = k.stdout(build, "stderr")[:300]
        out.alive = k.is_alive()
        return out
    finally:
        k.close()


def _idle(k: KernelHarness, msg_id: str) -> bool:
    return any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
               for m in k._iopub[msg_id])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", default="subshell,python3")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--figures", type=int, default=150)
    args = parser.parse_args()
    from . import conftest  # noqa: F401  (writes the kernelspecs, python3 = ipykernel)

    for name in args.kernels.split(","):
        outcomes = [run_once(name, args.figures) for _ in range(args.runs)]
        clean = sum(not o.failed for o in outcomes)
        print(f"{name}: {clean}/{args.runs} runs without an error", flush=True)
        for i, o in enumerate(outcomes, 1):
            what = "ok" if not o.failed else (
                o.cell_error if o.cell_status != "ok" else
                (o.handler_errors[:1] or [o.cell_stderr or "kernel died"])[0])
            print(f"  run {i}: {what[:120]}; cell {o.cell_seconds:.1f} s, "
                  f"{o.requests} requests, {o.frames_during_cell} frames during the cell, "
                  f"slowest frame {o.slowest_frame:.2f} s", flush=True)


if __name__ == "__main__":
    main()
