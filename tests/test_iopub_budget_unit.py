"""``core.iopub_budget``: the byte budget per iopub subscriber, as a high-water mark."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subshell_kernel.core.iopub_budget import IOPubBudget


def test_small_messages_get_the_cap_and_a_flood_of_chunks_a_mark_within_the_budget():
    budget = IOPubBudget(48 << 20, cap=100_000)
    assert budget.admit(300) is None and budget.hwm == 100_000  # statuses: no change
    assert budget.admit(65_700) == (48 << 20) // 65_700  # the first stream chunk lowers it
    for _ in range(10_000):
        budget.admit(65_700)
    assert budget.hwm * 65_700 <= 48 << 20


def test_one_huge_message_gets_a_mark_of_one():
    budget = IOPubBudget(48 << 20)
    assert budget.admit(200 << 20) == 1


def test_the_mark_rises_again_a_window_after_large_messages_stop():
    budget = IOPubBudget(1 << 20, window=16, cap=10_000)
    budget.admit(100_000)
    low = budget.hwm
    for _ in range(16):
        budget.admit(100)
    assert budget.hwm > low


def test_the_budget_must_be_positive():
    with pytest.raises(ValueError):
        IOPubBudget(0)


class FrozenPipe:
    """One subscriber's pipe as ZeroMQ keeps it once the subscriber stops reading: a
    message is queued while the pipe holds fewer than the mark, dropped otherwise."""

    def __init__(self) -> None:
        self.held = 0
        self.count = 0

    def offer(self, budget: IOPubBudget, size: int) -> None:
        budget.admit(size)
        if self.count < budget.hwm:
            self.count += 1
            self.held += size


@settings(max_examples=300, deadline=None)
@given(base=st.integers(100, 3_000_000),
       jitter=st.lists(st.floats(0.5, 1.0), min_size=1, max_size=3000))
def test_while_sizes_hold_a_frozen_subscriber_holds_at_most_the_budget(base, jitter):
    limit = 4 << 20
    budget, pipe = IOPubBudget(limit, window=64, cap=10_000), FrozenPipe()
    budget.admit(base)  # the largest size comes first; the others are up to half as large
    for factor in jitter:
        pipe.offer(budget, max(1, int(base * factor)))
    assert pipe.held <= limit or pipe.count == 1


@settings(max_examples=200, deadline=None)
@given(eras=st.lists(st.integers(100, 3_000_000), min_size=1, max_size=6))
def test_each_fall_in_size_lets_a_frozen_subscriber_take_at_most_one_more_budget(eras):
    limit = 4 << 20
    budget, pipe = IOPubBudget(limit, window=64, cap=10_000), FrozenPipe()
    for size in eras:  # each era lasts longer than the window
        for _ in range(200):
            pipe.offer(budget, size)
    falls = sum(1 for a, b in zip(eras, eras[1:]) if b < a)
    assert pipe.held <= (1 + falls) * limit or pipe.count == 1
