"""Tk as the host of the parent's loop: ``Tk.mainloop()`` on the main thread.

A withdrawn root window is created once and kept (it becomes tkinter's
default root, so ``tkinter.Label(text=...)`` without a master works, as in
ipykernel).  The loop runs inside ``Misc.mainloop`` so that matplotlib sees
Tk running; every Tk interpreter of the thread (matplotlib makes one per
figure window) is served by the same Tcl notifier, so their timers fire too.
With a threaded Tcl (the usual build) the loop waits in the notifier without
the GIL and does not poll.
"""

from __future__ import annotations

from typing import Any

from .base import Callback, GuiUnavailable, guarded, require_display


class TkToolkit:
    name = "tk"

    def __init__(self):
        try:
            import tkinter
        except ImportError as e:
            raise GuiUnavailable(f"tk event loop: tkinter is not available in this Python ({e}); "
                                 "install Python's Tk support (Debian: python3-tk)") from e
        require_display("%gui tk")
        self._tkinter = tkinter
        self.root: Any = None
        self._handlers: dict[int, Callback] = {}
        self._timer_callback: Callback = lambda: None
        self._after: str | None = None
        self._new_root()

    def _new_root(self) -> None:
        try:
            self.root = self._tkinter.Tk()
        except self._tkinter.TclError as e:
            raise GuiUnavailable(f"tk event loop: {e}") from e
        self.root.withdraw()
        self._fire = self.root.register(guarded(self._on_timer))  # once: after() would re-register
        for fd, callback in self._handlers.items():
            self._watch(fd, callback)

    def _watch(self, fd: int, callback: Callback) -> None:
        handler = guarded(callback)
        self.root.tk.createfilehandler(fd, self._tkinter.READABLE, lambda _f, _m: handler())

    def watch(self, fd: int, callback: Callback) -> None:
        self._handlers[fd] = callback
        self._watch(fd, callback)

    def unwatch(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self.root.tk.deletefilehandler(fd)

    def _on_timer(self) -> None:
        self._after = None
        self._timer_callback()

    def set_timer(self, ms: int | None, callback: Callback) -> None:
        if self._after is not None:
            self.root.tk.call("after", "cancel", self._after)
            self._after = None
        if ms is not None:
            self._timer_callback = callback
            self._after = self.root.tk.call("after", ms, self._fire)

    def run(self) -> None:
        if not self._alive():  # user code destroyed our root: mainloop would return at once
            self._new_root()
        self.root.mainloop()

    def quit(self) -> None:
        self.root.quit()

    def close(self) -> None:
        self.set_timer(None, self._timer_callback)
        for fd in list(self._handlers):
            self.unwatch(fd)
        if self._alive():
            self.root.destroy()

    def _alive(self) -> bool:
        try:
            return bool(self.root.winfo_exists())
        except self._tkinter.TclError:
            return False
