"""Startup: kernel_info is answered while IPython still loads (``boot.py``).

The kernel is launched through a wrapper that makes ``import IPython`` take
``DELAY`` seconds longer and records when it finished; the test then knows
whether a reply came before IPython was there.  Requests sent during the
loading window must all be answered once it ends, in order.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time

import pytest
from jupyter_client import KernelManager

from .conftest import _TMP

DELAY = 3.0

WRAPPER = textwrap.dedent(f"""
    import importlib.abc, importlib.util, runpy, sys, time

    class SlowLoader(importlib.abc.Loader):
        # the delay is in exec_module, under IPython's module lock only (a finder
        # runs under the global import lock, which would stall every thread's imports)
        def __init__(self, loader):
            self.loader = loader
        def create_module(self, spec):
            return self.loader.create_module(spec)
        def exec_module(self, module):
            time.sleep({DELAY})
            self.loader.exec_module(module)

    class SlowIPython(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "IPython":
                sys.meta_path.remove(self)
                spec = importlib.util.find_spec(name)
                spec.loader = SlowLoader(spec.loader)
                return spec

    sys.meta_path.insert(0, SlowIPython())
    sys.argv[0] = "subshell_kernel"
    runpy.run_module("subshell_kernel", run_name="__main__", alter_sys=True)
""")


@pytest.fixture
def slow_ipython_kernel():
    spec_dir = _TMP / "jupyter" / "kernels" / "subshell-slow-ipython"
    spec_dir.mkdir(parents=True, exist_ok=True)
    wrapper = spec_dir / "slow_ipython.py"
    wrapper.write_text(WRAPPER)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(wrapper), "-f", "{connection_file}"],
        "display_name": "subshell, IPython slow to import", "language": "python",
    }))
    km = KernelManager(kernel_name="subshell-slow-ipython")
    launched = time.monotonic()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    yield launched, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def _reply(channel, msg_id: str, timeout: float) -> tuple[dict, float]:
    deadline = time.monotonic() + timeout
    while True:
        msg = channel.get_msg(timeout=max(0.01, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg, time.monotonic()


@pytest.mark.timeout(60)
def test_kernel_info_is_answered_before_ipython_has_loaded(slow_ipython_kernel):
    launched, kc = slow_ipython_kernel
    shell_info = kc.kernel_info()
    reply, shell_at = _reply(kc.shell_channel, shell_info, 30)
    assert reply["content"]["status"] == "ok"
    control_info = kc.session.msg("kernel_info_request", {})
    kc.control_channel.send(control_info)
    control_reply, control_at = _reply(kc.control_channel, control_info["header"]["msg_id"], 30)
    # the iopub thread runs from the boot on: the subscription is welcomed (JEP 65)
    welcome_at = None
    deadline = time.monotonic() + 30
    while welcome_at is None and time.monotonic() < deadline:
        msg = kc.iopub_channel.get_msg(timeout=30)
        if msg["msg_type"] == "iopub_welcome":
            welcome_at = time.monotonic()
    assert welcome_at is not None and welcome_at - launched < DELAY - 1.0, \
        "iopub_welcome waited for IPython"
    # sent while IPython loads: answered once it has, in order
    executed = kc.execute("import time, IPython; n = 1", silent=False)
    created = kc.session.msg("create_subshell_request", {})
    kc.control_channel.send(created)
    second = kc.execute("n + 1", silent=False)

    exec_reply, exec_at = _reply(kc.shell_channel, executed, 30)
    second_reply, _ = _reply(kc.shell_channel, second, 30)
    created_reply, _ = _reply(kc.control_channel, created["header"]["msg_id"], 30)
    assert exec_reply["content"]["status"] == "ok"
    count = exec_reply["content"]["execution_count"]
    assert second_reply["content"]["execution_count"] == count + 1
    assert created_reply["content"]["status"] == "ok"
    # IPython took DELAY s longer to import: a reply that waited for it comes after that
    assert exec_at - launched > DELAY
    assert shell_at - launched < DELAY - 1.0, "shell kernel_info waited for IPython"
    assert control_at - launched < DELAY - 1.0, "control kernel_info waited for IPython"
    # the early reply is the kernel's whole reply
    later = kc.kernel_info()
    later_reply, _ = _reply(kc.shell_channel, later, 30)
    assert later_reply["content"] == reply["content"] == control_reply["content"]
