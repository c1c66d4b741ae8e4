#!/usr/bin/env python
"""Where a kernel's time goes, per request: CPU time and wake-ups per thread, and stacks.

    python benchmarks/kernel_profile.py [--kernel subshell] [--case pass] [-n 2000]
                                        [--py-spy out.txt] [--busy]
    python benchmarks/kernel_profile.py --startup [--kernel subshell] [-n 10]

Cases: ``pass`` (execute round trips), ``control`` (control kernel_info round
trips; with ``--busy`` while the parent runs a CPU loop), ``subshell`` (round
trips on a subshell; with ``--busy`` likewise).

For each thread of the kernel process it prints, per request, the CPU time
(``/proc/<pid>/task/<tid>/schedstat``: nanoseconds on a CPU, precise, unlike
the 10 ms ticks of ``stat``), the time spent runnable but waiting for a CPU,
and the voluntary context switches (a thread that sleeps and is woken: a
blocking wait, a GIL hand-off). With ``--py-spy FILE`` it also samples the
kernel's stacks with py-spy (installed separately: ``pip install py-spy``)
while the requests run, and prints the functions that held the CPU most, by
own time and by inclusive time. CPU time is what the machine's noise does not
change, so this is the figure to compare before and after a change.

With ``--startup`` it launches the kernel ``-n`` times instead and prints,
per thread, the CPU time from the launch to the first ``kernel_info_reply``
and to the reply of a first ``pass`` sent right after it (medians): where
the time before a first cell runs goes, thread by thread.  The figures are
read from ``/proc`` the moment each reply arrives, while the process lives.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run  # the benchmark's kernel client and kernelspecs


def thread_stats(pid: int) -> dict[int, dict]:
    stats = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                on_cpu, waiting, _ = map(int, f.read().split())
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.split(":\t", 1) for line in f if ":\t" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue
        stats[int(tid)] = {"name": name, "cpu": on_cpu, "wait": waiting,
                           "switches": int(status["voluntary_ctxt_switches"])}
    return stats


THREAD_NAMES = (
    "import json, threading\n"
    "print(json.dumps({t.native_id: t.name for t in threading.enumerate()}))"
)


def thread_names(k: run.Kernel) -> dict[int, str]:
    """Python's names of the kernel's threads, by native id (zmq's own keep their OS name)."""
    msg_id = k.submit(THREAD_NAMES)
    _, iopub = k.finish(msg_id, 10)
    text = "".join(m["content"]["text"] for m in iopub if m["msg_type"] == "stream")
    try:
        return {int(tid): name for tid, name in json.loads(text).items()}
    except ValueError:
        return {}


def diff(before: dict, after: dict, n: int, names: dict[int, str]) -> list[tuple]:
    rows = []
    for tid, a in after.items():
        b = before.get(tid, {"cpu": 0, "wait": 0, "switches": 0})
        rows.append((names.get(tid, a["name"]), tid, (a["cpu"] - b["cpu"]) / n / 1000,
                     (a["wait"] - b["wait"]) / n / 1000, (a["switches"] - b["switches"]) / n))
    return sorted(rows, key=lambda r: -r[2])


def case_pass(k: run.Kernel, n: int, busy: bool) -> None:
    for _ in range(n):
        k.execute("pass")


def case_control(k: run.Kernel, n: int, busy: bool) -> None:
    for _ in range(n):
        k.request("control", "kernel_info_request")


def case_subshell(k: run.Kernel, n: int, busy: bool) -> None:
    subshell_id = k.create_subshell()
    for _ in range(n):
        k.execute("pass", subshell_id=subshell_id)


CASES = {"pass": case_pass, "control": case_control, "subshell": case_subshell}


def startup(name: str, launches: int) -> None:
    """``--startup``: per-thread CPU to the first ``kernel_info`` and the first ``pass``.

    Threads are matched across launches by name (their ids change); a thread
    that did not exist yet at a reply counts 0 ms there."""
    walls: list[tuple[float, float]] = []
    cpu: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="kernel-profile-") as tmp:
        spec_manager = run.make_spec_manager([name], Path(tmp))
        for _ in range(launches):
            k = run.Kernel(name, name, spec_manager, Path(tmp))
            start = time.perf_counter()
            try:
                k.start()
                at_info, info_wall = thread_stats(k.pid), time.perf_counter() - start
                k.execute("pass")
                at_pass, pass_wall = thread_stats(k.pid), time.perf_counter() - start
                names = thread_names(k)
            finally:
                k.shutdown(now=True)
            walls.append((info_wall * 1e3, pass_wall * 1e3))
            per_name: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
            for column, stats in enumerate((at_info, at_pass)):
                for tid, st in stats.items():
                    per_name[names.get(tid, st["name"])][column] += st["cpu"] / 1e6
            for thread, (info_ms, pass_ms) in per_name.items():
                cpu[thread].append((info_ms, pass_ms))

    def medians(rows: list[tuple[float, float]]) -> tuple[float, float]:
        return tuple(statistics.median(column) for column in zip(*rows))

    print(f"{name} startup: {launches} launches, medians in ms (CPU per thread, from /proc)")
    print(f"\n{'':<24} {'kernel_info':>12} {'first pass':>12}")
    rows = [("wall, from the launch", medians(walls))]
    rows += sorted(((thread, medians(v)) for thread, v in cpu.items()), key=lambda r: -r[1][1])
    for label, (info_ms, pass_ms) in rows:
        if pass_ms >= 0.5:
            print(f"{label:<24} {info_ms:>12.1f} {pass_ms:>12.1f}")


