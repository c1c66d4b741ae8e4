"""GUI toolkits that can host the parent subshell's loop on the main thread.

``make_toolkit(gui)`` creates the toolkit that ``%gui`` names.  Its library
(PySide6, PyQt6, PyQt5, PySide2, tkinter) is imported only then, inside the
toolkit's constructor: a kernel that never enables a GUI never imports one.
"""

from __future__ import annotations

from .base import GuiUnavailable, Toolkit
from .qt import QT_VERSIONS, QtToolkit
from .tk import TkToolkit

#: the names ``%gui`` and ``%matplotlib`` accept, as IPython spells them
SUPPORTED = (*QT_VERSIONS, "tk")


def make_toolkit(gui: str) -> Toolkit:
    """Create the toolkit ``gui`` names; ``GuiUnavailable`` if it cannot run here."""
    if gui in QT_VERSIONS:
        return QtToolkit(gui)
    if gui == "tk":
        return TkToolkit()
    raise GuiUnavailable(
        f"GUI event loop {gui!r} is not supported by this kernel "
        f"(supported: {', '.join(SUPPORTED)})"
    )


__all__ = ["SUPPORTED", "GuiUnavailable", "Toolkit", "make_toolkit"]
