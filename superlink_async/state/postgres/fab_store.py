"""FABs in the PostgreSQL database, so SuperLinks on several machines need no shared disk.

The ``fab`` table holds each FAB's bytes under the lowercase hex SHA-256 of those bytes,
the same key ``DirectoryFabStore`` uses as a file name; keys are checked the same way
before any query. A FAB never changes under its hash, so storing it twice is a no-op and
the copy of the last one kept in memory (``LastFab``) cannot go stale, whichever process
wrote it.
"""

from __future__ import annotations

import hashlib

import anyio.to_thread
import asyncpg

from superlink_async.state.fab_store import LastFab, validate_hash
from superlink_async.state.postgres.connect import borrow_connection, translated


class PostgresFabStore:
    """A ``FabStore`` on the state's own pool (one more table, the same backups)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._last = LastFab()

    async def put(self, content: bytes) -> str:
        """Store ``content`` (committed before this returns) and return its SHA-256."""
        # Hashing 10 MB takes milliseconds: off the event loop, as the directory store does.
        fab_hash = await anyio.to_thread.run_sync(_sha256, content)
        try:
            async with borrow_connection(self._pool) as db:
                await db.execute(
                    "INSERT INTO fab (hash, content) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                    fab_hash,
                    content,
                )
        except Exception as exc:
            raise translated(exc) from exc
        self._last.keep(fab_hash, content)
        return fab_hash

    async def get(self, fab_hash: str) -> bytes | None:
        """The FAB stored under ``fab_hash`` or None; ``InvalidFabHashError`` before any query."""
        validate_hash(fab_hash)
        return await self._last.get(fab_hash, self._read)

    async def _read(self, fab_hash: str) -> bytes | None:
        try:
            async with borrow_connection(self._pool) as db:
                content = await db.fetchval("SELECT content FROM fab WHERE hash = $1", fab_hash)
        except Exception as exc:
            raise translated(exc) from exc
        return None if content is None else bytes(content)


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