def summarize_py_spy(path: Path, top: int = 25) -> None:
    """Own and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        count = int(count)
        frames = stack.split(";")[1:]  # the first is the thread
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"\npy-spy: {total} samples on a CPU")
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\n  top {top} by {title} time")
        for frame, count in counter.most_common(top):
            print(f"  {100 * count / total:5.1f}%  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", default="subshell")
    parser.add_argument("--case", choices=CASES, default="pass")
    parser.add_argument("-n", type=int, default=None,
                        help="requests (default 2000), or launches with --startup (default 10)")
    parser.add_argument("--busy", action="store_true", help="while the parent runs a CPU loop")
    parser.add_argument("--py-spy", type=Path, default=None, help="sample stacks into FILE")
    parser.add_argument("--startup", action="store_true",
                        help="CPU per thread to the first replies, over -n launches")
    args = parser.parse_args()
    if args.startup:
        startup(args.kernel, args.n or 10)
        return 0
    args.n = args.n or 2000

    with tempfile.TemporaryDirectory(prefix="kernel-profile-") as tmp:
        spec_manager = run.make_spec_manager([args.kernel], Path(tmp))
        k = run.Kernel(args.kernel, args.kernel, spec_manager, Path(tmp))
        k.start()
        try:
            time.sleep(1.0)
            CASES[args.case](k, 50, False)  # warm-up
            names = thread_names(k)
            parent = None
            if args.busy:
                parent = k.submit(run.spin_cell(3600))
                k.wait_until(lambda: k.started(parent), 10, "parent cell to start")
            spy = None
            if args.py_spy:
                py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
                spy = subprocess.Popen([py_spy, "record", "-p", str(k.pid), "-r", "2000",
                                        "-f", "raw", "-o", str(args.py_spy), "--threads",
                                        "--nonblocking"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            before = thread_stats(k.pid)
            start = time.perf_counter()
            CASES[args.case](k, args.n, args.busy)
            wall = time.perf_counter() - start
            after = thread_stats(k.pid)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            if parent is not None:
                k.km.interrupt_kernel()
        finally:
            k.shutdown(now=True)

    print(f"{args.kernel} {args.case}{' (parent busy)' if args.busy else ''}: "
          f"{args.n} requests, {wall / args.n * 1e6:.0f} us wall each")
    print(f"\n{'thread':<24} {'tid':>7} {'cpu us':>8} {'waiting us':>10} {'wake-ups':>9}")
    rows = diff(before, after, args.n, names)
    for name, tid, cpu, wait, switches in rows:
        if cpu > 0.5 or switches > 0.01:
            print(f"{name:<24} {tid:>7} {cpu:>8.1f} {wait:>10.1f} {switches:>9.2f}")
    print(f"{'all threads':<24} {'':>7} {sum(r[2] for r in rows):>8.1f} "
          f"{sum(r[3] for r in rows):>10.1f} {sum(r[4] for r in rows):>9.2f}")
    if args.py_spy and args.py_spy.exists():
        summarize_py_spy(args.py_spy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
