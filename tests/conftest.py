"""Shared test configuration: every async test runs on asyncio through anyio's plugin."""

import pytest


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
