"""The main thread's loop: the parent subshell's AnyIO loop, natively or inside a GUI.

Without a GUI the parent's loop runs as ``anyio.run`` always did (uvloop by
default on asyncio): a kernel that never enables a GUI pays nothing for this
module.  ``%gui qt`` (``switch``) does not change the loop under the running
cell: it marks a switch, and once the request that asked has been answered
the parent's ``serve`` returns and ``run`` starts it again on a new loop, the
guest of the toolkit (``runtime.guests``), until the next switch.  A switch
therefore costs the loop, not the kernel: the parent subshell keeps its
inbox (``Subshell`` hands it over, nothing delivered is lost or refused), its
state and its thread; tasks a cell left running on the old loop are
cancelled with it.

While a GUI hosts the loop, the waker's socket is the signal wake-up fd
(installed by ``hooks`` through the callable the kernel hands in), so an
interrupt reaches the main thread at once however long Qt or Tk would wait.

Invariants:
- Only the main thread calls ``switch``, ``run`` and ``close``; toolkits and
  their windows belong to the main thread.
- ``switch`` creates the toolkit first: if it cannot run (not installed, no
  display) it raises ``GuiUnavailable`` and nothing changes.
- ``serve`` is resumed on the next loop only when it says so (returns True);
  a serve that ended (shutdown) is never restarted, whatever is pending.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from .guests import Waker, run_asyncio, run_trio
from .gui import GuiUnavailable, Toolkit, make_toolkit

log = logging.getLogger(__name__)

Serve = Callable[..., Awaitable[bool]]
_UNCHANGED = object()


class MainLoop:
    """Runs the parent subshell's loop on the main thread, switchable between requests.

    ``wake_on_signals(fd)`` makes signals write to ``fd`` and returns the undo
    (``hooks.InterpreterHooks.wake_on_signals``).
    """

    def __init__(
        self,
        backend: str,
        native_options: Mapping[str, Any],
        wake_on_signals: Callable[[int], Callable[[], None]],
        make: Callable[[str], Toolkit] = make_toolkit,
    ):
        self.backend = backend
        self.native_options = dict(native_options)
        self._wake_on_signals = wake_on_signals
        self._make = make
        #: the GUI that hosts the loop now (None: the loop runs natively)
        self.gui: str | None = None
        self._toolkits: dict[str, Toolkit] = {}
        self._pending: Any = _UNCHANGED
        self._waker: Waker | None = None

    # -- from a cell on the parent subshell (main thread) -------------------------------
    def prepare(self, gui: str) -> None:
        """Create ``gui``'s toolkit (its application, e.g. the QApplication) if not yet
        done; ``GuiUnavailable`` if it cannot run here."""
        if sys.platform == "win32":  # no pollable selector, no Tcl file handlers
            raise GuiUnavailable("GUI event loops are supported on Linux and macOS")
        if gui not in self._toolkits:
            self._toolkits[gui] = self._make(gui)

    def switch(self, gui: str | None) -> None:
        """Host the parent's loop in ``gui`` (None: natively) from the next request on.

        Raises ``GuiUnavailable`` (and changes nothing) if ``gui`` cannot run here.
        """
        if gui is not None:
            self.prepare(gui)
        self._pending = _UNCHANGED if gui == self.gui else gui

    @property
    def switch_pending(self) -> bool:
        return self._pending is not _UNCHANGED

    # -- the main thread's life ---------------------------------------------------------
    def run(self, serve: Serve, *args: Any) -> None:
        """Run ``serve(*args)`` on the current loop, and again on the next one for as
        long as it returns True (it returns to let a switch happen)."""
        while True:
            if self.gui is None:
                again = anyio.run(serve, *args, backend=self.backend,
                                  backend_options=self.native_options)
            else:
                again = self._run_hosted(self._toolkits[self.gui], serve, args)
            if not again:
                return
            if self._pending is not _UNCHANGED:
                log.info("the parent subshell's loop: %s -> %s", self.gui or "native",
                         self._pending or "native")
                self.gui, self._pending = self._pending, _UNCHANGED

    def _run_hosted(self, toolkit: Toolkit, serve: Serve, args: tuple) -> bool:
        if self._waker is None:
            self._waker = Waker()
        waker = self._waker
        toolkit.watch(waker.fileno(), waker.on_readable)
        undo_wakeup = self._wake_on_signals(waker.signal_fd())
        try:
            if self.backend == "trio":
                return run_trio(toolkit, waker, serve, *args)
            return run_asyncio(toolkit, waker, serve, *args)
        finally:
            undo_wakeup()
            toolkit.unwatch(waker.fileno())

    def close(self) -> None:
        """Shutdown (main thread, after ``run``): close every window, drop the toolkits."""
        for gui, toolkit in self._toolkits.items():
            try:
                toolkit.close()
            except Exception:  # noqa: BLE001  (shutdown goes on)
                log.exception("closing the %s windows failed", gui)
        self._toolkits.clear()
        if self._waker is not None:
            self._waker.close()
            self._waker = None

