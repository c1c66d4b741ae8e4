"""How many messages iopub may hold for one subscriber, from a byte budget, sans IO.

ZeroMQ queues a PUB/XPUB socket's messages per subscriber (one pipe each)
and, once a pipe holds its high-water mark (``SNDHWM``) of messages, drops
what is published to that subscriber alone: every other subscriber still
gets every message, in order. That is the behaviour we want for a frontend
that stops reading (a frozen tab, a laptop asleep, a stuck server), but the
mark counts messages, and a message can be 100 bytes (a status) or 64 KiB
(a stream chunk of a runaway loop) or megabytes (an image). ``SNDHWM = 0``
(no limit) let a frozen subscriber cost the kernel all the output it missed.

``IOPubBudget`` turns a byte budget into the mark: before each message is
sent, ``admit(size)`` says whether the mark must change, to
``budget // largest``, where ``largest`` is the largest message among the
last ``window`` ones (at least 1 and at most ``cap`` messages). It lowers the
mark at once and raises it only by a quarter or more at a time. libzmq
applies a new ``SNDHWM`` to the pipes that exist.

Rules:

1. While the largest recent size does not fall, a subscriber that stops
   reading holds at most ``budget`` bytes: each message it holds was
   admitted while its pipe held fewer than ``budget // largest`` messages,
   none larger than ``largest``.
2. When sizes fall (a flood of stream chunks is followed by small status
   messages) the mark rises again once ``window`` smaller messages have
   passed, so a pipe already filled by large messages may then also take
   small ones: each such fall lets a frozen subscriber take at most one more
   ``budget``. (A pipe that keeps up is empty and never notices.)
3. A subscriber that keeps reading and never falls the budget behind gets
   every message: it never reaches the mark. One that falls further behind
   misses what does not fit, and only it: ZeroMQ's PUB semantics.
"""

from __future__ import annotations


class IOPubBudget:
    def __init__(self, budget: int, window: int = 4096, cap: int = 100_000):
        if budget <= 0:
            raise ValueError("the budget must be positive")
        self.budget = budget
        self.cap = cap
        self._half = max(1, window // 2)
        self._count = 0
        self._current_max = 0  # largest size in the current half-window
        self._previous_max = 0  # ... and in the half-window before it
        self.hwm = cap

    def admit(self, size: int) -> int | None:
        """Account for a message of ``size`` bytes about to be sent; the new high-water
        mark if it must change before the send, else None."""
        if size > self._current_max:
            self._current_max = size
        self._count += 1
        if self._count >= self._half:
            self._previous_max, self._current_max, self._count = self._current_max, 0, 0
        largest = max(self._current_max, self._previous_max, size)
        hwm = min(self.cap, max(1, self.budget // largest))
        # lower at once (that keeps the bound); raise only by a quarter or more, so a
        # slowly shrinking size does not cost a setsockopt on every message
        if hwm < self.hwm or hwm >= self.hwm * 5 // 4 + 1 or (hwm == self.cap != self.hwm):
            self.hwm = hwm
            return hwm
        return None
