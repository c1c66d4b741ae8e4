"""Raising an exception in another thread, and returning freed heap to the OS."""

from __future__ import annotations

import ctypes

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
# PYFUNCTYPE, not CFUNCTYPE: the call must hold the GIL (CFUNCTYPE releases it and
# PyThreadState_SetAsyncExc then crashes without a thread state)
_clear_async_exc_null = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


def raise_in_thread(thread_ident: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in another thread at its next bytecode.

    Pure-Python code stops at once; a blocking C call stops when it returns.
    """
    return _set_async_exc(thread_ident, exc_type) == 1


def clear_pending_exception(thread_ident: int) -> None:
    """Cancel an exception queued by ``raise_in_thread`` that has not fired yet."""
    _clear_async_exc_null(thread_ident, None)


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
