"""One ``state`` fixture per backend, all driven by a clock the tests move by hand; two
PostgreSQL replicas (``first``, ``second``) on one database."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from superlink_async.state.base import LinkState
from superlink_async.state.factory import open_state
from superlink_async.state.postgres import DEFAULT_POOL_SIZE, PostgresLinkState
from superlink_async.testing.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _database_of(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``--database`` of the backend a test is parametrised with."""
    if request.param == "postgres":
        # The session's PostgreSQL server starts with the first test that asks for it.
        url: str = request.getfixturevalue("postgres_url")
        return url
    return {
        "memory": ":flwr-in-memory-state:",
        "sqlite-file": str(tmp_path / "state.db"),
        "sqlite-memory": ":memory:",
    }[request.param]


@pytest.fixture(params=["memory", "sqlite-file", "sqlite-memory", "postgres"])
async def state(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[LinkState]:
    async with open_state(_database_of(request, tmp_path), clock=clock) as opened:
        yield opened


# Two backend objects on one PostgreSQL database, each with its own pool, stand for two
# SuperLink processes (replicas); they share the test's clock, as synchronised machines do.
@asynccontextmanager
async def opened(
    url: str, clock: FakeClock, pool_size: int = DEFAULT_POOL_SIZE
) -> AsyncIterator[PostgresLinkState]:
    """A PostgreSQL backend on ``url``, closed afterwards."""
    state = await PostgresLinkState.open(url, clock=clock, pool_size=pool_size)
    try:
        yield state
    finally:
        await state.aclose()


@pytest.fixture
async def first(postgres_url: str, clock: FakeClock) -> AsyncIterator[PostgresLinkState]:
    async with opened(postgres_url, clock) as state:
        yield state


@pytest.fixture
async def second(
    postgres_url: str, clock: FakeClock, first: PostgresLinkState
) -> AsyncIterator[PostgresLinkState]:
    """Another process (a replica) on the database ``first`` created."""
    async with opened(postgres_url, clock) as state:
        yield state


@pytest.fixture(params=["memory", "sqlite-file", "sqlite-memory"])
async def one_process_state(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[LinkState]:
    """A backend only one process can open: every lease but the latest is stale."""
    async with open_state(_database_of(request, tmp_path), clock=clock) as opened_state:
        yield opened_state


Reopen = Callable[[], AbstractAsyncContextManager[LinkState]]


@pytest.fixture(params=["sqlite-file", "postgres"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Reopen:
    """Opens one durable database (a new backend object each time), for tests of reopening."""
    database = _database_of(request, tmp_path)
    return lambda: open_state(database, clock=clock)


def corrupt_a_page(path: Path) -> None:
    """Overwrite the first 4 KB of a leaf page of the node table's key index, as a torn
    write would: a page the open itself never reads (the tests fill the node table), which
    ``quick_check`` reports by number."""
    with sqlite3.connect(path) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = [
            row[0]
            for row in connection.execute(
                "SELECT pageno FROM dbstat WHERE name = 'sqlite_autoindex_node_1' "
                "AND pagetype = 'leaf' ORDER BY pageno"
            )
        ]
    connection.close()
    with path.open("r+b") as file:
        file.seek(page_size * (pages[len(pages) // 2] - 1))
        file.write(os.urandom(4096))
