"""What every GUI toolkit shares: the interface, its error, guarded callbacks, the display check.

A toolkit is what ``runtime.mainloop.MainLoop`` needs of a GUI event loop:
watch a file descriptor, one timer, run until told to quit, close its
windows.  Both backends' guests (``runtime.guests``) are written against this
small interface, so Qt and Tk each implement it once and nothing else knows
them.

Invariants:
- Every callback a toolkit runs is wrapped (``guarded``): an exception never
  reaches Qt (PyQt aborts the process on one) or Tk (an exception in a file
  handler ends ``mainloop``).
- Before a toolkit creates its application, it checks that it can: a missing
  library or display raises ``GuiUnavailable`` with a message that says
  which, never a process abort (Qt without a display calls ``qFatal``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

Callback = Callable[[], None]


class GuiUnavailable(Exception):
    """A GUI toolkit cannot be used: not installed, no display, unknown name."""


class Toolkit(Protocol):
    """A GUI event loop on the main thread, as the parent's loop sees it."""

    name: str

    def watch(self, fd: int, callback: Callback) -> None:
        """Call ``callback`` (on the main thread, inside ``run``) whenever ``fd`` is readable."""

    def unwatch(self, fd: int) -> None: ...

    def set_timer(self, ms: int | None, callback: Callback) -> None:
        """Call ``callback`` once, ``ms`` milliseconds from now; re-arms the one timer.
        ``None`` cancels it."""

    def run(self) -> None:
        """Run the GUI loop until ``quit`` (may return early; the caller loops)."""

    def quit(self) -> None: ...

    def close(self) -> None:
        """Close every window (shutdown)."""


def guarded(callback: Callback) -> Callback:
    """``callback`` wrapped so that nothing it raises reaches the toolkit."""

    def call(*_args) -> None:
        try:
            callback()
        except BaseException:  # noqa: BLE001  (a KeyboardInterrupt too: it must not end the loop)
            log.exception("error in a callback of the GUI loop")

    return call


def require_display(toolkit: str) -> None:
    """Raise ``GuiUnavailable`` unless a window system can be reached.

    On Linux and the BSDs that is an X server that ``XOpenDisplay`` can open
    (``$DISPLAY``) or a Wayland socket (``$WAYLAND_DISPLAY``).  macOS and
    Windows always have one.
    """
    if sys.platform in ("darwin", "win32"):
        return
    wayland = os.environ.get("WAYLAND_DISPLAY")
    if wayland:
        socket_path = os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), wayland)
        if os.path.exists(socket_path):  # (join keeps an absolute WAYLAND_DISPLAY as it is)
            return
    display = os.environ.get("DISPLAY")
    if not display:
        raise GuiUnavailable(
            f"{toolkit}: no display ($DISPLAY is not set): run the kernel where a window "
            "system is reachable (an X server, Wayland, or a virtual one such as Xvfb)"
        )
    if not _x_display_opens(display):
        raise GuiUnavailable(
            f"{toolkit}: cannot open the display {display!r} ($DISPLAY): no X server answers there"
        )


def _x_display_opens(display: str) -> bool:
    """Can libX11 open ``display``?  True if libX11 is absent (then let the toolkit say)."""
    import ctypes.util  # the standard library's; only when a toolkit is enabled

    name = ctypes.util.find_library("X11")
    if name is None:
        return True
    try:
        x11 = ctypes.CDLL(name)
    except OSError:
        return True
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    handle = x11.XOpenDisplay(display.encode())
    if not handle:
        return False
    x11.XCloseDisplay(handle)
    return True
