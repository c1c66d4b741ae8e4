"""The kernel's settings: ``--SubshellKernel.<name>=...`` or a config file.

They live apart from the kernel (``kernel.py``) because the kernel needs them
before IPython is imported: ``boot`` binds the sockets and answers
``kernel_info`` with them while IPython loads (``app.py``).
"""

from __future__ import annotations

from traitlets import Bool, Enum, Float, Int, Unicode
from traitlets.config import LoggingConfigurable


class SubshellKernel(LoggingConfigurable):
    """The configurable settings of the kernel (README.md lists them)."""

    backend = Enum(
        ["asyncio", "trio"], default_value="asyncio", config=True,
        help="The AnyIO backend of every subshell's event loop (and of top-level await).",
    )
    flush_interval = Float(
        0.05, config=True, help="Seconds after a first write before buffered output is sent."
    )
    use_uvloop = Bool(
        True, config=True,
        help="With the asyncio backend, run the parent subshell's loop on uvloop when it is "
        "installed: a request then costs ~10% less CPU (290 against 320 us for `pass`).  "
        "Child subshells keep asyncio's own loop: a uvloop loop holds ~0.3 MB (a 256 KB "
        "read buffer), three times a subshell's whole budget.",
    )
    native_control = Bool(
        True, config=True,
        help="Use the C part where it is built.  The control socket is read in C: "
        "kernel_info is then answered without the GIL (0.53 against 1.37 ms while the parent "
        "runs a CPU loop; within 2 ms, rather than once it returns, while a C call holds the "
        "GIL); every other control request is handled in Python either way.  Shell, stdin and "
        "iopub send and receive a whole message in one C call (a `pass` request: 87 against "
        "110 us in sends, 13% less CPU on the main thread).",
    )
    ip = Unicode("127.0.0.1", config=True, help="Address to bind when not in the connection file.")
    switch_interval = Float(
        0.0001, config=True,
        help="sys.setswitchinterval: how long a thread may hold the GIL while others wait. "
        "While the parent runs CPU-bound code, a subshell request loses the GIL to it "
        "several times (each zmq call releases it) and waits this long each time: a "
        "subshell round trip took 46 ms at Python's 5 ms default, 13 ms at 1 ms, 1.9 ms "
        "at 0.2 ms and 1.3 ms at 0.1 ms.  Two CPU-bound threads ran no slower at 0.1 ms "
        "(within 0.5%, median of 5 runs).",
    )
    iopub_subscriber_budget = Int(
        64 << 20, config=True,
        help="Bytes of iopub output the kernel may hold for one frontend that stops reading "
        "(a frozen tab, a laptop asleep); once its queue is full, the kernel's output waits "
        "for it for up to a second, then that frontend alone misses output until it reads "
        "again.  A frontend that keeps reading, however slowly, gets everything: the kernel "
        "waits for it.  64 MiB is a queue of 1024 of the largest stream messages (libzmq's "
        "default, which ipykernel keeps, is 1000 messages, which it drops when full).",
    )
    capture_fd_output = Bool(
        True, config=True,
        help="Forward what C code and subprocesses write to file descriptors 1 and 2.",
    )
    profile_dir = Unicode(
        "", config=True,
        help="IPython profile directory, which holds the history database (as "
        "ipykernel's --profile-dir); default: the 'default' profile under IPYTHONDIR.",
    )
    connection_file = Unicode("", help="The connection file, if the kernel was given one.")
