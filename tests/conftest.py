"""Shared test configuration: every async test runs on asyncio through anyio's plugin."""

import logging
from collections.abc import Iterator

import pytest

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
