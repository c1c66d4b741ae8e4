"""Which subshell runs a comm message: the rule, as a table, sans IO.

A frontend addresses every shell message to a subshell (``header.subshell_id``).
For ``comm_open``, ``comm_msg`` and ``comm_close`` that address is only a
suggestion: JupyterLab >= 4.4 sends widget traffic on a subshell of its own so
that widgets answer during a long cell, but the code that waits for a comm's
messages, or that shares objects with its handlers, runs on the thread that
owns the comm.  So a comm message runs:

1. where the comm's earlier messages still wait or run, if any do: the
   messages of one comm are handled one at a time, in arrival order, whatever
   thread runs them;
2. otherwise on the comm's *owner* (the subshell that created it, last
   published on it or last handled one of its messages; for a figure comm,
   the parent, see ``adapter.comms``) when the owner's loop is free: it is
   idle with nothing queued, or it runs an ``await`` cell (its loop then
   handles comm messages beside the cell);
3. otherwise on the subshell its header names: the owner is blocked in
   synchronous code or has work queued, and the frontend asked for an answer
   from elsewhere.  If the header names the owner itself, the message waits
   for it.

``route`` is that rule; the runtime (``runtime.comm_dispatch``) gathers the
facts and does the IO.
"""

from __future__ import annotations

import enum


class _NoOwner:
    def __repr__(self) -> str:
        return "NO_OWNER"


#: what the comm manager answers for a comm that no subshell owns
NO_OWNER = _NoOwner()

#: a comm's owner: a child subshell's id, None for the parent, or ``NO_OWNER``
OwnerId = str | None | _NoOwner


class Owner(enum.Enum):
    """What the comm's owner is doing when a message for the comm arrives."""

    NONE = "none"  # no subshell owns it: unknown comm, or only users' own threads used it
    GONE = "gone"  # the subshell that owned it was deleted
    FREE = "free"  # idle with nothing queued, or running an ``await`` cell
    BLOCKED = "blocked"  # running synchronous code, or requests are queued for it


class Via(enum.Enum):
    """Where the message goes."""

    PENDING = "pending"  # the subshell that holds this comm's earlier messages
    OWNER = "owner"
    HEADER = "header"  # the subshell the message's header names


#: owner state -> destination, when none of the comm's messages is pending
BY_OWNER: dict[Owner, Via] = {
    Owner.NONE: Via.HEADER,
    Owner.GONE: Via.HEADER,
    Owner.FREE: Via.OWNER,
    Owner.BLOCKED: Via.HEADER,
}


def route(owner: Owner, pending: bool) -> Via:
    """Where a comm message goes, given its owner's state and whether earlier
    messages of the same comm are still pending somewhere."""
    return Via.PENDING if pending else BY_OWNER[owner]
