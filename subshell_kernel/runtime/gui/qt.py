"""Qt as the host of the parent's loop: ``QApplication.exec()`` on the main thread.

The binding is chosen as matplotlib chooses it, so that ``%matplotlib qt``
and ``%gui qt`` agree: ``$QT_API`` if set, else a binding already imported,
else the first installed of PyQt6, PySide6, PyQt5, PySide2 (``qt6`` and
``qt5`` restrict the choice to that major version).  One QApplication serves
the process: created once, kept when the GUI is turned off (Qt cannot make a
second one), with ``quitOnLastWindowClosed`` off, so closing the last window
does not end the loop that hosts the kernel.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

from .base import Callback, GuiUnavailable, guarded, require_display

#: %gui name -> the Qt major versions it accepts
QT_VERSIONS = {"qt": (6, 5), "qt6": (6,), "qt5": (5,)}
_BINDINGS = {"PyQt6": 6, "PySide6": 6, "PyQt5": 5, "PySide2": 5}
_QT_API = {"pyqt6": "PyQt6", "pyside6": "PySide6", "pyqt5": "PyQt5", "pyside2": "PySide2"}


def choose_binding(gui: str) -> str:
    """The name of the Qt binding ``%gui <gui>`` uses; ``GuiUnavailable`` if none fits."""
    versions = QT_VERSIONS[gui]
    wanted = os.environ.get("QT_API", "").lower()
    if wanted:
        name = _QT_API.get(wanted)
        if name is None:
            raise GuiUnavailable(f"{gui} event loop: $QT_API={wanted!r} names no Qt binding "
                                 f"(one of {', '.join(_QT_API)})")
        candidates = [name]
    else:
        loaded = [name for name in _BINDINGS if f"{name}.QtCore" in sys.modules]
        candidates = loaded or list(_BINDINGS)
    fitting = [name for name in candidates if _BINDINGS[name] in versions]
    for name in fitting:
        if importlib.util.find_spec(name) is not None:
            return name
    qt = " or ".join(f"Qt {v}" for v in versions)
    if loaded := [n for n in _BINDINGS if f"{n}.QtCore" in sys.modules]:
        raise GuiUnavailable(f"{gui} event loop: {loaded[0]} is already loaded; this process "
                             f"cannot switch to {qt}")
    raise GuiUnavailable(
        f"{gui} event loop: no {qt} binding is installed (tried {', '.join(fitting)}); "
        "install one, e.g. `pip install PySide6`"
    )


class QtToolkit:
    def __init__(self, gui: str):
        self.name = gui
        binding = choose_binding(gui)
        if _needs_display():
            require_display(f"%gui {gui}")  # Qt would abort the process without one
        try:
            self._core = importlib.import_module(f"{binding}.QtCore")
            widgets = importlib.import_module(f"{binding}.QtWidgets")
        except ImportError as e:
            raise GuiUnavailable(f"{gui} event loop: {binding} is installed but fails to load: "
                                 f"{e}") from e
        core = self._core
        self.app: Any = widgets.QApplication.instance() or widgets.QApplication(
            [sys.argv[0] or "subshell_kernel"])
        self.app.setQuitOnLastWindowClosed(False)
        self._read = _enum(core.QSocketNotifier, "Type", "Read")
        self._notifiers: dict[int, Any] = {}
        self._timer = core.QTimer()
        self._timer.setSingleShot(True)
        self._timer.setTimerType(_enum(core.Qt, "TimerType", "PreciseTimer"))
        self._timer_callback: Callback = lambda: None
        self._timer.timeout.connect(guarded(lambda: self._timer_callback()))
        self._exec = getattr(self.app, "exec", None) or self.app.exec_

    def watch(self, fd: int, callback: Callback) -> None:
        notifier = self._core.QSocketNotifier(fd, self._read)
        notifier.activated.connect(guarded(callback))
        self._notifiers[fd] = notifier

    def unwatch(self, fd: int) -> None:
        notifier = self._notifiers.pop(fd, None)
        if notifier is not None:
            notifier.setEnabled(False)
            notifier.deleteLater()

    def set_timer(self, ms: int | None, callback: Callback) -> None:
        if ms is None:
            self._timer.stop()
            return
        self._timer_callback = callback
        self._timer.start(ms)

    def run(self) -> None:
        self._exec()

    def quit(self) -> None:
        self.app.exit(0)

    def close(self) -> None:
        self._timer.stop()
        self.app.closeAllWindows()


def _needs_display() -> bool:
    """Does Qt's platform plugin need a window system here?  An explicit non-window
    platform (``QT_QPA_PLATFORM=offscreen``, ``minimal``, ``vnc``...) does not."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    return not platform or platform.startswith(("xcb", "wayland"))


def _enum(owner: Any, scope: str, name: str) -> Any:
    """``owner.scope.name`` (Qt 6 and PyQt5's scoped enums) or ``owner.name`` (PySide2)."""
    scoped = getattr(owner, scope, None)
    return getattr(scoped, name) if scoped is not None and hasattr(scoped, name) else getattr(
        owner, name)
