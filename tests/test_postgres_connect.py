"""Connecting to PostgreSQL: each way it fails is one line naming host, port and database.

Against the tests' real server: a port nobody listens on, a wrong password, a database
that does not exist. The password never appears in the line.
"""

from __future__ import annotations

import asyncpg
import pytest

from superlink_async.state.base import StateError
from superlink_async.state.postgres.connect import create_pool, unavailable
from superlink_async.testing import free_port
from superlink_async.testing.postgres import PASSWORD, PostgresServer

pytestmark = pytest.mark.anyio


async def refusal(url: str) -> str:
    with pytest.raises(StateError) as raised:
        await create_pool(url, max_size=2)
    message = str(raised.value)
    assert "\n" not in message
    assert PASSWORD not in message
    return message


async def test_a_port_nobody_listens_on_is_named() -> None:
    port = free_port()
    message = await refusal(f"postgresql://superlink:{PASSWORD}@127.0.0.1:{port}/flwr")
    assert message == (
        f"Cannot connect to PostgreSQL database 'flwr' on 127.0.0.1:{port}: connection "
        "refused (is PostgreSQL running and listening there?)"
    )


async def test_a_wrong_password_is_authentication_refused(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.url(password="not-" + PASSWORD)
    message = await refusal(url)
    assert message == (
        f"Cannot connect to PostgreSQL database 'postgres' on 127.0.0.1:{postgres_server.port}: "
        "authentication refused for user 'superlink': password authentication failed for "
        'user "superlink"'
    )
    assert "not-" not in message


async def test_a_missing_database_is_named(postgres_server: PostgresServer) -> None:
    message = await refusal(postgres_server.url("no_such_database"))
    assert message == (
        "Cannot connect to PostgreSQL database 'no_such_database' on "
        f"127.0.0.1:{postgres_server.port}: the database 'no_such_database' does not exist "
        "(create it, or fix the URL)"
    )


async def test_the_connect_timeout_of_the_url_is_honoured_not_sent(postgres_url: str) -> None:
    pool = await create_pool(postgres_url + "?connect_timeout=5", max_size=2)
    try:
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_pgpassword_is_honoured(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    pool = await create_pool(postgres_server.url(password=None), max_size=1)
    await pool.close()


async def test_a_server_going_away_is_unavailable_not_a_bug() -> None:
    server = PostgresServer.create()
    try:
        server.start()
        connection = await asyncpg.connect(server.url())
        server.stop()
        with pytest.raises(Exception) as lost:
            await connection.fetchval("SELECT 1")
        assert unavailable(lost.value), repr(lost.value)
        with pytest.raises(Exception) as refused:
            await asyncpg.connect(server.url(), timeout=5)
        assert unavailable(refused.value), repr(refused.value)
    finally:
        server.destroy()
    assert not unavailable(asyncpg.UniqueViolationError("duplicate"))
    assert not unavailable(ValueError("bad"))
