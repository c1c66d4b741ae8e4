"""pdb in the kernel: IPython's debugger, which an interrupt ends.

``pdb.set_trace()``, ``breakpoint()``, ``pdb.Pdb`` (and so ``pdb.post_mortem``),
``%debug`` and ``%pdb`` all get ``KernelPdb``, IPython's debugger (the
``ipdb>`` prompt), as under ipykernel.  It reads its commands with
``input()``, so from the frontend, over stdin, in the parent subshell and in
a child alike (``adapter.stdin``).  ``hooks`` patches ``pdb`` when it is
first imported (``adapter.imports``), never at startup.

Invariants:
- An interrupt while the debugger runs (waiting for a command, or running
  one) quits it and ends the cell with ``KeyboardInterrupt``.  The standard
  ``pdb`` catches the interrupt and prompts again, so a frontend's Stop could
  never end a debugging session; IPython's interruptible debugger quits but
  lets the cell run on after the breakpoint (a ``set_trace`` in a loop stops
  again at once).  Stop here means what it means elsewhere: the cell ends,
  and queued cells are aborted as after any error.
- The kernel's own frames around a cell carry ``__debuggerskip__`` (IPython's
  debugger steps over them), so ``pdb.set_trace()`` as a cell's last line
  stops in that cell, not in the display hook that shows its value.
"""

from __future__ import annotations

import functools
import sys


@functools.cache
def kernel_pdb_class() -> type:
    """``KernelPdb``, built on first use: importing IPython's debugger imports ``pdb``."""
    from IPython.core.debugger import InterruptiblePdb

    class KernelPdb(InterruptiblePdb):
        """IPython's debugger; an interrupt quits it and ends the cell (module docstring)."""

        _interrupted = False

        def _cmdloop(self):
            try:
                self.allow_kbdint = True
                # InterruptiblePdb.cmdloop turns tracing off and quits on KeyboardInterrupt
                self.cmdloop()
            except KeyboardInterrupt:
                self._interrupted = True
            finally:
                self.allow_kbdint = False

        def interaction(self, frame, tb_or_exc):
            super().interaction(frame, tb_or_exc)
            if self._interrupted:
                self._interrupted = False
                raise KeyboardInterrupt("interrupted in the debugger")

    KernelPdb.__module__, KernelPdb.__qualname__ = __name__, "KernelPdb"
    return KernelPdb


def set_trace(frame=None, header=None) -> None:
    """``pdb.set_trace`` (and so ``breakpoint()``) in the kernel."""
    debugger = kernel_pdb_class()()
    if header is not None:
        debugger.message(header)
    debugger.set_trace(frame or sys._getframe().f_back)
