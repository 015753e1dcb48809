"""A request message cut short, read off a real socket: INVALID_ARGUMENT, never INTERNAL.

Clients send these without authentication; grpclib's buffer asserts on a short read, which
used to reach clients as ``INTERNAL: Internal error: AssertionError`` with a traceback per
call in the log.
"""

from __future__ import annotations

import logging

import pytest
from grpclib import Status
from grpclib.protocol import Buffer

from tests.transports.conftest import assert_no_traceback
from tests.transports.grpc.raw_h2 import grpc_frame, raw_connection

pytestmark = pytest.mark.anyio

PING = "/flwr.proto.Fleet/Ping"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "Missing request message"),
        (b"\0", "Truncated request message"),
        (b"\0\0\0\0", "Truncated request message"),
        (b"\0\0\0\0\x10abc", "Truncated request message"),
        (grpc_frame(b"\x09" + b"\0" * 8)[:-1], "Truncated request message"),
    ],
)
async def test_a_short_request_is_invalid_argument_and_logs_no_traceback(
    fleet_port: int, log_records: list[logging.LogRecord], body: bytes, message: str
) -> None:
    """A message shorter than its prefix (or a partial prefix) ends the call, not the link."""
    async with raw_connection(fleet_port) as client:
        answer = await client.call(PING, body)
        assert (answer.grpc_status, answer.grpc_message) == (
            Status.INVALID_ARGUMENT.value,
            message,
        )
        # the connection still serves calls
        again = await client.call(PING, b"")
        assert again.grpc_status == Status.INVALID_ARGUMENT.value
    assert_no_traceback(log_records)


async def test_grpclibs_buffer_still_asserts_on_a_short_read() -> None:
    """Pins the grpclib behaviour ``_internals.grpclib.read_body`` turns into ``TruncatedError``."""
    buffer = Buffer(lambda _: None)
    buffer.add(b"abc", 3)
    buffer.eof()
    with pytest.raises(AssertionError):
        await buffer.read(5)
