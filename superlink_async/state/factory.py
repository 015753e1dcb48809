"""Pick and open the state backend that ``--database`` names."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from superlink_async.config import IN_MEMORY_DATABASE
from superlink_async.state.base import LinkState
from superlink_async.state.memory import InMemoryLinkState
from superlink_async.state.sqlite import SqliteLinkState


@asynccontextmanager
async def open_state(
    database: str, clock: Callable[[], float] = time.time, *, check_integrity: bool = True
) -> AsyncIterator[LinkState]:
    """Open the backend for ``database`` and close it on exit.

    ``:flwr-in-memory-state:`` is the in-memory backend; ``:memory:`` is one shared SQLite
    in-memory connection (the reference opened a new empty one per call); anything else is a
    SQLite file, created or reopened (after SQLite's ``quick_check``, unless
    ``check_integrity`` is False).
    """
    state: LinkState
    if database == IN_MEMORY_DATABASE:
        state = InMemoryLinkState(clock=clock)
    else:
        state = await SqliteLinkState.open(database, clock=clock, check_integrity=check_integrity)
    try:
        yield state
    finally:
        await state.aclose()
