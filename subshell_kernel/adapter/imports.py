"""Run kernel code around the import of a few named modules.

Some adjustments can only be made when a library is imported: patching
``pdb`` at startup would import it (and IPython's debugger: 8 ms of every
start) for the few sessions that debug, and tqdm decides at import time
whether it runs in a notebook.  ``ImportWatch`` is a ``sys.meta_path`` finder
for a fixed table ``{module name: around}``, where ``around(module)`` is a
context manager entered just before the module's code runs and left just
after (at its first import, and again if it is reloaded).  It finds the
module with the finders after it and changes nothing else: the module keeps
its own loader (``__loader__``, ``__spec__.loader``), so reloads,
``inspect.getsource`` and tracebacks see the module as it is.
For every other name it answers None at the cost of one dict lookup.

``hooks`` puts it on ``sys.meta_path`` and takes it off; the table's entries
come from the modules that own each adjustment.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from importlib.abc import Loader, MetaPathFinder
from types import ModuleType
from typing import Any

Around = Callable[[ModuleType], AbstractContextManager]


class ImportWatch(MetaPathFinder):
    def __init__(self, around: Mapping[str, Around]):
        self._around = dict(around)

    def find_spec(self, fullname: str, path=None, target=None):
        around = self._around.get(fullname)
        if around is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _AroundLoader(spec.loader, around)
                return spec
        return None


class _AroundLoader(Loader):
    """The module's own loader, with ``around`` wrapped about its ``exec_module``."""

    def __init__(self, loader: Any, around: Around):
        self._loader = loader
        self._around = around

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader  # the module's own, from now on
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with self._around(module):
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def is_initializing(module: ModuleType | None) -> bool:
    """Is ``module`` still running its top-level code (an import in progress)?"""
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))
