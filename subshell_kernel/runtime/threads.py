"""Raising an exception in another thread, and returning freed heap to the OS."""

from __future__ import annotations

import ctypes

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def raise_in_thread(thread_ident: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in another thread at its next bytecode.

    Pure-Python code stops at once; a blocking C call stops when it returns.
    """
    return _set_async_exc(thread_ident, exc_type) == 1


def fire_pending_exception() -> None:
    """Called on a thread that ``raise_in_thread`` may have targeted: an exception still
    pending there is raised here (at this call), where the caller catches it.

    The other way to drop it, ``PyThreadState_SetAsyncExc(ident, NULL)``, leaves
    CPython 3.11's interpreter-wide "async exception pending" flag set for good:
    every thread then takes the slow path at each function call and loop, and a
    thread that turns on ``sys.settrace`` (pdb, the main thread's pause) spins
    for ever at its next function call.  An exception that is raised clears it.
    """


def _find_malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _find_malloc_trim()


def return_freed_memory() -> None:
    """Give the heap memory freed by an ended subshell back to the OS (glibc).

    Measured: after deleting 100 subshells RSS stayed 12 MB above baseline
    without it, 6 MB with it.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)
