"""Transport tests reuse the services' wiring (state, FAB store, clock, gRPC stubs).

``fleet_port`` serves the Fleet API of that wiring on a real loopback socket, for tests
that speak HTTP/2 themselves (``grpc/raw_h2.py``).
"""

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from superlink_async.logs import logger
from superlink_async.services.fleet import FleetService
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.server import LeanServer
from superlink_async.transports.grpc.servicers import FleetServicer
from tests.ports import free_port
from tests.services.conftest import Clock, Link, link

__all__ = [
    "MAX_MESSAGE",
    "Clock",
    "Link",
    "assert_no_traceback",
    "fleet_port",
    "link",
    "logged",
    "serving_fleet",
]

#: The request size limit of the transports under test: small, so tests can exceed it.
MAX_MESSAGE = 4096


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


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """Every record, down to DEBUG, that we or the libraries under us log during the test.

    Ours is recorded on its own logger too: ``configure_logging`` stops it propagating.
    """
    recorder = _Recorder()
    watched = [logging.getLogger(), logger]
    levels = [each.level for each in watched]
    for each in watched:
        each.addHandler(recorder)
        each.setLevel(logging.DEBUG)
    try:
        yield recorder.records
    finally:
        for each, level in zip(watched, levels, strict=True):
            each.removeHandler(recorder)
            each.setLevel(level)


def assert_no_traceback(records: list[logging.LogRecord]) -> None:
    """No record carries a traceback: what a client sent is never logged as our failure."""
    with_traceback = [
        f"{record.name}: {record.getMessage()}"
        for record in records
        if record.exc_info or "Traceback" in record.getMessage()
    ]
    assert not with_traceback, with_traceback
