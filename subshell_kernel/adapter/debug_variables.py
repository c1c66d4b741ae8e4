"""The user namespace as DAP variables, while no thread is stopped.

JupyterLab's variables panel shows the kernel's globals between cells
(``inspectVariables``), and expands them (``variables`` with a reference it
was given).  No frame is suspended then, so pydevd cannot answer; the kernel
presents the namespace with pydevd's own variable machinery instead (a frame
stand-in whose globals and locals are the user namespace), so values,
types and children look exactly as they do at a breakpoint.  References
handed out here are Python object ids, which never collide with pydevd's
small DAP numbers: a ``variables`` request with a reference this explorer
knows is answered here, any other goes to pydevd.

Also here: which names the panel hides (IPython's and the kernel's own), and
the rich (MIME) rendering of a variable.
"""

from __future__ import annotations

import re
from typing import Any

from .cells import cell_file

HIDDEN = frozenset({
    "__name__", "__doc__", "__package__", "__loader__", "__spec__", "__annotations__",
    "__builtins__", "__builtin__", "__display__", "get_ipython", "debugpy", "exit", "quit",
    "In", "Out", "_oh", "_dh", "_", "__", "___",
})
#: IPython's history names: _1, _i, _ii, _iii, _i3, _ih
_HIDDEN_PATTERN = re.compile(r"_(\d+|i{1,3}|i\d+|ih)")
#: the groups pydevd adds; they are not variables of the user but must be accepted
GROUPS = frozenset({"special variables", "function variables", "class variables",
                    "protected variables"})


def shown(name: str) -> bool:
    """Does the variables panel show a variable of this name?"""
    return name not in HIDDEN and not _HIDDEN_PATTERN.fullmatch(name)


class _Code:
    def __init__(self, filename: str, name: str) -> None:
        self.co_filename, self.co_name = filename, name


class _Frame:
    """What pydevd reads of a frame, over a namespace."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.f_code = _Code(cell_file("sys._getframe()"), "<module>")
        self.f_globals = self.f_locals = namespace
        self.f_back = None
        self.f_lineno = 0


class _Presentation:
    """pydevd's debugger settings, as much of them as its variable code reads."""

    def __init__(self) -> None:
        from _pydevd_bundle.pydevd_api import PyDevdAPI

        self.variable_presentation = PyDevdAPI.VariablePresentation()


class NamespaceVariables:
    """One snapshot of a namespace's variables (built for each ``inspectVariables``)."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        from _pydevd_bundle import pydevd_frame_utils
        from _pydevd_bundle.pydevd_suspended_frames import SuspendedFramesManager, _FramesTracker

        self._manager = SuspendedFramesManager()
        self._tracker = _FramesTracker(self._manager, _Presentation())
        self._frame = _Frame(namespace)
        self._tracker.track("namespace", pydevd_frame_utils.create_frames_list_from_frame(
            self._frame))

    def knows(self, reference: Any) -> bool:
        if not isinstance(reference, int):
            return False
        try:
            self._manager.get_variable(reference)
        except KeyError:
            return False
        return True

    def variables(self, reference: int | None = None) -> list[dict[str, Any]]:
        """The children of ``reference`` (the namespace itself by default), as DAP variables."""
        variable = self._manager.get_variable(reference or id(self._frame))
        return [v.get_var_data() for v in variable.get_children_variables()
                if shown(v.get_var_data()["name"])]

    def close(self) -> None:
        self._tracker.untrack_all()


def rich_representation(shell, name: str) -> tuple[dict, dict]:
    """(data, metadata) of the rich display of a user variable, as a cell would show it."""
    result = shell.user_expressions({name: name})[name]
    if result.get("status") != "ok":
        return {}, {}
    return result.get("data", {}), result.get("metadata", {})


def rich_expression(name: str) -> str:
    """The expression that, evaluated in a stopped frame, gives the same (data, metadata)."""
    return f"get_ipython().display_formatter.format({name})"
