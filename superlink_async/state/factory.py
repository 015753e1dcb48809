"""Pick and open the state backend that ``--database`` names, and the FAB store beside it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from superlink_async.config import (
    DEFAULT_DATABASE_POOL_SIZE,
    IN_MEMORY_DATABASE,
    is_postgres_url,
)
from superlink_async.logs import logger
from superlink_async.state.base import LinkState
from superlink_async.state.fab_store import DirectoryFabStore, FabStore
from superlink_async.state.memory import InMemoryLinkState
from superlink_async.state.sqlite import SqliteLinkState


@asynccontextmanager
async def open_state(
    database: str,
    clock: Callable[[], float] = time.time,
    *,
    check_integrity: bool = True,
    pool_size: int = DEFAULT_DATABASE_POOL_SIZE,
) -> AsyncIterator[LinkState]:
    """Open the backend for ``database`` and close it on exit.

    ``:flwr-in-memory-state:`` is the in-memory backend; ``:memory:`` is one shared SQLite
    in-memory connection (the reference opened a new empty one per call); a
    ``postgresql://`` or ``postgres://`` URL is a PostgreSQL database (at most ``pool_size``
    connections); anything else is a SQLite file, created or reopened (after SQLite's
    ``quick_check``, unless ``check_integrity`` is False).
    """
    state: LinkState
    if database == IN_MEMORY_DATABASE:
        state = InMemoryLinkState(clock=clock)
    elif is_postgres_url(database):
        # Here, not at the top: memory and SQLite users need not load asyncpg.
        from superlink_async.state.postgres import PostgresLinkState  # noqa: PLC0415
        from superlink_async.state.postgres.connect import PostgresTarget  # noqa: PLC0415

        state = await PostgresLinkState.open(database, clock, pool_size=pool_size)
        logger.info(
            "State in PostgreSQL %s (up to %d connections)",
            PostgresTarget.parse(database).describe(),
            pool_size,
        )
    else:
        state = await SqliteLinkState.open(database, clock=clock, check_integrity=check_integrity)
    try:
        yield state
    finally:
        await state.aclose()


def fab_store_for(database: str, state: LinkState, storage_dir: Path) -> FabStore:
    """Where FABs go: into the PostgreSQL database of ``state``, else into ``storage_dir``.

    ``state`` is what ``open_state(database)`` gave. With PostgreSQL, SuperLinks on several
    machines share FABs without a shared filesystem.
    """
    if not is_postgres_url(database):
        return DirectoryFabStore(storage_dir)
    from superlink_async.state.postgres import PostgresLinkState  # noqa: PLC0415
    from superlink_async.state.postgres.fab_store import PostgresFabStore  # noqa: PLC0415

    if not isinstance(state, PostgresLinkState):
        raise TypeError(f"a PostgreSQL URL opens a PostgresLinkState, not {type(state).__name__}")
    return PostgresFabStore(state.pool)
