#!/usr/bin/env python
"""Benchmark our kernel against its peers, side by side, in one run.

    python benchmarks/run.py [--quick] [--kernels subshell,python3,xeus-python,ipymini,async-kernel]
                             [--only execute,interrupt] [--out benchmarks/results.json]

Our kernel and ipykernel (``python3``) are launched from a temporary kernelspec
that points at ``sys.executable``; the other peers (``benchmarks/peers.py``) each
from PyPI, at a pinned version, in a venv of their own under
``benchmarks/.peers/`` (created on first use, then reused). Each benchmark runs
in rounds that alternate between the kernels (A, B, C, A, B, C, ...) so that
noise from the shared machine hits all of them. Clients talk to the kernels
over raw ZMQ sockets; every kernel is measured by exactly the same client code.
Requests are built and signed by ``jupyter_client.session.Session``; incoming
messages are verified and decoded by a lean decoder (``--client lean``, the
default) or by ``Session.deserialize`` (``--client jupyter_client``).

The first kernel in ``--kernels`` is "ours"; each row shows ours / the best of
the others and ours / ipykernel (for throughput rows higher is better, for all
others lower is better). The floors (a bare zmq round trip, a bare
``run_cell('pass')``, interpreter startup) are measured in the same run. See
benchmarks/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import floors
import jupyter_client
import peers
import psutil
import zmq
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

# Kernels we know how to launch without relying on installed kernelspecs.
# Any other name falls back to the installed kernelspec of that name.
KERNEL_ARGV = {
    "subshell": [sys.executable, "-m", "subshell_kernel", "-f", "{connection_file}"],
    "subshell-trio": [sys.executable, "-m", "subshell_kernel", "-f", "{connection_file}",
                      "--SubshellKernel.backend=trio"],
    "python3": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
}

# The same kernel on its trio backend, for the trio interrupt row.
TRIO_VARIANT = {"subshell": "subshell-trio"}

DEFAULT_KERNELS = ("subshell", "python3", *peers.PEERS)
#: column titles
LABELS = {"subshell": "ours", "python3": "ipykernel",
          **{name: peer.label for name, peer in peers.PEERS.items()}}
IPYKERNEL = "python3"
#: ``subshell@DIR``: our kernel from another source tree (a checkout of an older
#: commit), to compare two versions in one run under the same noise
OTHER_TREE = "subshell@"

NEVER = float("inf")  # an interrupt that did not produce a reply in time
DELIM = b"<IDS|MSG>"


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    startups: int = 5  # kernel launches per kernel
    rtt_rounds: int = 6
    rtt_per_round: int = 50  # 6 x 50 = 300 timed requests
    rtt_warmup: int = 20
    pipeline_n: int = 2000
    pipeline_rounds: int = 2
    create_rounds: int = 2
    create_pairs: int = 50  # create+delete pairs per round
    busy_rounds: int = 2
    busy_seconds: float = 2.0  # how long the parent cell stays busy per round
    concurrent_ns: tuple[int, ...] = (1, 4, 16)
    concurrent_rounds: int = 1
    footprint_counts: tuple[int, ...] = (10, 100)
    print_lines: int = 100_000
    print_rounds: int = 2
    print_variant_rounds: int = 1  # the frozen-subscriber and concurrent print rows
    print_late_rounds: int = 1  # print again after the subshell benchmarks (0: skip)
    print_timeout: float = 30.0  # a print cell that takes longer is an error
    interrupt_rounds: int = 3
    interrupt_delay: float = 0.5  # seconds between sending the cell and SIGINT
    interrupt_timeout: float = 3.0  # after this, the interrupt counts as "never"
    debug_rounds: int = 2  # fresh kernels, each with a first debug session
    debug_stops: int = 10  # breakpoint stops per round
    timeout: float = 10.0  # timeout for a single reply; long operations add to it


DEFAULT = Config()
QUICK = replace(
    DEFAULT,
    startups=2,
    rtt_rounds=2,
    rtt_warmup=10,
    pipeline_n=500,
    pipeline_rounds=1,
    create_rounds=1,
    create_pairs=20,
    busy_rounds=1,
    busy_seconds=0.75,
    concurrent_ns=(1, 16),
    concurrent_rounds=1,
    print_rounds=1,
    print_late_rounds=0,
    interrupt_rounds=1,
    debug_rounds=1,
    debug_stops=5,
)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class BenchError(Exception):
    """A benchmark could not produce a valid measurement."""


class Timeout(BenchError):
    pass


class NotSupported(Exception):
    """The kernel lacks a feature the benchmark needs; the row shows n/a."""


@dataclass(frozen=True)
class Short:
    """Samples of answers that lack what the protocol asks of them (``why``).

    The figure is printed, marked ``*``, but is not the best of its row: a
    kernel that does less than the others is not faster at the same thing.
    """

    samples: list[float]
    why: str


# --------------------------------------------------------------------------
# Kernel: a started kernel with raw client sockets
# --------------------------------------------------------------------------


def execute_content(code: str, store_history: bool = False) -> dict:
    return {
        "code": code,
        "silent": False,
        "store_history": store_history,
        "user_expressions": {},
        "allow_stdin": False,
        # An error (e.g. KeyboardInterrupt) must not abort the requests that follow.
        "stop_on_error": False,
    }


def proc_status(pid: int) -> dict[str, str]:
    """Fields of /proc/<pid>/status."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


