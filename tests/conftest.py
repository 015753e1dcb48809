"""Shared test configuration: every async test runs on asyncio through anyio's plugin."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from superlink_async.testing.balancer import BalancerUnavailableError, find_haproxy
from superlink_async.testing.postgres import PostgresServer, PostgresUnavailableError
from superlink_async.tls import CertificateFiles
from tests.certificates import make_certificates
from tests.logged import recorded


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--superlink-cmd",
        default=None,
        help="SuperLink command line for the e2e tests (default: python -m superlink_async; "
        "e.g. 'flower-superlink' for the reference). Also: $SUPERLINK_E2E_CMD.",
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """A test CA and a server certificate for 127.0.0.1 signed by it (made once, not committed)."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Everything our logger records during the test."""
    with recorded() as records:
        yield records


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's throwaway PostgreSQL server, started when a test first asks for it.

    No server here is one failure line saying what to install (pytest re-raises it for every
    later test that asks), never a skip.
    """
    try:
        server = PostgresServer.create()
    except PostgresUnavailableError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A ``postgresql://`` URL (with the password) of a new empty database, dropped after."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def haproxy() -> Path:
    """The HAProxy program that balances the replica tests' calls.

    Not installed here: one failure line saying how to install it (``make test`` installs it
    where it can), never a skip.
    """
    try:
        return find_haproxy()
    except BalancerUnavailableError as error:
        pytest.fail(str(error), pytrace=False)
