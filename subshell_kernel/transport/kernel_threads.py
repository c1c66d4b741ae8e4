"""The threads the kernel starts for its own work: daemon, named, never traced.

Once a debug session starts, debugpy traces every thread of the process, and
a thread it stops at a breakpoint stops running Python code.  The kernel's
own threads (shell router, control, iopub, heartbeat, the watchdogs and
timers, the debugger's reader) must keep answering while user code is
stopped, and must never stop at a breakpoint themselves, so each one carries
the two marks pydevd (debugpy's engine) honours:

- ``pydev_do_not_trace``: never install the trace function on this thread;
- ``is_pydev_daemon_thread``: leave it out of the ``threads`` a debugger
  lists, as pydevd's own threads are.

Threads that run user code (the subshells, and threads user code starts)
carry no mark: breakpoints stop them.  The marks are plain attributes: they
cost nothing when no debugger is ever used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def mark_untraced(thread: threading.Thread) -> threading.Thread:
    """Mark a kernel thread (before or after it starts) so no debugger traces it."""
    thread.pydev_do_not_trace = True
    thread.is_pydev_daemon_thread = True
    return thread


def kernel_thread(target: Callable[..., Any], name: str, args: tuple = ()) -> threading.Thread:
    """A daemon thread of the kernel's own, marked untraced (not started)."""
    return mark_untraced(threading.Thread(target=target, name=name, args=args, daemon=True))


def kernel_timer(seconds: float, function: Callable[..., Any], args: tuple = ()) -> threading.Timer:
    """A daemon ``threading.Timer`` of the kernel's own, marked untraced (not started)."""
    timer = threading.Timer(seconds, function, args)
    timer.daemon = True
    mark_untraced(timer)
    return timer
