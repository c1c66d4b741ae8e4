"""``%autoawait``: an ``await`` cell runs on the loop of the library it names.

The kernel sets IPython's ``loop_runner`` to its own backend, and an
``await`` cell is then awaited on the subshell's own loop (``handlers``).
After ``%autoawait trio`` in an asyncio kernel, or ``%autoawait asyncio`` in a
trio one, the cell runs as IPython and ipykernel run it: on a new loop of
that library, started on the subshell's thread for the length of the cell,
which blocks the subshell's own loop meanwhile.  The cell runs in a cancel
scope of that loop and the subshell is told that loop's call-soon, so an
interrupt cancels it there, as it would on the subshell's loop.  Any other
runner (``curio``, a callable of the user's) is called as blocking code.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import sniffio

from ..transport.loop import call_soon_threadsafe
from .shell import cell_scope, display_error, last_error

if TYPE_CHECKING:
    from ..runtime.subshell import Subshell
    from .shell import KernelShell

#: what ``%autoawait`` can name and this kernel can run on a loop of its own
LOOP_LIBRARIES = ("asyncio", "trio")
#: trio warns when, on the main thread, it takes the signal wakeup fd from the running
#: loop; for a cell run here it is the kernel's own loop, which gets it back after
#: (``hooks`` filters the warning)
TRIO_WAKEUP_WARNING = "It looks like Trio's signal handling code might have collided"


def runner_library(shell: KernelShell) -> str | None:
    """The library ``%autoawait`` names now (None: a runner of the user's)."""
    for name, (runner, _) in shell.loop_runner_map.items():
        if runner is shell.loop_runner:
            return name
    return None


def run_elsewhere(shell: KernelShell, sub: Subshell, coro: Coroutine) -> Any:
    """Run ``coro`` (an ``await`` cell) to its end with the runner ``%autoawait`` names,
    not the subshell's backend, blocking this thread; returns what the cell returns."""
    library = runner_library(shell)
    if library not in LOOP_LIBRARIES:
        sub.set_running("sync")
        return shell.loop_runner(coro)
    shown: list = []

    async def cell() -> Any:
        try:
            with anyio.CancelScope() as scope:
                token = cell_scope.set(scope)
                sub.set_running("async", scope, call_soon_threadsafe())
                try:
                    return await coro
                finally:
                    cell_scope.reset(token)
        finally:
            # the loop ran the cell in a copy of this context: carry out what it showed
            shown.extend((last_error.get(), display_error.get()))

    try:
        return _RUN[library](cell)
    finally:
        if shown:
            last_error.set(shown[0])
            display_error.set(shown[1])


def is_own_loop(shell: KernelShell, backend: str) -> bool:
    return runner_library(shell) == backend


def _run_asyncio(fn: Callable[[], Coroutine]) -> Any:
    import asyncio  # imported when a cell asks for it: a trio kernel may never need it

    # trio marks its thread for sniffio (and so AnyIO) while it runs, and anyio.run its
    # context: inside this loop the library is asyncio, so both marks are lifted
    token = sniffio.current_async_library_cvar.set(None)
    previous, sniffio.thread_local.name = sniffio.thread_local.name, None
    try:
        return asyncio.run(fn())
    finally:
        sniffio.thread_local.name = previous
        sniffio.current_async_library_cvar.reset(token)


def _run_trio(fn: Callable[[], Coroutine]) -> Any:
    import trio  # likewise: asyncio kernels never import trio unless asked

    return trio.run(fn)


_RUN: dict[str, Callable[[Callable[[], Coroutine]], Any]] = {
    "asyncio": _run_asyncio,
    "trio": _run_trio,
}
