"""What every outgoing message is stamped with: its date and its signature.

Both are computed four or five times per request, so both are hand-written
here rather than taken from the standard library's general tools:

- ``iso_date(t)``: the UTC time ``t`` as ISO 8601 with microseconds and an
  explicit offset (``2026-12-01T15:00:22.123456+00:00``).
  ``datetime.fromtimestamp(t, timezone.utc).isoformat()`` gives the same text
  (except at a whole second, where it drops the fraction; we always write
  six digits) in 3.9 us on the reference machine; this takes ~0.8 us: the
  part up to the seconds is formatted once per second and cached.
- ``Signer``: HMAC (RFC 2104) of a message's four parts, from two ``hashlib``
  objects keyed once and copied per message. ``hmac.HMAC.copy`` is Python
  code around the same C objects: 4.5 us per signature there, 2.4 us here.
  The result equals ``hmac.new(key, b"".join(parts), digest).hexdigest()``
  (tested against jupyter_client's ``Session.sign``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

#: (whole second, its text up to the seconds): replaced as a whole, never mutated,
#: so a thread that reads it sees one consistent pair
_second: tuple[int, str] = (-1, "")


def iso_date(t: float) -> str:
    """``t`` (seconds since the epoch, >= 0) as ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``."""
    global _second
    whole = int(t)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int((t - whole) * 1e6):06d}+00:00"


def now_iso() -> str:
    return iso_date(time.time())


class Signer:
    """HMAC with one key and digest; ``sign`` is safe from any thread (it copies)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, digest: str):
        inner, outer = hashlib.new(digest), hashlib.new(digest)
        block = inner.block_size
        if len(key) > block:
            key = hashlib.new(digest, key).digest()
        key = key.ljust(block, b"\0")
        inner.update(bytes(b ^ 0x36 for b in key))
        outer.update(bytes(b ^ 0x5C for b in key))
        self._inner, self._outer = inner, outer

    def sign(self, parts: Iterable[bytes]) -> bytes:
        """The hex digest of the concatenated ``parts``, as bytes."""
        h = self._inner.copy()
        for part in parts:
            h.update(part)
        o = self._outer.copy()
        o.update(h.digest())
        return o.hexdigest().encode()
