"""The connection as operations see it on aiosqlite's thread: plain, synchronous SQLite calls."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite

from superlink_async.state import rules
from superlink_async.state.base import RunNotFoundError
from superlink_async.state.columns import to_db

T = TypeVar("T")

#: Rules that statements call by these names, so that a query filters by the very rule the
#: other backends apply (nothing in the schema uses them: other tools can read the file).
_RULES_IN_SQL: tuple[tuple[str, int, Callable[..., object]], ...] = (
    ("is_online", 2, rules.is_online),
    ("ttl_lapsed", 3, rules.ttl_lapsed),
    ("reapable", 4, rules.reapable),
    ("claim_rank", 2, rules.claim_rank),
)


async def register_rules(db: aiosqlite.Connection) -> None:
    """Make ``_RULES_IN_SQL`` callable from this connection's statements."""
    for name, arity, rule in _RULES_IN_SQL:
        await db.create_function(name, arity, rule, deterministic=True)


class Session:
    """One connection's plain SQLite calls; used only on aiosqlite's thread."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Every row ``sql`` returns."""
        return self.connection.execute(sql, params).fetchall()

    def row(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row ``sql`` returns, if any."""
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a write statement; return how many rows it touched."""
        return self.connection.execute(sql, params).rowcount

    def insert_with_fresh_id(
        self, sql: str, new_id: Callable[[], int], params: Sequence[Any]
    ) -> int:
        """Insert with a random id (first parameter), drawing again on the rare collision.

        ``sql`` must end in ``ON CONFLICT [(id)] DO NOTHING`` so a collision inserts nothing.
        """
        while True:
            candidate = new_id()
            if self.change(sql, (to_db(candidate), *params)):
                return candidate

    def insert_node(self, online_until: float, ping_interval: float, key: bytes | None) -> int:
        """A new node under a fresh random id, bound to ``key`` if one is given."""
        return self.insert_with_fresh_id(
            "INSERT INTO node (node_id, online_until, ping_interval, public_key) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (node_id) DO NOTHING",
            rules.new_node_id,
            (online_until, ping_interval, key),
        )

    def run_exists(self, run_id: int) -> bool:
        """Whether the run is stored."""
        return self.row("SELECT 1 FROM run WHERE run_id = ?", (to_db(run_id),)) is not None

    def require_run(self, run_id: int) -> None:
        """``RunNotFoundError`` unless the run is stored."""
        if not self.run_exists(run_id):
            raise RunNotFoundError(run_id)

    def node_exists(self, node_id: int) -> bool:
        """Whether the node is registered."""
        return self.row("SELECT 1 FROM node WHERE node_id = ?", (to_db(node_id),)) is not None


def atomically(work: Callable[[Session], T], db: Session) -> T:
    """``work`` in one ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if it raises."""
    db.connection.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        db.connection.rollback()
        raise
    db.connection.commit()
    return result
