"""What the SQLite backend remembers of its database, to answer hot reads without a hop.

Three caches, each changed only at the named invalidation points below. Every point is
called on the database's thread, inside the operation that changes the database (or reads
it), so the caches follow the database's own order of events: an operation queued after a
change sees the cache as the change left it. Each point errs safe if its operation then
rolls back: a cache forgets what it held, or the waiting set keeps a node with nothing to
pull (its next pull finds nothing and drops it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

#: Run rows kept at most before they are all forgotten (runs are read by id).
RUN_ROWS_KEPT = 1024


class ReadCaches:
    """The backend's read caches and their invalidation points."""

    def __init__(self, nodes_with_instructions: Iterable[int]) -> None:
        #: Every node with an undelivered instruction, and maybe some without: a node not in
        #: it has nothing to pull, and its pull (most pulls, every 3 s from every idle node)
        #: needs no trip to the database.
        self._waiting = set(nodes_with_instructions)
        #: Rows of runs read so far. Every node's GetRun, GetFab and PushMessages reads its
        #: run (3,000 reads in a 1,000-node round).
        self._run_rows: dict[int, sqlite3.Row] = {}
        #: Key -> node bindings read so far (bound keys only, so unknown keys cannot grow
        #: it). Every Fleet call of a signed node looks its key up.
        self._node_ids: dict[bytes, int] = {}

    # --- Nodes with instructions waiting ---------------------------------------------------
    def may_have_instructions(self, node_id: int) -> bool:
        """False only if the node has no undelivered instruction."""
        return node_id in self._waiting

    def instruction_stored(self, node_id: int) -> None:
        """Invalidation point: an instruction for ``node_id`` was stored."""
        self._waiting.add(node_id)

    def node_drained(self, node_id: int) -> None:
        """Invalidation point: a pull took fewer instructions than it could (none are left)."""
        self._waiting.discard(node_id)

    # --- Run rows --------------------------------------------------------------------------
    def run_row(self, run_id: int) -> sqlite3.Row | None:
        """The run's row as last read, if it is kept."""
        return self._run_rows.get(run_id)

    def run_read(self, run_id: int, row: sqlite3.Row) -> None:
        """Keep a run's row just read (forgetting all of them once ``RUN_ROWS_KEPT`` are)."""
        if len(self._run_rows) >= RUN_ROWS_KEPT:
            self._run_rows.clear()
        self._run_rows[run_id] = row

    def run_changed(self, run_id: int) -> None:
        """Invalidation point: the row of ``run_id`` changed."""
        self._run_rows.pop(run_id, None)

    def runs_changed(self) -> None:
        """Invalidation point: rows of runs changed that the statement did not name by id."""
        self._run_rows.clear()

    # --- Key bindings ----------------------------------------------------------------------
    def node_of_key(self, public_key: bytes) -> int | None:
        """The node the key was bound to when last read, if that binding is kept."""
        return self._node_ids.get(public_key)

    def binding_read(self, public_key: bytes, node_id: int) -> None:
        """Keep a key's binding just read."""
        self._node_ids[public_key] = node_id

    def bindings_changed(self) -> None:
        """Invalidation point: a node was bound to a key, or a node (maybe bound) deleted."""
        self._node_ids.clear()