class Kernel:
    """A kernel process plus shell/control/iopub sockets and a mailbox.

    Incoming messages are filed by the msg_id of their parent request:
    ``replies`` (shell and control replies), ``iopub`` (all iopub messages)
    and ``idle`` (requests whose status: idle has been seen). ``comm_echoes``
    collects the ``seq`` values of comm_msg data per comm_id.
    """

    #: decode incoming messages with Session.deserialize instead of the lean decoder
    jupyter_client_decoder = False

    def __init__(self, name: str, label: str, spec_manager: KernelSpecManager, workdir: Path):
        self.name = name
        self.label = label
        self.spec_manager = spec_manager
        self.workdir = workdir
        stem = workdir / f"{label.replace('/', '_')}-{uuid.uuid4().hex[:8]}"
        self.km = KernelManager(kernel_name=spec_name(name), kernel_spec_manager=spec_manager,
                                connection_file=f"{stem}.json")
        self.context = zmq.Context.instance()
        self.sockets: dict[str, zmq.Socket] = {}
        self.poller = zmq.Poller()
        self.info: dict = {}
        self.log_path = stem.with_suffix(".log")
        self._log = None
        self.reset()

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 30.0) -> float:
        """Launch the kernel; return seconds from launch to the first kernel_info_reply."""
        env = dict(os.environ)
        if self.name in KERNEL_ARGV or self.name.startswith(OTHER_TREE):
            # ours runs from the repository (or the tree named); peers from their venvs
            root = self.name.partition("@")[2] or REPO_ROOT
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        self._log = open(self.log_path, "ab")
        start = time.perf_counter()
        # cwd: not the checkout, whose directory ``python -m`` would put first on
        # sys.path, so a tree named after "subshell@" would run this checkout's code
        self.km.start_kernel(env=env, stdout=self._log, stderr=self._log,
                             cwd=str(self.workdir))
        self._connect()
        reply = self._first_kernel_info(timeout)
        elapsed = time.perf_counter() - start
        self.info = reply["content"]
        self._wait_for_iopub()
        self.launched_at = start
        return elapsed

    def shut_down_and_wait(self, timeout: float) -> float:
        """``shutdown_request`` on control; ms from the request until the process is gone."""
        process = self.km.provisioner.process
        start = time.perf_counter()
        self.reply(self.send("control", "shutdown_request", {"restart": False}), timeout,
                   "shutdown_reply")
        while process.poll() is None:
            if time.perf_counter() - start > timeout:
                raise Timeout(f"the process had not exited {timeout:g}s after shutdown_request")
            time.sleep(0.002)
        return ms_since(start)

    def spawn(self) -> Kernel:
        """A new, not yet started Kernel from the same kernelspec."""
        return Kernel(self.name, self.label, self.spec_manager, self.workdir)

    def restart(self) -> None:
        self._close_sockets()
        self.km.restart_kernel(now=True)
        self._connect()
        self.info = self._first_kernel_info(30.0)["content"]
        self._wait_for_iopub()

    def shutdown(self, now: bool = False) -> None:
        self._close_sockets()
        try:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=now)
        finally:
            if self._log:
                self._log.close()
                self._log = None

    def recover(self) -> None:
        """After a failed benchmark: restart, so the next benchmark gets a clean kernel
        (a failure may leave wedged subshells or a busy cell behind)."""
        print(f"    [{self.label}] restarting kernel", flush=True)
        self.restart()
        self.reset()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    @property
    def supports_subshells(self) -> bool:
        return "kernel subshells" in self.info.get("supported_features", [])

    @property
    def implementation(self) -> str:
        info = self.info
        return f"{info.get('implementation', '?')} {info.get('implementation_version', '')}"

    # -- sockets -----------------------------------------------------------

    def _connect(self) -> None:
        info = self.km.get_connection_info()
        self.session = self.km.session
        digest = self.session.signature_scheme.partition("-")[2]
        key = self.session.key
        self._mac = hmac.new(key, digestmod=getattr(hashlib, digest)) if key else None

        def url(channel: str) -> str:
            port = info[f"{channel}_port"]
            if info["transport"] == "tcp":
                return f"tcp://{info['ip']}:{port}"
            return f"{info['transport']}://{info['ip']}-{port}"

        self.poller = zmq.Poller()
        for channel, kind in (("shell", zmq.DEALER), ("control", zmq.DEALER), ("iopub", zmq.SUB)):
            sock = self.context.socket(kind)
            sock.linger = 0
            # A connect before the kernel has bound is retried after zmq's reconnect
            # interval, 100 ms plus a random 0-100 ms: the startup row then measured
            # that jitter more than the kernel. Retry every 10 ms instead.
            sock.setsockopt(zmq.RECONNECT_IVL, 10)
            if kind == zmq.DEALER:
                sock.identity = self.session.bsession
            else:
                sock.rcvhwm = 0  # never drop iopub messages on our side
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(url(channel))
            self.sockets[channel] = sock
            self.poller.register(sock, zmq.POLLIN)
        self._channel_of = {sock: channel for channel, sock in self.sockets.items()}

    def _close_sockets(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.sockets.clear()
        self.poller = zmq.Poller()

    def _first_kernel_info(self, timeout: float) -> dict:
        """Send kernel_info_request (re-sent every second) until one is answered."""
        deadline = time.perf_counter() + timeout
        sent: list[str] = []
        while True:
            sent.append(self.send("shell", "kernel_info_request"))
            resend_at = min(time.perf_counter() + 1.0, deadline)
            while (now := time.perf_counter()) < resend_at:
                self.pump(resend_at - now)
                for msg_id in sent:
                    if msg_id in self.replies:
                        return self.replies.pop(msg_id)
            if not self.km.is_alive():
                raise BenchError(f"kernel process exited during startup; log:\n{self.log_tail()}")
            if time.perf_counter() >= deadline:
                raise Timeout(f"no kernel_info_reply within {timeout}s; log:\n{self.log_tail()}")

    def _wait_for_iopub(self, timeout: float = 10.0) -> None:
        """Make sure our iopub subscription is live (a SUB socket joins late)."""
        deadline = time.perf_counter() + timeout
        while not self.iopub:
            if time.perf_counter() >= deadline:
                raise Timeout("iopub subscription never delivered a message")
            self.send("shell", "kernel_info_request")
            self.pump(0.2)
        time.sleep(0.05)
        self.pump(0)
        self.reset()

    # -- messaging ---------------------------------------------------------

    def reset(self) -> None:
        """Forget every message received so far."""
        self.replies: dict[str, dict] = {}
        self.iopub: dict[str, list[dict]] = defaultdict(list)
        self.idle: set[str] = set()
        self.comm_echoes: dict[str, set] = defaultdict(set)
        self.debug_events: list[dict] = []

    def send(self, channel: str, msg_type: str, content: dict | None = None,
             subshell_id: str | None = None) -> str:
        msg = self.session.msg(msg_type, content or {})
        if subshell_id is not None:
            msg["header"]["subshell_id"] = subshell_id
        self.session.send(self.sockets[channel], msg)
        return msg["header"]["msg_id"]

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for input, then file everything readable."""
        for sock, _ in self.poller.poll(max(0, int(timeout * 1000))):
            channel = self._channel_of[sock]
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._file(channel, self.decode(frames))

    def decode(self, frames: list[bytes]) -> dict:
        """Verify the signature and decode, as a frontend must.

        The lean decoder costs ~7 us per message against ~26 us for
        ``Session.deserialize`` (which also converts dates and builds more
        objects); a round trip receives four messages, so it keeps about
        75 us of client time out of what is a measurement of the kernel.
        """
        if self.jupyter_client_decoder:
            return self.session.deserialize(self.session.feed_identities(frames)[1])
        i = frames.index(DELIM)
        signature, *parts = frames[i + 1:i + 6]
        if self._mac is not None:
            mac = self._mac.copy()
            for part in parts:
                mac.update(part)
            if not hmac.compare_digest(signature, mac.hexdigest().encode()):
                raise BenchError("a message with an invalid signature")
        header, parent, metadata, content = map(json.loads, parts)
        return {"header": header, "msg_id": header["msg_id"], "msg_type": header["msg_type"],
                "parent_header": parent, "metadata": metadata, "content": content,
                "buffers": frames[i + 6:]}

    def _file(self, channel: str, msg: dict) -> None:
        parent_id = (msg["parent_header"] or {}).get("msg_id")  # xeus sends null for none
        if channel != "iopub":
            self.replies[parent_id] = msg
            return
        self.iopub[parent_id].append(msg)
        msg_type = msg["msg_type"]
        if msg_type == "status" and msg["content"].get("execution_state") == "idle":
            self.idle.add(parent_id)
        elif msg_type == "debug_event":
            self.debug_events.append(msg["content"])
        elif msg_type == "comm_msg":
            data = msg["content"].get("data")
            if isinstance(data, dict) and "seq" in data:
                self.comm_echoes[msg["content"].get("comm_id")].add(data["seq"])

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.perf_counter() + timeout
        while not condition():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise Timeout(f"timed out after {timeout:g}s waiting for {what}")
            self.pump(remaining)

    def reply(self, msg_id: str, timeout: float, what: str = "reply") -> dict:
        self.wait_until(lambda: msg_id in self.replies, timeout, what)
        return self.replies.pop(msg_id)

    def request(self, channel: str, msg_type: str, content: dict | None = None,
                subshell_id: str | None = None, timeout: float = 10.0) -> dict:
        msg_id = self.send(channel, msg_type, content, subshell_id)
        return self.reply(msg_id, timeout, msg_type.replace("_request", "_reply"))

    def submit(self, code: str, subshell_id: str | None = None,
               store_history: bool = False) -> str:
        return self.send("shell", "execute_request", execute_content(code, store_history),
                         subshell_id)

    def started(self, msg_id: str) -> bool:
        return any(m["msg_type"] == "execute_input" for m in self.iopub.get(msg_id, ()))

    def finish(self, msg_id: str, timeout: float) -> tuple[dict, list[dict]]:
        """Wait for execute_reply AND status: idle of a request; return (reply, its iopub msgs)."""
        self.wait_until(lambda: msg_id in self.replies and msg_id in self.idle, timeout,
                        "execute_reply and status: idle")
        self.idle.discard(msg_id)
        return self.replies.pop(msg_id), self.iopub.pop(msg_id, [])

    def execute(self, code: str, subshell_id: str | None = None, timeout: float = 10.0,
                check: bool = True, store_history: bool = False) -> dict:
        reply, _ = self.finish(self.submit(code, subshell_id, store_history), timeout)
        if check and reply["content"].get("status") != "ok":
            content = reply["content"]
            raise BenchError(f"execute failed: {content.get('ename')}: {content.get('evalue')}")
        return reply

    # -- subshells ---------------------------------------------------------

    def require_subshells(self) -> None:
        if not self.supports_subshells:
            raise NotSupported("'kernel subshells' not in supported_features")

    def create_subshell(self) -> str:
        content = self.request("control", "create_subshell_request")["content"]
        if content.get("status") != "ok":
            raise BenchError(f"create_subshell failed: {content}")
        return content["subshell_id"]

    def delete_subshell(self, subshell_id: str) -> None:
        content = self.request("control", "delete_subshell_request",
                               {"subshell_id": subshell_id})["content"]
        if content.get("status") != "ok":
            raise BenchError(f"delete_subshell failed: {content}")

    def delete_subshells(self, subshell_ids: list[str]) -> None:
        """Best-effort cleanup for ``finally`` blocks: never masks the original error."""
        for subshell_id in subshell_ids:
            try:
                self.request("control", "delete_subshell_request",
                             {"subshell_id": subshell_id}, timeout=3.0)
            except Timeout:
                return  # the kernel is wedged; the runner restarts it
            except Exception:
                pass

    def list_subshells(self) -> list[str]:
        return self.request("control", "list_subshell_request")["content"].get("subshell_id", [])


# --------------------------------------------------------------------------
# Benchmarks. Each function runs ONE round on ONE kernel and returns
# {row_key: sample or [samples]}; rows declare the units.
# --------------------------------------------------------------------------


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def bench_startup(k: Kernel, cfg: Config) -> dict:
    """Launch to the first kernel_info_reply, and to the reply of a first ``pass``
    sent right after it: a kernel that answers kernel_info before its shell is
    ready (ours does) shows here what the first cell still waits for.  Then a
    ``shutdown_request`` on control, timed until the process is gone: what a
    restart waits for before it launches the next kernel."""
    fresh = k.spawn()
    try:
        ready = fresh.start()
        fresh.execute("pass", timeout=30)
        out = {"startup": ready, "startup_execute": time.perf_counter() - fresh.launched_at}
        try:
            out["shutdown_exit"] = fresh.shut_down_and_wait(cfg.timeout)
        except Timeout:  # the startup rows stand; this one says never
            out["shutdown_exit"] = NEVER
        return out
    finally:
        fresh.shutdown(now=True)


def bench_execute_rtt(k: Kernel, cfg: Config) -> dict:
    for _ in range(cfg.rtt_warmup):
        k.execute("pass")
    samples = []
    for _ in range(cfg.rtt_per_round):
        start = time.perf_counter()
        k.execute("pass")
        samples.append(ms_since(start))
    stored = []  # what a notebook or console sends: the cell goes into the history file
    for _ in range(cfg.rtt_per_round):
        start = time.perf_counter()
        k.execute("pass", store_history=True)
        stored.append(ms_since(start))
    return {"execute_rtt": samples, "execute_rtt_history": stored}


GUIS = ("qt", "tk")
#: seconds between two requests of the GUI rows: with a GUI on, ipykernel misses the
#: wake-up of a request sent the moment the previous one is answered (no reply, ever)
GUI_PACE = 0.01


def bench_gui_rtt(k: Kernel, cfg: Config) -> dict:
    """``pass`` round trips while a GUI loop (``%gui qt``, ``%gui tk``) hosts the kernel,
    to set beside the execute row (the same without).  Each GUI on a fresh kernel:
    ipykernel cannot switch from one to another.  Requests are paced (``GUI_PACE``).
    A session in which a request gets no reply within the timeout counts as hung
    (``gui_hangs``) and gives no samples."""
    if not os.environ.get("DISPLAY"):
        raise NotSupported("no $DISPLAY: run under an X server (e.g. Xvfb :N; DISPLAY=:N)")
    out: dict[str, list[float]] = {"gui_hangs": [0]}
    for gui in (None, *GUIS):  # None: the same requests, paced alike, without a GUI
        fresh = k.spawn()
        fresh.start()
        try:
            fresh.execute(f"%gui {gui or ''}")
            # ipykernel's %gui logs an error and succeeds: check that the loop is on
            fresh.execute(f"assert get_ipython().active_eventloop == {gui!r}, 'no {gui} loop'")
            samples = []
            for n in range(cfg.rtt_warmup + cfg.rtt_per_round):
                time.sleep(GUI_PACE)
                start = time.perf_counter()
                fresh.execute("pass")
                if n >= cfg.rtt_warmup:
                    samples.append(ms_since(start))
            out[f"execute_rtt_{gui or 'paced'}"] = samples
        except Timeout as e:
            out["gui_hangs"][0] += 1
            print(f"    [{k.label}] `%gui {gui}`: a request got no reply ({e})", flush=True)
        finally:
            fresh.shutdown(now=True)
    return out


def bench_pipeline(k: Kernel, cfg: Config) -> dict:
    k.execute("pass")
    start = time.perf_counter()
    ids = []
    for i in range(cfg.pipeline_n):
        ids.append(k.submit("pass"))
        if i % 64 == 63:
            k.pump(0)  # keep our receive queues short while sending
    pending = set(ids)
    k.wait_until(lambda: pending <= k.replies.keys(), cfg.timeout + cfg.pipeline_n / 500,
                 f"{cfg.pipeline_n} execute_replies")
    elapsed = time.perf_counter() - start
    bad = [i for i in ids if k.replies[i]["content"].get("status") != "ok"]
    if bad:
        raise BenchError(f"{len(bad)} of {cfg.pipeline_n} pipelined requests did not succeed")
    k.wait_until(lambda: ids[-1] in k.idle, cfg.timeout, "final status: idle")
    return {"pipeline": cfg.pipeline_n / elapsed}


def bench_subshell_create(k: Kernel, cfg: Config) -> dict:
    k.require_subshells()
    k.delete_subshell(k.create_subshell())  # warm-up
    created, deleted = [], []
    for _ in range(cfg.create_pairs):
        start = time.perf_counter()
        subshell_id = k.create_subshell()
        created.append(ms_since(start))
        start = time.perf_counter()
        k.delete_subshell(subshell_id)
        deleted.append(ms_since(start))
    return {"subshell_create": created, "subshell_delete": deleted}


def bench_footprint(k: Kernel, cfg: Config) -> dict:
    """RSS and thread count with 0, 10, 100 live subshells and after deleting them."""
    k.require_subshells()

    def snapshot(tag: str) -> dict:
        time.sleep(0.2)  # let threads start/exit
        status = proc_status(k.pid)
        rss_mib = int(status["VmRSS"].split()[0]) / 1024
        return {f"rss_{tag}": rss_mib, f"threads_{tag}": int(status["Threads"])}

    k.execute("pass")
    out = snapshot("0")
    subshells: list[str] = []
    try:
        for count in cfg.footprint_counts:
            while len(subshells) < count:
                subshells.append(k.create_subshell())
                # Use each subshell once, so lazily started subshells are counted too.
                k.execute("pass", subshell_id=subshells[-1])
            out.update(snapshot(str(count)))
    except BaseException:
        k.delete_subshells(subshells)
        raise
    for subshell_id in subshells:
        k.delete_subshell(subshell_id)
    remaining = k.list_subshells()
    if remaining:
        raise BenchError(f"{len(remaining)} subshells still listed after deleting all")
    out.update(snapshot("deleted"))
    return out


def sample_while_parent_busy(k: Kernel, parent_code: str, probe: Callable[[], float],
                             cfg: Config) -> list[float]:
    """Run ``parent_code`` on the main shell and call ``probe`` back to back while it runs.

    A probe during which the parent finished is discarded; if that was the first
    one (the kernel answers only once the parent is done), the result is ``never``.
    """
    parent = k.submit(parent_code)
    k.wait_until(lambda: k.started(parent), cfg.timeout, "parent cell to start")
    samples = []
    while parent not in k.replies:
        sample = probe()
        if parent in k.replies:
            break
        samples.append(sample)
    k.finish(parent, cfg.timeout + cfg.busy_seconds)
    return samples or [NEVER]


def sleep_cell(seconds: float) -> str:
    return f"import time\ntime.sleep({seconds})"


def spin_cell(seconds: float) -> str:
    return f"import time\nt_end = time.time() + {seconds}\nwhile time.time() < t_end:\n    pass"


def _subshell_execute_while(k: Kernel, cfg: Config, parent_code: str, key: str) -> dict:
    k.require_subshells()
    subshell_id = k.create_subshell()
    try:
        k.execute("pass", subshell_id=subshell_id)  # warm-up

        def probe() -> float:
            start = time.perf_counter()
            k.execute("pass", subshell_id=subshell_id, timeout=cfg.timeout)
            return ms_since(start)

        return {key: sample_while_parent_busy(k, parent_code, probe, cfg)}
    finally:
        k.delete_subshells([subshell_id])


def bench_subshell_during_sleep(k: Kernel, cfg: Config) -> dict:
    return _subshell_execute_while(k, cfg, sleep_cell(cfg.busy_seconds), "subshell_rtt_sleep")


def bench_subshell_during_spin(k: Kernel, cfg: Config) -> dict:
    return _subshell_execute_while(k, cfg, spin_cell(cfg.busy_seconds), "subshell_rtt_spin")


def bench_control(k: Kernel, cfg: Config) -> dict:
    """control kernel_info round trips: idle, then while the parent runs a CPU loop.

    A kernel that answers control only once the parent's cell ended gets ``never``
    for the busy row.
    """

    sent: list[str] = []
    replies: list[dict] = []

    def probe() -> float:
        start = time.perf_counter()
        msg_id = k.send("control", "kernel_info_request")
        replies.append(k.reply(msg_id, cfg.timeout + cfg.busy_seconds, "kernel_info_reply"))
        elapsed = ms_since(start)
        sent.append(msg_id)
        return elapsed

    for _ in range(cfg.rtt_warmup):
        probe()
    del sent[:], replies[:]
    idle = [probe() for _ in range(cfg.rtt_per_round)]
    why = kernel_info_shortfall(k, sent, replies)
    del sent[:], replies[:]
    busy = sample_while_parent_busy(k, spin_cell(cfg.busy_seconds), probe, cfg)
    why_busy = kernel_info_shortfall(k, sent, replies) if busy != [NEVER] else ""
    return {"control_rtt": Short(idle, why) if why else idle,
            "control_rtt_spin": Short(busy, why_busy) if why_busy else busy}


#: what every kernel_info_reply carries (messaging spec 5.x, "Kernel info")
KERNEL_INFO_FIELDS = ("status", "protocol_version", "implementation", "implementation_version",
                      "language_info", "banner")


def kernel_info_shortfall(k: Kernel, msg_ids: list[str], replies: list[dict]) -> str:
    """What the answers to these kernel_info requests lack, or "" if nothing.

    Each must be a full kernel_info_reply, between a ``status: busy`` and a
    ``status: idle`` on iopub with the request as their parent (the spec asks that
    of every request, on shell and control alike).  A kernel that publishes the
    statuses but loses a few while the client lags behind (a lossy iopub under
    load) did the work this row times: only statuses missing for most requests
    count.  The iopub messages of the requests are forgotten here."""
    missing = sorted({field for r in replies for field in KERNEL_INFO_FIELDS
                      if field not in r["content"]})
    try:  # the statuses of the last request come last
        k.wait_until(lambda: msg_ids[-1] in k.idle, 1.0, "status: idle")
    except Timeout:
        pass
    without = 0
    for msg_id in msg_ids:
        states = [m["content"].get("execution_state") for m in k.iopub.pop(msg_id, ())
                  if m["msg_type"] == "status"]
        k.idle.discard(msg_id)
        if states[:1] != ["busy"] or states[-1:] != ["idle"]:
            without += 1
    why = []
    if missing:
        why.append(f"the reply's content has no {', '.join(missing)}")
    if without * 2 > len(msg_ids):
        why.append(f"{without} of {len(msg_ids)} requests had no status busy ... idle on iopub")
    return "; ".join(why)


def bench_concurrent(k: Kernel, cfg: Config) -> dict:
    """N subshells each run time.sleep(1) at once: wall time until every execute_reply."""
    k.require_subshells()
    out = {}
    for n in cfg.concurrent_ns:
        subshells = [k.create_subshell() for _ in range(n)]
        try:
            for subshell_id in subshells:
                k.execute("import time", subshell_id=subshell_id)
            start = time.perf_counter()
            ids = {k.submit("time.sleep(1)", subshell_id=s) for s in subshells}
            k.wait_until(lambda: ids <= k.replies.keys(), cfg.timeout + n,
                         f"{n} execute_replies")
            out[f"concurrent_{n}"] = time.perf_counter() - start
            for msg_id in ids:
                k.finish(msg_id, cfg.timeout)
        finally:
            k.delete_subshells(subshells)
    return out


COMM_SETUP = """\
import comm as _bench_comm

def _bench_echo_target(c, msg):
    c.on_msg(lambda m: c.send(m["content"]["data"]))

_bench_comm.get_comm_manager().register_target("bench_echo", _bench_echo_target)
"""

_comm_seq = itertools.count()


def bench_comm(k: Kernel, cfg: Config) -> dict:
    """comm_msg echo round trip on a subshell while the parent sleeps, then spins."""
    k.require_subshells()
    try:
        k.execute(COMM_SETUP)
    except BenchError as e:
        raise NotSupported(f"cannot register comm target: {e}") from None
    subshell_id = k.create_subshell()
    comm_id = uuid.uuid4().hex
    try:
        k.send("shell", "comm_open", {"comm_id": comm_id, "target_name": "bench_echo", "data": {}},
               subshell_id=subshell_id)

        def probe(timeout: float = cfg.timeout) -> float:
            seq = next(_comm_seq)
            start = time.perf_counter()
            k.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"seq": seq}},
                   subshell_id=subshell_id)
            k.wait_until(lambda: seq in k.comm_echoes[comm_id], timeout, "comm_msg echo")
            return ms_since(start)

        try:
            probe(timeout=5.0)  # warm-up; also tells whether comms work at all
        except Timeout:
            raise NotSupported("no comm_msg echo on iopub (kernel idle)") from None
        sleeping = sample_while_parent_busy(k, sleep_cell(cfg.busy_seconds), probe, cfg)
        spinning = sample_while_parent_busy(k, spin_cell(cfg.busy_seconds), probe, cfg)
        k.send("shell", "comm_close", {"comm_id": comm_id, "data": {}}, subshell_id=subshell_id)
        return {"comm_rtt": sleeping, "comm_rtt_spin": spinning}
    finally:
        k.delete_subshells([subshell_id])


def await_cell(seconds: float) -> str:
    return f"import asyncio\nawait asyncio.sleep({seconds})"


def bench_comm_await(k: Kernel, cfg: Config) -> dict:
    """comm_msg echo on the parent (no subshell) while the parent runs an ``await`` cell:
    the loop is free while the cell awaits, so the echo need not wait for the cell."""
    try:
        k.execute(COMM_SETUP)
    except BenchError as e:
        raise NotSupported(f"cannot register comm target: {e}") from None
    comm_id = uuid.uuid4().hex
    k.send("shell", "comm_open", {"comm_id": comm_id, "target_name": "bench_echo", "data": {}})

    def probe(timeout: float = cfg.timeout) -> float:
        seq = next(_comm_seq)
        start = time.perf_counter()
        k.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"seq": seq}})
        k.wait_until(lambda: seq in k.comm_echoes[comm_id], timeout, "comm_msg echo")
        return ms_since(start)

    try:
        probe(timeout=5.0)
    except Timeout:
        raise NotSupported("no comm_msg echo on iopub (kernel idle)") from None
    try:
        awaiting = sample_while_parent_busy(k, await_cell(cfg.busy_seconds),
                                            lambda: probe(cfg.busy_seconds + cfg.timeout), cfg)
    finally:
        k.send("shell", "comm_close", {"comm_id": comm_id, "data": {}})
    return {"comm_rtt_await": awaiting}


def bench_print(k: Kernel, cfg: Config) -> dict:
    n = cfg.print_lines
    start = time.perf_counter()
    reply, iopub = k.finish(k.submit(f"for i in range({n}):\n    print(i)"), cfg.print_timeout)
    elapsed = time.perf_counter() - start
    if reply["content"].get("status") != "ok":
        raise BenchError(f"cell failed: {reply['content'].get('ename')}")
    text = "".join(m["content"]["text"] for m in iopub
                   if m["msg_type"] == "stream" and m["content"].get("name") == "stdout")
    expected = "".join(f"{i}\n" for i in range(n))
    if text != expected:
        got = text.splitlines()
        first_bad = next((i for i, line in enumerate(got) if line != str(i)), len(got))
        raise BenchError(f"output mismatch after {elapsed:.2f}s: {len(got)} of {n} lines, "
                         f"first wrong/missing line at index {first_bad}")
    return {"print": elapsed}


def bench_print_concurrent(k: Kernel, cfg: Config) -> dict:
    """The parent and 4 subshells print at once (a fifth of the lines each): time until
    the last idle; every stream message must carry the parent of the cell that printed."""
    k.require_subshells()
    n = cfg.print_lines // 5
    subshells = [k.create_subshell() for _ in range(4)]
    try:
        for subshell_id in subshells:
            k.execute("pass", subshell_id=subshell_id)
        start = time.perf_counter()
        ids = {tag: k.submit(f"for i in range({n}):\n    print('{tag}', i)", subshell_id=sid)
               for tag, sid in zip("PABCD", [None, *subshells])}
        finished = {tag: k.finish(msg_id, cfg.print_timeout) for tag, msg_id in ids.items()}
        elapsed = time.perf_counter() - start
    finally:
        k.delete_subshells(subshells)
    for tag, (reply, iopub) in finished.items():
        text = "".join(m["content"]["text"] for m in iopub
                       if m["msg_type"] == "stream" and m["content"].get("name") == "stdout")
        if reply["content"].get("status") != "ok" or text != "".join(
                f"{tag} {i}\n" for i in range(n)):
            raise BenchError(f"cell {tag}: status {reply['content'].get('status')}, "
                             f"{len(text.splitlines())} of {n} lines attributed to it")
    return {"print_concurrent": elapsed}


FROZEN_SUBSCRIBER = """\
import os, signal, sys, zmq
sock = zmq.Context().socket(zmq.SUB)
sock.connect(sys.argv[1])
sock.subscribe(b"")
sock.poll(3000)  # the welcome, from a kernel that sends one
print("subscribed", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


def bench_print_frozen(k: Kernel, cfg: Config) -> dict:
    """The print row while a second iopub subscriber (another process) has stopped reading."""
    info = k.km.get_connection_info()
    frozen = subprocess.Popen(
        [sys.executable, "-c", FROZEN_SUBSCRIBER, f"tcp://{info['ip']}:{info['iopub_port']}"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        frozen.stdout.readline()
        time.sleep(0.2)  # let it stop
        return {"print_frozen": bench_print(k, cfg)["print"]}
    finally:
        frozen.kill()
        frozen.wait(5)


def bench_print_late(k: Kernel, cfg: Config) -> dict:
    """The same, on a kernel that has by now created and deleted many subshells."""
    return {"print_late": bench_print(k, cfg)["print"]}


INTERRUPT_CELLS = {
    "interrupt_sleep": "import time\ntime.sleep(30)",
    "interrupt_spin": "while True:\n    pass",
    "interrupt_async": "import asyncio\nawait asyncio.sleep(30)",
}
INTERRUPT_SUBSHELL_CELLS = {
    "interrupt_subshell_sleep": "import time\ntime.sleep(30)",
    "interrupt_subshell_spin": "while True:\n    pass",
    "interrupt_subshell_async": "import asyncio\nawait asyncio.sleep(30)",
}
TRIO_CELL = "import trio\nawait trio.sleep(30)"


def time_interrupt(k: Kernel, cfg: Config, key: str, code: str,
                   subshell_id: str | None = None) -> float:
    """Seconds from SIGINT (the kernelspec's interrupt mode) to the cell's reply."""
    sent = time.perf_counter()
    msg_id = k.submit(code, subshell_id)
    k.wait_until(lambda: k.started(msg_id), cfg.timeout, "cell to start")
    time.sleep(max(0.0, cfg.interrupt_delay - (time.perf_counter() - sent)))
    start = time.perf_counter()
    k.km.interrupt_kernel()
    try:
        k.reply(msg_id, cfg.interrupt_timeout, "execute_reply after interrupt")
        elapsed = time.perf_counter() - start
        k.wait_until(lambda: msg_id in k.idle, cfg.timeout, "status: idle")
    except Timeout:
        elapsed = NEVER
        print(f"    [{k.label}] {key}: no reply within {cfg.interrupt_timeout:g}s; restarting",
              flush=True)
        k.restart()
    k.reset()
    return elapsed


def bench_interrupt(k: Kernel, cfg: Config) -> dict:
    out: dict = {key: time_interrupt(k, cfg, key, code) for key, code in INTERRUPT_CELLS.items()}
    for key, code in INTERRUPT_SUBSHELL_CELLS.items():
        if not k.supports_subshells:
            out[key] = NotSupported("'kernel subshells' not in supported_features")
            continue
        subshell_id = k.create_subshell()
        out[key] = time_interrupt(k, cfg, key, code, subshell_id)
        if out[key] != NEVER:
            k.delete_subshells([subshell_id])  # after a restart it is gone anyway
    return out


def bench_interrupt_trio(k: Kernel, cfg: Config) -> dict:
    """``await trio.sleep(30)``: on our kernel's trio backend, on ipykernel with
    IPython's ``%autoawait trio`` (which runs each cell in ``trio.run``)."""
    variant = TRIO_VARIANT.get(k.name)
    if variant is None:
        if k.execute("import trio", check=False)["content"].get("status") != "ok":
            raise NotSupported("trio is not installed beside this kernel")
        k.execute("%autoawait trio")
        try:
            return {"interrupt_trio": time_interrupt(k, cfg, "interrupt_trio", TRIO_CELL)}
        finally:
            k.execute("%autoawait asyncio", timeout=cfg.timeout)
    trio_kernel = Kernel(variant, f"{k.label}-trio", k.spec_manager, k.workdir)
    trio_kernel.start()
    # a new kernel formats a first traceback in its first quiet second (IPython loads
    # its formatter lazily); the other rows run on kernels that are long past it
    time.sleep(2.0)
    try:
        return {"interrupt_trio": time_interrupt(trio_kernel, cfg, "interrupt_trio", TRIO_CELL)}
    finally:
        trio_kernel.shutdown(now=True)


DEBUG_CELL = "def _bench_add(a):\n    b = a + 1\n    return b\n\n_bench_add(1)\n"
FIB_CELL = ("import time as _t\ndef _fib(n): return n if n < 2 else _fib(n - 1) + _fib(n - 2)\n"
            "_s = _t.perf_counter(); _fib(20); print((_t.perf_counter() - _s) * 1000)")
DEBUG_INITIALIZE = {"clientID": "bench", "adapterID": "", "pathFormat": "path",
                    "linesStartAt1": True, "columnsStartAt1": True}
_debug_seq = itertools.count(1)


def debug_request(k: Kernel, command: str, arguments: dict | None = None,
                  timeout: float = 10.0) -> dict:
    content = {"type": "request", "seq": next(_debug_seq), "command": command,
               "arguments": arguments or {}}
    reply = k.request("control", "debug_request", content, timeout=timeout)["content"]
    if not reply.get("success"):
        raise NotSupported(f"debug_request {command}: {reply.get('message', reply)}")
    return reply


def _remote_ports(pid: int) -> set[int]:
    """Remote TCP ports of the process's connected sockets."""
    return {c.raddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr}


def _debug_adapters(kernel_pid: int) -> list[int]:
    """debugpy adapter processes serving this kernel (they detach from it): started
    with ``--for-server`` and a ``--port`` the kernel is connected to."""
    ports, found = _remote_ports(kernel_pid), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "--for-server" in args and any("debugpy" in a for a in args):
            adapter_ports = {int(args[i + 1]) for i, a in enumerate(args[:-1])
                             if a in ("--for-server", "--port") and args[i + 1].isdigit()}
            if adapter_ports & ports:
                found.append(int(entry))
    return found


def tree_rss_mib(pid: int) -> float:
    """RSS of a kernel and its children, and of a debug adapter process serving it."""
    total, todo = 0, [pid, *_debug_adapters(pid)]
    while todo:
        p = todo.pop()
        try:
            total += int(proc_status(p)["VmRSS"].split()[0])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, KeyError):
            continue
    return total / 1024


def fib_ms(k: Kernel, cfg: Config) -> float:
    """The fastest of three runs of fib(20), timed in the cell."""
    best = NEVER
    for _ in range(3):
        _, messages = k.finish(k.submit(FIB_CELL), cfg.timeout * 5)
        out = "".join(m["content"].get("text", "") for m in messages
                      if m["msg_type"] == "stream")
        best = min(best, float(out.split()[-1]))
    return best


def pass_rtts(k: Kernel, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        k.execute("pass")
        samples.append(ms_since(start))
    return samples


def bench_debugger(k: Kernel, cfg: Config) -> dict:
    """A first debug session on a fresh kernel: what starting it costs, a stop at a
    breakpoint, and what user code pays while it is attached and after it is off."""
    fresh = k.spawn()
    fresh.start()
    try:
        time.sleep(1.0)  # settled, as the long-lived kernels are
        out = {"debug_fib_before": fib_ms(fresh, cfg)}
        rss = tree_rss_mib(fresh.pid)
        start = time.perf_counter()
        debug_request(fresh, "initialize", DEBUG_INITIALIZE, timeout=30)
        debug_request(fresh, "attach", timeout=30)
        out["debug_start"] = ms_since(start)
        time.sleep(0.5)
        out["debug_rss"] = tree_rss_mib(fresh.pid) - rss
        path = debug_request(fresh, "dumpCell", {"code": DEBUG_CELL})["body"]["sourcePath"]
        debug_request(fresh, "setBreakpoints", {"source": {"path": path},
                                                "breakpoints": [{"line": 2}]})
        debug_request(fresh, "configurationDone")
        stops = []
        for _ in range(cfg.debug_stops):
            fresh.debug_events.clear()
            start = time.perf_counter()
            msg_id = fresh.submit(DEBUG_CELL)
            stopped = lambda: [e for e in fresh.debug_events if e.get("event") == "stopped"]  # noqa: E731
            fresh.wait_until(lambda: bool(stopped()), cfg.timeout, "a stopped debug_event")
            debug_request(fresh, "continue", {"threadId": stopped()[0]["body"]["threadId"]})
            fresh.finish(msg_id, cfg.timeout)
            stops.append(ms_since(start))
        out["debug_stop"] = stops
        out["debug_fib_attached"] = fib_ms(fresh, cfg)
        out["debug_pass_attached"] = pass_rtts(fresh, cfg.rtt_per_round)
        debug_request(fresh, "disconnect", {"restart": False, "terminateDebuggee": False})
        fresh.execute("pass")  # ours drops a thread's tracing before its next cell
        out["debug_fib_after"] = fib_ms(fresh, cfg)
        out["debug_pass_after"] = pass_rtts(fresh, cfg.rtt_per_round)
        return out
    finally:
        fresh.shutdown(now=True)


# --------------------------------------------------------------------------
# Plan: benchmarks, their rows and rounds
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    unit: str
    better: str = "lower"  # or "higher"
    bounds: str = ""  # a floor row: the key of the kernel row it is a floor of


@dataclass(frozen=True)
class Bench:
    name: str
    func: Callable[[Kernel, Config], dict]
    rows: tuple[Row, ...]
    rounds: int
    #: measured once per round, after the kernels: what the machine costs by itself
    floor: Callable[[Config], dict] | None = None
    floor_rows: tuple[Row, ...] = ()


#: seconds the idle floor sleeps before each ``run_cell``: about how long a kernel's
#: main thread sleeps between two of the execute row's requests
FLOOR_IDLE = 0.001


def floor_execute(cfg: Config) -> dict:
    hot, idle = floors.run_cell(cfg.rtt_warmup, cfg.rtt_per_round, (0.0, FLOOR_IDLE))
    return {"floor_zmq_rtt": floors.zmq_rtt(cfg.rtt_warmup, cfg.rtt_per_round),
            "floor_run_cell": hot, "floor_run_cell_idle": idle}


def floor_startup(cfg: Config) -> dict:
    return {"floor_python": floors.python_startup(),
            "floor_ipython": floors.ipython_startup()}


def plan(cfg: Config) -> list[Bench]:
    busy = f"{cfg.busy_seconds:g}s"
    footprint_tags = ["0", *map(str, cfg.footprint_counts), "deleted"]

    def subshells(tag: str) -> str:
        return "after delete all" if tag == "deleted" else f"{tag} subshells"

    benches = [
        Bench("startup", bench_startup,
              (Row("startup", "startup: launch -> kernel_info_reply", "s"),
               Row("startup_execute", "startup: launch -> first `pass` reply", "s"),
               Row("shutdown_exit", "shutdown_request -> process gone", "ms")),
              cfg.startups,
              floor_startup,
              (Row("floor_python", "python -c pass: launch -> exit", "s", bounds="startup"),
               Row("floor_ipython", "import zmq, IPython; InteractiveShell(): launch -> exit",
                   "s", bounds="startup"))),
        Bench("execute", bench_execute_rtt,
              (Row("execute_rtt", "execute `pass` rtt (reply+idle)", "ms"),
               Row("execute_rtt_history", "the same with `store_history` on, as notebooks send",
                   "ms")), cfg.rtt_rounds,
              floor_execute,
              (Row("floor_zmq_rtt", "zmq DEALER/ROUTER echo rtt, tcp loopback", "ms",
                   bounds="execute_rtt"),
               Row("floor_run_cell", "bare InteractiveShell.run_cell('pass')", "ms",
                   bounds="execute_rtt"),
               Row("floor_run_cell_idle", f"the same, each after {FLOOR_IDLE * 1000:g} ms asleep",
                   "ms", bounds="execute_rtt"))),
        Bench("execute-gui", bench_gui_rtt,
              (Row("execute_rtt_paced", f"execute `pass` rtt, {GUI_PACE * 1000:g} ms apart", "ms"),
               *(Row(f"execute_rtt_{gui}", f"the same with `%gui {gui}` on", "ms")
                 for gui in GUIS),
               Row("gui_hangs", f"sessions left hanging (of {len(GUIS) + 1})", "sessions")),
              max(1, cfg.rtt_rounds // 2)),
        Bench("pipeline", bench_pipeline,
              (Row("pipeline", f"pipelined {cfg.pipeline_n} x `pass`", "msg/s", "higher"),),
              cfg.pipeline_rounds),
        Bench("print", bench_print,
              (Row("print", f"{cfg.print_lines} x print(i) -> idle, verified", "s"),),
              cfg.print_rounds),
        Bench("subshell-create", bench_subshell_create,
              (Row("subshell_create", "create_subshell rtt", "ms"),
               Row("subshell_delete", "delete_subshell rtt", "ms")), cfg.create_rounds),
        Bench("footprint", bench_footprint,
              tuple(Row(f"rss_{t}", f"RSS, {subshells(t)}", "MiB") for t in footprint_tags)
              + tuple(Row(f"threads_{t}", f"threads, {subshells(t)}", "threads")
                      for t in footprint_tags), 1),
        Bench("subshell-sleep", bench_subshell_during_sleep,
              (Row("subshell_rtt_sleep", f"subshell `pass` rtt, parent sleep({busy})", "ms"),),
              cfg.busy_rounds),
        Bench("subshell-spin", bench_subshell_during_spin,
              (Row("subshell_rtt_spin", f"subshell `pass` rtt, parent CPU loop {busy}", "ms"),),
              cfg.busy_rounds),
        Bench("control", bench_control,
              (Row("control_rtt", "control kernel_info rtt, idle", "ms"),
               Row("control_rtt_spin", f"control kernel_info rtt, parent CPU loop {busy}",
                   "ms")), cfg.busy_rounds),
        Bench("concurrent", bench_concurrent,
              tuple(Row(f"concurrent_{n}", f"{n:>2} subshells x sleep(1): wall", "s")
                    for n in cfg.concurrent_ns), cfg.concurrent_rounds),
        Bench("comm", bench_comm,
              (Row("comm_rtt", f"comm_msg echo on subshell, parent sleep({busy})", "ms"),
               Row("comm_rtt_spin", f"comm_msg echo on subshell, parent CPU loop {busy}", "ms")),
              cfg.busy_rounds),
        Bench("print-frozen", bench_print_frozen,
              (Row("print_frozen",
                   f"{cfg.print_lines} x print(i), a 2nd subscriber frozen", "s"),),
              cfg.print_variant_rounds),
        Bench("comm-await", bench_comm_await,
              (Row("comm_rtt_await", f"comm_msg echo on the parent, parent in await ({busy})",
                   "ms"),), cfg.busy_rounds),
        Bench("print-concurrent", bench_print_concurrent,
              (Row("print_concurrent",
                   f"parent + 4 subshells x {cfg.print_lines // 5} print(i) at once, verified",
                   "s"),), cfg.print_variant_rounds),
        Bench("print-late", bench_print_late,
              (Row("print_late", f"{cfg.print_lines} x print(i), after subshell rows", "s"),),
              cfg.print_late_rounds),
        Bench("interrupt", bench_interrupt,
              (Row("interrupt_sleep", "interrupt: time.sleep(30)", "s"),
               Row("interrupt_spin", "interrupt: while True: pass", "s"),
               Row("interrupt_async", "interrupt: await asyncio.sleep(30)", "s"),
               Row("interrupt_subshell_sleep", "interrupt: time.sleep(30) in a subshell", "s"),
               Row("interrupt_subshell_spin", "interrupt: while True: pass in a subshell", "s"),
               Row("interrupt_subshell_async", "interrupt: await asyncio.sleep(30) in a subshell",
                   "s")),
              cfg.interrupt_rounds),
        Bench("interrupt-trio", bench_interrupt_trio,
              (Row("interrupt_trio", "interrupt: await trio.sleep(30)", "s"),),
              cfg.interrupt_rounds),
        Bench("debugger", bench_debugger,
              (Row("debug_start", "debugger: first initialize + attach", "ms"),
               Row("debug_rss", "debugger: RSS it adds (with adapter process)", "MiB"),
               Row("debug_stop", "debugger: cell to breakpoint, continue, reply", "ms"),
               Row("debug_fib_before", "fib(20) in a cell, before any debugging", "ms"),
               Row("debug_fib_attached", "fib(20) in a cell, debugger attached", "ms"),
               Row("debug_fib_after", "fib(20) in a cell, after the debugger is off", "ms"),
               Row("debug_pass_attached", "execute `pass` rtt, debugger attached", "ms"),
               Row("debug_pass_after", "execute `pass` rtt, after the debugger is off", "ms")),
              cfg.debug_rounds),
    ]
    return [b for b in benches if b.rounds > 0]


# --------------------------------------------------------------------------
# Statistics and running
# --------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    if sorted_values[hi] == NEVER:
        return NEVER if pos > lo or sorted_values[lo] == NEVER else sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples: list[float]) -> dict:
    values = sorted(samples)
    summary = {
        "n": len(values),
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "min": values[0],
        "max": values[-1],
    }
    if len(values) <= 20:
        summary["samples"] = samples
    return summary


def where(exc: BaseException) -> str:
    """file:line of the innermost frame of this script in a traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__]
    frame = frames[-1] if frames else traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def run_bench(bench: Bench, kernels: list[Kernel], cfg: Config, dead: dict[str, str]) -> dict:
    """Run all rounds of one benchmark, alternating kernels; return {row_key: {label: result}}.

    A bench function returns samples per row key, or a ``NotSupported`` (not raised)
    for a row the kernel cannot do while it does the others.

    The bench's floor, if any, is measured once per round after the kernels, under the
    label ``floor``.
    """
    samples: dict[str, dict[str, list[float]]] = {k.label: defaultdict(list) for k in kernels}
    not_applicable: dict[str, dict[str, str]] = defaultdict(dict)  # label -> {row key: why}
    short: dict[str, dict[str, str]] = defaultdict(dict)  # label -> {row key: what lacked}
    floor_samples: dict[str, list[float]] = defaultdict(list)
    floor_error = ""
    outcome: dict[str, dict] = {}  # label -> n/a or error result, once one happened
    for k in kernels:
        if k.label in dead and bench.name != "startup":
            outcome[k.label] = {"status": "error", "error": dead[k.label]}

    for round_no in range(bench.rounds):
        for k in kernels:
            if k.label in outcome:
                continue
            try:
                for key, value in bench.func(k, cfg).items():
                    if isinstance(value, NotSupported):  # this row only
                        not_applicable[k.label][key] = str(value)
                    elif isinstance(value, Short):
                        short[k.label][key] = value.why
                        samples[k.label][key].extend(value.samples)
                    else:
                        samples[k.label][key].extend(value if isinstance(value, list) else [value])
            except NotSupported as e:
                outcome[k.label] = {"status": "n/a", "reason": str(e)}
                print(f"    [{k.label}] n/a: {e}", flush=True)
            except Exception as e:  # keep going: one broken row must not end the run
                outcome[k.label] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
                print(f"    [{k.label}] ERROR in round {round_no + 1} ({where(e)}): "
                      f"{type(e).__name__}: {e}", flush=True)
                if bench.name != "startup":
                    try:
                        k.recover()
                    except Exception as e2:
                        dead[k.label] = f"kernel unrecoverable: {e2}"
                        print(f"    [{k.label}] could not recover: {e2}", flush=True)
            finally:
                if k.label not in dead and bench.name != "startup":
                    k.reset()
        if bench.floor is not None and not floor_error:
            try:
                for key, value in bench.floor(cfg).items():
                    floor_samples[key].extend(value if isinstance(value, list) else [value])
            except Exception as e:
                floor_error = f"{type(e).__name__}: {e}"
                print(f"    [floor] ERROR: {floor_error}", flush=True)

    results: dict[str, dict] = {}
    for row in bench.rows:
        results[row.key] = {}
        for k in kernels:
            if k.label in outcome:
                results[row.key][k.label] = outcome[k.label]
            elif samples[k.label].get(row.key):
                results[row.key][k.label] = {"status": "ok", **summarize(samples[k.label][row.key])}
                if row.key in short[k.label]:
                    results[row.key][k.label]["short"] = short[k.label][row.key]
            elif row.key in not_applicable[k.label]:
                results[row.key][k.label] = {"status": "n/a",
                                             "reason": not_applicable[k.label][row.key]}
            else:
                results[row.key][k.label] = {"status": "error", "error": "no samples"}
    for row in bench.floor_rows:
        if floor_samples.get(row.key):
            results[row.key] = {"floor": {"status": "ok", **summarize(floor_samples[row.key])}}
        else:
            results[row.key] = {"floor": {"status": "error", "error": floor_error or "no samples"}}
    return results


def _usable(result: dict | None) -> bool:
    return bool(result) and result.get("status") == "ok" and result["median"] != NEVER


def _comparable(result: dict | None) -> bool:
    """A figure that may be the best of its row: measured, and of full answers."""
    return _usable(result) and "short" not in result


def ratios(row_results: dict, labels: list[str], better: str) -> dict:
    """Ours (the first label) against the best of the others and against ipykernel.

    ``vs_best`` and ``vs_ipykernel`` are ratios of medians (None where a figure is
    missing or ``never``); ``best`` is the label of the best other kernel.
    """
    out = {"best": None, "vs_best": None, "vs_ipykernel": None}
    if len(labels) < 2:
        return out
    ours = row_results.get(labels[0])
    others = {label: row_results[label] for label in labels[1:]
              if _comparable(row_results.get(label))}
    if others:
        pick = max if better == "higher" else min
        out["best"] = pick(others, key=lambda label: others[label]["median"])
    if not _usable(ours):
        return out
    ipykernel = LABELS[IPYKERNEL]
    for key, label in (("vs_best", out["best"]), ("vs_ipykernel", ipykernel)):
        if label in others and others[label]["median"] != 0:
            out[key] = ours["median"] / others[label]["median"]
    return out


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def fmt_number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == NEVER:
        return "never"
    magnitude = abs(value)
    if value == int(value) and magnitude >= 1:
        return str(int(value))
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_cell(result: dict | None, field: str) -> str:
    if not result:
        return "-"
    if result["status"] != "ok":
        return result["status"]
    if field != "median" and result["n"] < 10:
        return "-"  # percentiles of a handful of samples mean little
    return fmt_number(result[field]) + ("*" if "short" in result else "")


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(columns: list[str], table: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [columns, *table]) for i in range(len(columns))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    header = line(columns)
    print("\n" + header + "\n" + "-" * len(header))
    for cells in table:
        print(line(cells))


def print_table(rows: list[dict], labels: list[str]) -> None:
    """Medians of every kernel side by side with ours / best other and ours / ipykernel;
    then p90 and p99; then the floors next to the rows they bound."""
    kernel_rows = [r for r in rows if not r.get("bounds")]
    floor_rows = [r for r in rows if r.get("bounds")]
    compare = len(labels) > 1
    has_ipykernel = LABELS[IPYKERNEL] in labels[1:]
    print()
    print("ours = " + labels[0] + ("; others: " + ", ".join(labels[1:]) if compare else ""))

    columns = ["row", "unit", *labels]
    if compare:
        columns += ["ours/best", "best"] + (["ours/ipyk"] if has_ipykernel else [])
    table = []
    for row in kernel_rows:
        cells = [row["title"], row["unit"]]
        cells += [fmt_cell(row["results"].get(label), "median") for label in labels]
        if compare:
            r = row["ratios"]
            cells += [fmt_ratio(r["vs_best"]), r["best"] or "-"]
            if has_ipykernel:
                cells.append(fmt_ratio(r["vs_ipykernel"]))
        table.append(cells)
    print("\nmedians")
    render(columns, table)

    spread = [r for r in kernel_rows
              if any(res.get("status") == "ok" and res["n"] >= 10
                     for res in r["results"].values())]
    if spread:
        print("\np90 / p99 (rows with >= 10 samples)")
        render(["row", "unit", *labels],
               [[r["title"], r["unit"], *(
                   f"{fmt_cell(r['results'].get(label), 'p90')} / "
                   f"{fmt_cell(r['results'].get(label), 'p99')}"
                   if r["results"].get(label, {}).get("status") == "ok"
                   else fmt_cell(r["results"].get(label), "p90")
                   for label in labels)] for r in spread])

    if floor_rows:
        by_key = {r["key"]: r for r in kernel_rows}
        print("\nfloors: what this machine costs without a kernel, in this run (medians)")
        table = []
        for row in floor_rows:
            floor = row["results"]["floor"]
            bounded = by_key.get(row["bounds"], {}).get("results", {}).get(labels[0])
            ours = fmt_cell(bounded, "median") if bounded else "-"
            table.append([row["title"], row["unit"], fmt_cell(floor, "median"),
                          f"{by_key.get(row['bounds'], {}).get('title', row['bounds'])}", ours])
        render(["floor", "unit", "floor", "bounds the row", "ours"], table)

    # Rows that were not measured, grouped by kernel and reason.
    notes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        for label, result in row["results"].items():
            if result["status"] != "ok":
                detail = (result.get("reason") or result.get("error", "")).splitlines()[0]
                notes[label, f"{result['status']}: {detail}"].append(row["title"].strip())
    if notes:
        print("\nnot measured:")
        for (label, why), titles in notes.items():
            print(f"  [{label}] {why}\n      rows: {'; '.join(titles)}")
    shorts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        for label, result in row["results"].items():
            if result.get("short"):
                shorts[label, result["short"]].append(row["title"].strip())
    if shorts:
        print("\n* answers short of the protocol (shown, never counted as the best):")
        for (label, why), titles in shorts.items():
            print(f"  [{label}] {why}\n      rows: {'; '.join(titles)}")
    print("\nmed = median; never = no reply within the timeout", end="")
    if compare:
        print("; ours/best = ours / the best other kernel's median (msg/s: higher is better, "
              "otherwise lower is better)")
    else:
        print()


def jsonable(value):
    """Round floats; replace infinities (interrupts that never returned) by 'never'."""
    if isinstance(value, float):
        return "never" if value == NEVER else float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def spec_name(name: str) -> str:
    """A kernelspec directory name for ``name`` (``subshell@/some/dir`` included)."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name.lower())


def compile_tree(root: Path) -> None:
    """Byte-compile our package in ``root``, as an install does: with
    PYTHONDONTWRITEBYTECODE set (some machines, this one) a tree without
    ``__pycache__`` would compile every module at every kernel start (~0.1 s)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "subshell_kernel")],
                   check=True, stdout=subprocess.DEVNULL)


def make_spec_manager(names: list[str], directory: Path) -> KernelSpecManager:
    """A KernelSpecManager that sees only our temporary kernelspecs (plus installed ones
    for names we do not know how to launch). Peers are installed on first use."""
    kernels_dir = directory / "kernels"
    names = [*names, *(TRIO_VARIANT[n] for n in names if n in TRIO_VARIANT)]
    known = KERNEL_ARGV.keys() | peers.PEERS.keys()
    for name in {n for n in names if n in known or n.startswith(OTHER_TREE)}:
        if name in peers.PEERS:
            spec = peers.kernelspec(name)
        else:
            compile_tree(Path(name.partition("@")[2] or REPO_ROOT))
            spec = {
                "argv": KERNEL_ARGV[name.partition("@")[0]],
                "display_name": f"{name} (benchmark)",
                "language": "python",
                "interrupt_mode": "signal",
            }
        spec_dir = kernels_dir / spec_name(name)
        spec_dir.mkdir(parents=True, exist_ok=True)
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    if all(n in known or n.startswith(OTHER_TREE) for n in names):
        return KernelSpecManager(kernel_dirs=[str(kernels_dir)], ensure_native_kernel=False)
    return KernelSpecManager(kernel_dirs=[str(kernels_dir), *KernelSpecManager().kernel_dirs])


def spec_argv(k: Kernel) -> list[str] | None:
    try:
        return k.spec_manager.get_kernel_spec(spec_name(k.name)).argv
    except Exception:
        return None


def versions(name: str) -> dict[str, str]:
    """What each kernel is, as installed: printed, and kept in the JSON."""
    if name in peers.PEERS:
        return peers.installed_versions(name)
    import importlib.metadata as metadata

    packages = {"python3": ("ipykernel", "ipython", "pyzmq"),
                "subshell": ("ipython", "pyzmq", "anyio")}.get(name, ())
    out = {}
    for package in packages:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def unique_labels(names: list[str]) -> list[str]:
    labels = []
    for name in names:
        if name.startswith(OTHER_TREE):
            name = "ours@" + Path(name.partition("@")[2]).name
        label, n = LABELS.get(name, name), 1
        while label in labels:
            n += 1
            label = f"{LABELS.get(name, name)}#{n}"
        labels.append(label)
    return labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about 3 minutes)")
    parser.add_argument("--kernels", default=",".join(DEFAULT_KERNELS),
                        help="comma-separated kernelspec names, ours first (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json",
                        help="JSON results file (default: benchmarks/results.json)")
    parser.add_argument("--client", choices=("lean", "jupyter_client"), default="lean",
                        help="how the client decodes what it receives (default: %(default)s)")
    parser.add_argument("--only", default="",
                        help="comma-separated benchmark names to run (default: all); one of "
                             + ", ".join(b.name for b in plan(DEFAULT)))
    args = parser.parse_args(argv)
    args.kernel_names = [n.strip() for n in args.kernels.split(",") if n.strip()]
    if not args.kernel_names:
        parser.error("--kernels takes at least one kernelspec name")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Kernel.jupyter_client_decoder = args.client == "jupyter_client"
    cfg = QUICK if args.quick else DEFAULT
    benches = plan(cfg)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        unknown = wanted - {b.name for b in plan(DEFAULT)}
        if unknown:
            print(f"unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        benches = [b for b in benches if b.name in wanted]

    labels = unique_labels(args.kernel_names)
    began = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="kernel-bench-") as tmp:
        workdir = Path(tmp)
        spec_manager = make_spec_manager(args.kernel_names, workdir)
        kernels = [Kernel(name, label, spec_manager, workdir)
                   for name, label in zip(args.kernel_names, labels)]
        installed = {k.label: versions(k.name) for k in kernels}
        dead: dict[str, str] = {}  # label -> why its long-lived kernel is unusable
        try:
            for k in kernels:
                try:
                    k.start()
                    pins = ", ".join(f"{p} {v}" for p, v in installed[k.label].items())
                    print(f"{k.label}: {k.implementation} ({pins}), pid {k.pid}, "
                          f"subshells: {'yes' if k.supports_subshells else 'no'}", flush=True)
                except Exception as e:
                    dead[k.label] = f"kernel failed to start: {e}"
                    print(f"{k.label}: FAILED TO START: {e}", flush=True)
            # let the kernels finish what they do once after start (ours warms up its
            # traceback formatter when quiet for 0.3 s), as they have in real use
            time.sleep(1.0)
            for bench in benches:
                print(f"== {bench.name} ({bench.rounds} round{'s' * (bench.rounds > 1)})",
                      flush=True)
                bench_start = time.perf_counter()
                results = run_bench(bench, kernels, cfg, dead)
                print(f"   {time.perf_counter() - bench_start:.1f} s", flush=True)
                for row in (*bench.rows, *bench.floor_rows):
                    rows.append({**row.__dict__, "results": results[row.key],
                                 "ratios": ratios(results[row.key], labels, row.better)})
        except KeyboardInterrupt:
            print("\ninterrupted; reporting what was measured", file=sys.stderr)
        finally:
            for k in kernels:
                try:
                    k.shutdown()
                except Exception as e:
                    print(f"{k.label}: shutdown failed: {e}", file=sys.stderr)

    print_table(rows, labels)
    report = {
        "meta": {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "quick": args.quick,
            "config": cfg.__dict__,
            "duration_s": round(time.perf_counter() - began, 1),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "jupyter_client": jupyter_client.__version__,
            "pyzmq": zmq.__version__,
            "ours": labels[0],
            "client_decoder": args.client,
        },
        "kernels": [
            {"label": k.label, "kernelspec": k.name, "argv": spec_argv(k),
             "versions": installed[k.label], "kernel_info": k.info}
            for k in kernels
        ],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(jsonable(report), indent=1) + "\n")
    print(f"\nwrote {args.out} ({report['meta']['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
