"""``adapter.history``: IPython's history, written without holding up a cell.

A real ``HistoryManager`` subclass on a real SQLite file and IPython's own
saving thread; only ``_insert`` (one transaction) is wrapped, to hold a write
in flight as a slow disk would, or to count the transactions.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from IPython.core.interactiveshell import InteractiveShell

from subshell_kernel.adapter.history import KernelHistoryManager


@pytest.fixture(scope="module")
def shell():
    return InteractiveShell.instance()


@pytest.fixture
def manager(shell, tmp_path):
    hm = KernelHistoryManager(shell=shell, hist_file=tmp_path / "history.sqlite")
    assert hm.using_thread  # IPython's saving thread writes, as in the kernel
    yield hm
    hm.end_session()
    hm.close()


def rows(hm) -> list[tuple]:
    with sqlite3.connect(hm.hist_file) as db:
        return db.execute("SELECT session, line, source_raw FROM history ORDER BY line").fetchall()


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class HeldWrites:
    """Wraps ``hm._insert``: each transaction waits for ``release``; counts them."""

    def __init__(self, hm, hold: bool):
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        real = hm._insert

        def insert(conn, table, batch):
            self.calls.append(len(batch))
            self.entered.set()
            assert self.release.wait(10)
            real(conn, table, batch)

        hm._insert = insert


def in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_storing_a_cell_does_not_wait_for_a_write_in_flight(manager):
    held = HeldWrites(manager, hold=True)
    manager.store_inputs(1, "a = 1")
    assert held.entered.wait(10)  # the saving thread is inside its transaction
    stored = in_thread(lambda: manager.store_inputs(2, "b = 2"))
    stored.join(5)
    alive = stored.is_alive()
    held.release.set()
    assert not alive, "store_inputs waited for the saving thread's write"
    wait_for(lambda: len(rows(manager)) == 2)


def test_a_burst_of_cells_shares_a_few_commits(manager):
    """A "Run All" of 20 cells of 2 ms each: a commit per cell would be 20 (a commit
    takes ~1 ms here); one ``SAVE_DELAY`` of 50 ms gathers them in one or two."""
    held = HeldWrites(manager, hold=False)
    for line in range(1, 21):
        manager.store_inputs(line, f"x = {line}")
        time.sleep(0.002)
    wait_for(lambda: len(rows(manager)) == 20)
    assert sum(held.calls) == 20
    assert len(held.calls) <= 10, held.calls


def test_a_reader_waits_for_the_write_in_flight_and_sees_every_cell(manager):
    held = HeldWrites(manager, hold=True)
    manager.store_inputs(1, "first = 1")
    assert held.entered.wait(10)
    manager.store_inputs(2, "second = 2")  # still in the cache: the write took only line 1
    found: list = []
    reader = in_thread(lambda: found.extend(manager.search("*", raw=True)))
    reader.join(0.5)
    assert reader.is_alive()  # waiting for the write in flight, not reading around it
    held.release.set()
    reader.join(10)
    assert [source for _, _, source in found] == ["first = 1", "second = 2"]


def test_a_line_already_in_the_database_moves_the_input_to_a_new_session(manager, capsys):
    manager.store_inputs(1, "one = 1")
    wait_for(lambda: len(rows(manager)) == 1)
    first_session = manager.session_number
    manager.store_inputs(1, "again = 1")  # the same (session, line): IPython's rule applies
    wait_for(lambda: len(rows(manager)) == 2)
    assert manager.session_number != first_session
    assert [r[2] for r in rows(manager)] == ["one = 1", "again = 1"]
    assert rows(manager)[1][0] == manager.session_number
    assert "History logging moved to new session" in capsys.readouterr().out


def test_outputs_are_written_when_output_logging_is_on(manager):
    manager.db_log_output = True
    manager.store_inputs(1, "6 * 7")
    manager.output_hist_reprs[1] = "42"
    manager.store_output(1)
    manager.writeout_cache()
    with sqlite3.connect(manager.hist_file) as db:
        assert db.execute("SELECT output FROM output_history").fetchall() == [("42",)]


def test_with_the_database_off_nothing_is_written_and_nothing_fails(shell, tmp_path):
    hm = KernelHistoryManager(shell=shell, hist_file=tmp_path / "off.sqlite", enabled=False)
    hm.store_inputs(1, "a = 1")
    hm.writeout_cache()
    hm.end_session()
    hm.close()
    assert not (tmp_path / "off.sqlite").exists()
