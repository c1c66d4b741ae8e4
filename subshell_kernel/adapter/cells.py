"""The file name of every cell: a hash of its source, the same one the frontend computes.

A debugger frontend (JupyterLab) sets a breakpoint in a cell by naming a file:
``tmpFilePrefix + murmur2(code, hashSeed) + tmpFileSuffix``, with the values
the kernel gave in ``debugInfo``.  It computes the name itself, so the code
object of the cell must carry exactly that file name, whether or not a debug
session is running when the cell runs (a breakpoint may be set in a cell that
ran before the session started, and hit when a function it defined is called).
So every cell, always, is compiled under that name (``CellCompiler``, the
shell's compiler); ``dumpCell`` writes the source to that file.

The prefix is ``<tmp>/ipykernel_<pid>/``: JupyterLab shows a frame of such a
file as its cell ("Cell [3]") only when the path contains ``ipykernel_``, so
the name stays although this is not ipykernel.  The hash is MurmurHash2
(32-bit, x86) of the UTF-8 bytes of the raw cell (before IPython's
transformations), seeded with ``HASH_SEED``, written in decimal.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
import tempfile

from IPython.core.compilerop import CachingCompiler

HASH_METHOD = "Murmur2"
HASH_SEED = 0xC70F6907
SUFFIX = ".py"
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes, seed: int = HASH_SEED) -> int:
    """MurmurHash2, 32-bit, as JupyterLab's debugger computes it for cell names."""
    length = len(data)
    h = (seed ^ length) & _MASK
    body = length & ~3
    for (k,) in struct.iter_unpack("<I", data[:body]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[body:]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def cell_directory() -> str:
    """Where cell files are named (and written by ``dumpCell``): one per process."""
    return os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}")


def prefix() -> str:
    return cell_directory() + os.sep


def cell_hash(code: str) -> int:
    """``murmur2`` of a cell's (raw) source; remembered for recent cells of up to
    ``_REMEMBERED_SIZE`` characters.

    The hash is Python arithmetic per 4 bytes: 0.09 ms for a 500-byte cell, 0.7 ms
    for 5,000 bytes, paid each time the cell runs; a cell run again (the usual
    edit-and-rerun of a notebook) finds its hash in the cache.  The cache holds
    at most ``_REMEMBERED`` sources of bounded size.
    """
    if len(code) > _REMEMBERED_SIZE:
        return _hash(code)
    return _remembered_hash(code)


def _hash(code: str) -> int:
    return murmur2(code.encode("utf-8", "surrogatepass"))


_REMEMBERED = 256
_REMEMBERED_SIZE = 1 << 16
_remembered_hash = functools.lru_cache(maxsize=_REMEMBERED)(_hash)


def cell_file(code: str) -> str:
    """The file name of a cell with this (raw) source."""
    return f"{prefix()}{cell_hash(code)}{SUFFIX}"


def ensure_cell_directory() -> str:
    """Create the cell directory, private to this user; refuse one someone else made.

    The name is predictable (it holds the pid), so another user could create
    it first, or put a symlink there, and read or replace the cells written
    into it: it must be a real directory, ours, and closed to others.
    """
    path = cell_directory()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{path} exists and is not a directory of this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def write_cell(code: str) -> str:
    """Write a cell's source to its file (``dumpCell``); returns the file name."""
    ensure_cell_directory()
    path = cell_file(code)
    with open(path, "w", encoding="utf-8") as f:
        f.write(code)
    return path


class CellCompiler(CachingCompiler):
    """IPython's compiler, naming each cell by the hash of its raw source."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._prefix = prefix()

    def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        return f"{self._prefix}{cell_hash(raw_code)}{SUFFIX}"
