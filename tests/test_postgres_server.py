"""The tests' throwaway PostgreSQL server: loopback only, password auth, restartable."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.anyio


async def test_each_test_gets_its_own_empty_database(postgres_url: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
        assert await connection.fetchval("SELECT current_database()") in postgres_url
    finally:
        await connection.close()


async def test_a_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres_server.url(password="wrong"))


def test_it_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    listening = postgres_server.psql("SHOW listen_addresses").strip()
    assert listening == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", postgres_server.port), timeout=5):
        pass


def test_a_stopped_server_starts_again_on_its_port_with_its_data() -> None:
    server = PostgresServer.create()
    try:
        server.start()
        port = server.port
        server.psql("CREATE TABLE kept (value int); INSERT INTO kept VALUES (7)")
        server.stop()
        assert not server.running
        server.start()
        assert server.port == port
        assert server.psql("SELECT value FROM kept").strip() == "7"
    finally:
        server.destroy()
    assert not server.root.exists()
