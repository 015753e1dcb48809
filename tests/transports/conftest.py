"""Transport tests reuse the services' wiring (state, FAB store, clock, gRPC stubs).

``fleet_port`` serves the Fleet API of that wiring on a real loopback socket, for tests
that speak HTTP/2 themselves (``grpc/raw_h2.py``).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from superlink_async.services.fleet import FleetService
from superlink_async.state import IN_MEMORY_DATABASE
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.server import LeanServer
from superlink_async.transports.grpc.servicers import FleetServicer
from tests.logged import assert_no_traceback
from tests.ports import free_port
from tests.services.conftest import Link, link

__all__ = [
    "MAX_MESSAGE",
    "Link",
    "assert_no_traceback",
    "database",
    "fleet_port",
    "link",
    "serving_fleet",
]

#: The request size limit of the transports under test: small, so tests can exceed it.
MAX_MESSAGE = 4096


@pytest.fixture
def database() -> str:
    """The transports run over one backend; tests/services runs the behaviour over each."""
    return IN_MEMORY_DATABASE


@asynccontextmanager
async def serving_fleet(link: Link, **server_options: Any) -> AsyncIterator[int]:
    """Serve ``link``'s Fleet API from a ``LeanServer`` on 127.0.0.1; yields the port."""
    servicer = FleetServicer(
        FleetService(link.state, link.fabs, clock=link.clock), CallGate(MAX_MESSAGE)
    )
    server = LeanServer([servicer], **server_options)
    port = free_port()
    await server.start("127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def fleet_port(link: Link) -> AsyncIterator[int]:
    """The port of ``serving_fleet`` with the default options."""
    async with serving_fleet(link) as port:
        yield port
