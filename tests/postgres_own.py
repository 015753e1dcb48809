"""A PostgreSQL server of one test's own, for tests that stop and start it.

Stopping the session's server (``postgres_server``) would break every other test using it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.postgres_server import PostgresServer


@contextmanager
def own_postgres_server() -> Iterator[PostgresServer]:
    """A fresh, started server (its own data directory and port), destroyed afterwards."""
    server = PostgresServer.create()
    try:
        server.start()
        yield server
    finally:
        server.destroy()
