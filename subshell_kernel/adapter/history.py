"""IPython's history, written to its SQLite file without holding up the next cell.

IPython's ``HistoryManager.writeout_cache`` holds the input cache's lock for
the whole write: the INSERT and the commit, which waits for the disk. Its
saving thread runs that write after every cell (``db_cache_size`` 0), and the
next cell's ``store_inputs`` takes the same lock. So a cell sent right after
another waited for the previous cell's commit: with ``store_history`` on (what
every notebook and console sends), a ``pass`` round trip took 1.9 ms against
1.35 ms with the database off, on this project's 2-core machine.  And each
commit costs ~0.4 ms of CPU (the journal file, two fsyncs), on a machine with
two cores.

``KernelHistoryManager`` takes the cached rows out under the cache locks (a
list swap) and writes them under a lock of its own. The rules:

- ``store_inputs`` and ``store_output`` never wait for SQLite.
- The saving thread, woken by a new cell, writes ``SAVE_DELAY`` later: the
  cells of a burst (a notebook's "Run All") share one commit instead of one
  each.  A cell is in the file at most that long after it ran; a kernel that
  exits cleanly writes the rest (IPython's ``end_session`` at exit).
- Writes are serialized: one thread at a time writes, in the order the rows
  were taken.
- A reader that writes out first (``get_tail``, ``search``, ``end_session``)
  waits for a write in flight, so it finds every cell stored before it.
- What IPython does on a clash of (session, line), it does here too: the input
  moves to a new session, a clashing output is dropped, and both say so.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from IPython.core.history import HistoryManager

#: seconds from the saving thread's wake-up (a cell was stored) to its write
SAVE_DELAY = 0.05


class KernelHistoryManager(HistoryManager):
    """``HistoryManager`` whose writes to the database block no cell (see module)."""

    def __init__(self, *args, **kwargs):
        # before IPython's __init__, which may start the saving thread
        self._write_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def writeout_cache(self, conn: sqlite3.Connection | None = None) -> None:
        """Write the cached inputs and outputs to the database (``conn``, or ours);
        nothing with the database off (``HistoryManager.enabled``), as IPython's."""
        if not self.enabled:
            return
        if conn is None:
            conn = self.db
        if threading.current_thread() is self.save_thread:
            time.sleep(SAVE_DELAY)  # the cells stored meanwhile join this write
        with self._write_lock:
            with self.db_input_cache_lock:
                inputs, self.db_input_cache = self.db_input_cache, []
            with self.db_output_cache_lock:
                outputs, self.db_output_cache = self.db_output_cache, []
            if inputs:
                self._write_inputs(conn, inputs)
            if outputs:
                try:
                    self._insert(conn, "output_history", outputs)
                except sqlite3.IntegrityError:
                    print("!! Session/line number for output was not unique",
                          "in database. Output will not be stored.")

    def _write_inputs(self, conn: sqlite3.Connection, rows: list) -> None:
        try:
            self._insert(conn, "history", rows)
        except sqlite3.IntegrityError:
            self.new_session(conn)
            print("ERROR! Session/line number was not unique in",
                  "database. History logging moved to new session",
                  self.session_number)
            try:
                self._insert(conn, "history", rows)
            except sqlite3.IntegrityError:
                pass

    def _insert(self, conn: sqlite3.Connection, table: str, rows: list) -> None:
        """One transaction: every row or none (IPython's rows: ``(line, *values)``)."""
        marks = ", ".join("?" * (len(rows[0]) + 1))
        session = self.session_number
        with conn:
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})",
                             [(session, *row) for row in rows])
