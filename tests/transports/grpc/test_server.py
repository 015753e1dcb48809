"""The listeners: what a long-lived gRPC connection keeps, how sockets are bound, and what
hostile HTTP/2 peers get (over real sockets, through ``raw_h2``)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from functools import partial

import aiohttp
import anyio
import pytest
from aiohttp import web
from anyio.abc import TaskStatus
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.health.service import Health
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest
from grpclib.metadata import decode_metadata
from grpclib.protocol import H2Protocol
from h2.errors import ErrorCodes
from hypothesis import given, settings
from hypothesis import strategies as st

from superlink_async.config import Address
from superlink_async.loop_lag import LoopLag
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.server import (
    BULK,
    CLOSED_STREAMS_REMEMBERED,
    FLEET,
    LeanServer,
    MiB,
    _undecodable_metadata,
    serve_grpc,
)
from superlink_async.transports.http import serve_http
from superlink_async.wire import fleet_pb2
from tests.ports import free_port
from tests.transports.conftest import Link, assert_no_traceback, serving_fleet
from tests.transports.grpc.raw_h2 import PREFACE, Header, grpc_frame, raw_connection

pytestmark = pytest.mark.anyio

CALLS = 3 * CLOSED_STREAMS_REMEMBERED


def record_protocols(
    server: LeanServer, on_new: Callable[[H2Protocol], None] | None = None
) -> list[H2Protocol]:
    """Every connection's protocol that ``server`` makes from now on, to look behind it."""
    protocols: list[H2Protocol] = []
    make_protocol = server._protocol_factory

    def recording_factory() -> H2Protocol:
        protocols.append(make_protocol())
        if on_new is not None:
            on_new(protocols[-1])
        return protocols[-1]

    server._protocol_factory = recording_factory  # type: ignore[method-assign]
    return protocols


PING = "/flwr.proto.Fleet/Ping"


async def test_a_busy_connection_keeps_no_finished_calls() -> None:
    """After many calls on one connection, no finished call and few closed streams remain.

    grpclib alone keeps up to ten finished calls per connection, h2 the last 65,536
    closed streams and a 64-slot deque per setting: for a fleet of idle SuperNodes, most
    of the server's memory. The calls keep working with settings held in lists.
    """
    port = free_port()
    server = LeanServer([Health()])
    protocols = record_protocols(server)
    await server.start("127.0.0.1", port)
    try:
        with closing(Channel("127.0.0.1", port)) as channel:
            stub = HealthStub(channel)
            for _ in range(CALLS):
                await stub.Check(HealthCheckRequest())
            await anyio.sleep(0.05)  # the last call's task ends just after its response
            (handler,) = server._handlers
            assert handler._tasks == {}
            (protocol,) = protocols
            h2_connection = protocol.connection._connection
            assert len(h2_connection._closed_streams) == CLOSED_STREAMS_REMEMBERED
            assert not isinstance(h2_connection._frame_dispatch_table, dict)
            assert not isinstance(protocol.processor.processors, dict)
            assert isinstance(protocol.connection.write_ready._waiters, list)
            for settings in (h2_connection.local_settings, h2_connection.remote_settings):
                assert not any(isinstance(values, deque) for values in settings._settings.values())
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("listener", ["grpc", "rest"])
async def test_the_listener_queues_a_fleet_connecting_at_once(listener: str) -> None:
    """Connections arriving faster than the loop accepts wait in the kernel, none dropped.

    asyncio's default backlog of 100 drops the SYNs beyond it, and a dropped SuperNode
    only retries a second later (then 3, 7, 15 s): long enough for its signed timestamp
    to expire. The 300 connects below happen while the loop cannot accept any.
    """
    port = free_port()
    async with anyio.create_task_group() as tasks:
        address = Address("127.0.0.1", port)
        if listener == "grpc":
            await tasks.start(serve_grpc, [Health()], address, "test listener")
        else:
            serve = partial(serve_http, shutdown_timeout=0.25)
            await tasks.start(serve, web.Application(), address, "test listener")
        clients = [socket.socket() for _ in range(300)]
        try:
            for client in clients:
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", port))
            await anyio.sleep(0.3)  # well before the kernel's first SYN retry (1 s)
            connected = [
                client
                for client in clients
                if client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _has_peer(client)
            ]
            assert len(connected) == len(clients)
        finally:
            for client in clients:
                client.close()
        tasks.cancel_scope.cancel()


def _has_peer(client: socket.socket) -> bool:
    try:
        client.getpeername()
    except OSError:
        return False
    return True


async def test_bulk_connections_read_large_chunks_through_wide_windows() -> None:
    """ServerAppIo and Exec connections (BULK) take a large message in few turns of the loop.

    A busy loop gives each socket one read per iteration: with asyncio's 256 KiB reads
    and grpclib's 4 MiB windows a 100 MB push needed hundreds of iterations to arrive.
    """
    port = free_port()
    server = LeanServer([Health()], BULK)
    reads: list[int] = []

    def record_reads(protocol: H2Protocol) -> None:
        updated = protocol.buffer_updated  # type: ignore[attr-defined]

        def record(nbytes: int) -> None:
            reads.append(nbytes)
            updated(nbytes)

        protocol.buffer_updated = record  # type: ignore[attr-defined]

    protocols = record_protocols(server, record_reads)
    await server.start("127.0.0.1", port)
    try:
        with closing(Channel("127.0.0.1", port)) as channel:
            stub = HealthStub(channel)
            with pytest.raises(GRPCError) as raised:  # an unknown service: read whole, then refused
                await stub.Check(HealthCheckRequest(service="x" * (20 * MiB)))
            assert raised.value.status == Status.NOT_FOUND
            (protocol,) = protocols
            assert isinstance(protocol, asyncio.BufferedProtocol)
            h2_connection = protocol.connection._connection
            assert h2_connection.local_settings.initial_window_size == BULK.window_bytes
            assert h2_connection.inbound_flow_control_window >= BULK.window_bytes // 2
            transport = protocol.connection._transport
            assert transport.get_write_buffer_limits()[1] == BULK.write_buffer_bytes
            assert max(reads) > 256 * 1024  # asyncio's own read size
            assert sum(reads) > 20 * MiB
    finally:
        server.close()
        await server.wait_closed()


async def test_fleet_connections_keep_the_defaults_of_many_small_calls() -> None:
    port = free_port()
    server = LeanServer([Health()], FLEET)
    protocols = record_protocols(server)
    await server.start("127.0.0.1", port)
    try:
        with closing(Channel("127.0.0.1", port)) as channel:
            await HealthStub(channel).Check(HealthCheckRequest())
            (protocol,) = protocols
            assert not isinstance(protocol, asyncio.BufferedProtocol)
            h2_connection = protocol.connection._connection
            assert h2_connection.local_settings.initial_window_size == FLEET.window_bytes
    finally:
        server.close()
        await server.wait_closed()


async def test_undecodable_binary_metadata_is_invalid_argument_at_once(
    fleet_port: int, log_records: list[logging.LogRecord]
) -> None:
    """A ``-bin`` header that is not base64 gets INVALID_ARGUMENT, call after call.

    grpclib left such a call unanswered (the client waited for its deadline), log_records a
    traceback for it and, after about ten, lost the connection. The connection serves a
    well-formed call afterwards.
    """
    ping = grpc_frame(fleet_pb2.PingRequest(ping_interval=30).SerializeToString())
    async with raw_connection(fleet_port) as client:
        for value in ["A", "AAAAA", "AAAA=A"]:
            for _ in range(5):
                answer = await client.call(PING, ping, [("flwr-public-key-bin", value)])
                assert answer.grpc_status == Status.INVALID_ARGUMENT.value
                assert answer.grpc_message == "Metadata flwr-public-key-bin is not valid base64"
        well_formed = await client.call(PING, ping, [("flwr-public-key-bin", "AAAA")])
    assert well_formed.grpc_status is not None
    assert well_formed.grpc_status != Status.INVALID_ARGUMENT.value
    assert_no_traceback(log_records)


@pytest.mark.parametrize(
    "header",
    [("x-name", "caf\xe9".encode("latin-1")), ("x-n\xe4me".encode("latin-1"), "v"), ("x", b"\xff")],
)
async def test_a_header_that_is_not_ascii_resets_its_stream_only(
    fleet_port: int, log_records: list[logging.LogRecord], header: Header
) -> None:
    """Non-ASCII header bytes get RST_STREAM PROTOCOL_ERROR; the connection goes on serving.

    h2 raised the ``UnicodeDecodeError`` out of grpclib, and asyncio log_records it as a fatal
    error with a traceback before dropping the connection without a word.
    """
    async with raw_connection(fleet_port) as client:
        for _ in range(3):
            answer = await client.call(PING, grpc_frame(b""), [header])
            assert answer.reset_code == ErrorCodes.PROTOCOL_ERROR
            assert answer.grpc_status is None
        assert (await client.call(PING, b"")).grpc_status == Status.INVALID_ARGUMENT.value
        assert not client.closed_by_server
    assert_no_traceback(log_records)


@pytest.mark.parametrize(
    ("garbage", "goaway"),
    [
        # SETTINGS of 5 bytes (settings take 6 each)
        (
            PREFACE + b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"\0" * 5,
            ErrorCodes.FRAME_SIZE_ERROR,
        ),
        # GOAWAY on stream 1 (it belongs to stream 0)
        (PREFACE + b"\x00\x00\x08\x07\x00\x00\x00\x00\x01" + b"\0" * 8, ErrorCodes.PROTOCOL_ERROR),
        # not HTTP/2 at all: there is no connection to send a GOAWAY on
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", None),
    ],
)
async def test_a_protocol_error_closes_the_connection_with_a_goaway(
    fleet_port: int, log_records: list[logging.LogRecord], garbage: bytes, goaway: ErrorCodes | None
) -> None:
    """Bytes h2 refuses get the GOAWAY h2 prepared and a closed connection, at once.

    grpclib closed such connections without sending the GOAWAY.
    """
    async with raw_connection(fleet_port, handshake=False) as client:
        await client.send_raw(garbage)
        assert await client.wait_closed() == goaway
    assert_no_traceback(log_records)


async def test_a_frame_of_an_unknown_type_is_ignored(
    fleet_port: int, log_records: list[logging.LogRecord]
) -> None:
    """HTTP/2 says to ignore unknown frame types; grpclib raised NotImplementedError for them.

    asyncio log_records that as a fatal error with a traceback and dropped the connection.
    """
    async with raw_connection(fleet_port) as client:
        await client.send_raw(b"\x00\x00\x04\xff\x00\x00\x00\x00\x00" + b"junk")
        assert (await client.call(PING, b"")).grpc_status == Status.INVALID_ARGUMENT.value
    assert_no_traceback(log_records)


@pytest.fixture
async def impatient_port(link: Link) -> AsyncIterator[int]:
    """A Fleet server closing connections that have not completed the handshake in 0.2 s."""
    async with serving_fleet(link, handshake_timeout=0.2) as port:
        yield port


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # nothing at all
        b"PRI * HTTP",  # part of the preface
        PREFACE,  # the preface, no SETTINGS
        PREFACE + b"\x00\x10\x00garbage",  # a frame header promising 4 KB that never come
        PREFACE + b"\x00\x00\x04\xff\x00\x00\x00\x00\x00junk",  # a frame of unknown type only
        PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",  # SETTINGS, ours never acknowledged
    ],
)
async def test_a_connection_without_a_handshake_is_closed_after_the_timeout(
    impatient_port: int, log_records: list[logging.LogRecord], sent: bytes
) -> None:
    """Sockets that never complete the HTTP/2 handshake do not hold a descriptor forever.

    Before, 20 of 20 such sockets were still open after 42 s. They get GOAWAY
    SETTINGS_TIMEOUT, then the connection closes.
    """
    async with raw_connection(impatient_port, handshake=False) as client:
        await client.send_raw(sent)
        assert await client.wait_closed() == ErrorCodes.SETTINGS_TIMEOUT
    assert_no_traceback(log_records)


async def test_a_connection_past_the_handshake_stays_open_while_idle(impatient_port: int) -> None:
    """The handshake timeout ends with the handshake: idle SuperNodes keep their connection."""
    async with raw_connection(impatient_port) as client:
        assert (await client.call(PING, b"")).grpc_status == Status.INVALID_ARGUMENT.value
        await anyio.sleep(0.5)  # well past the 0.2 s handshake timeout
        assert (await client.call(PING, b"")).grpc_status == Status.INVALID_ARGUMENT.value
        assert not client.closed_by_server


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [":path", "te", "x", "x-bin", "grpc-x-bin", "flwr-public-key-bin", "a-bin-b"]
            ),
            st.text(alphabet="AZaz09+/=!- ", max_size=9),
        ),
        max_size=4,
    )
)
def test_undecodable_metadata_is_exactly_what_grpclib_cannot_decode(
    headers: list[tuple[str, str]],
) -> None:
    """Pins grpclib's rule (which keys it base64-decodes, and how) that the handler mirrors."""
    try:
        decode_metadata(headers)
    except ValueError:
        decodable = False
    else:
        decodable = True
    assert (_undecodable_metadata(headers) is None) == decodable


def late_gate() -> CallGate:
    """A gate whose loop counts as late, so that uploads hold the fleet."""
    gate = CallGate(lag=LoopLag())
    gate.lag.level = 1.0
    return gate


async def test_a_large_upload_holds_the_fleet_until_its_call_has_answered() -> None:
    """While a bulk call's body arrives at a late loop, the Fleet connections are not read;
    they are read again once that call has answered, not already when its body is in."""
    gate = late_gate()
    bulk, fleet = LeanServer([Health()], BULK), LeanServer([Health()], FLEET)
    fleet_protocols = record_protocols(fleet)
    at_reads: list[tuple[bool, bool]] = []  # (held, a fleet connection read) after each read

    def record_holds(protocol: H2Protocol) -> None:
        updated = protocol.buffer_updated  # type: ignore[attr-defined]

        def record(nbytes: int) -> None:
            updated(nbytes)
            fleet_transport = fleet_protocols[0].connection._transport
            at_reads.append((gate.precedence.held, fleet_transport.is_reading()))

        protocol.buffer_updated = record  # type: ignore[attr-defined]

    record_protocols(bulk, record_holds)
    bulk_port, fleet_port = free_port(), free_port()
    await bulk.listen(Address("127.0.0.1", bulk_port), gate)
    await fleet.listen(Address("127.0.0.1", fleet_port), gate)
    try:
        with (
            closing(Channel("127.0.0.1", fleet_port)) as fleet_channel,
            closing(Channel("127.0.0.1", bulk_port)) as bulk_channel,
        ):
            await HealthStub(fleet_channel).Check(HealthCheckRequest())
            with pytest.raises(GRPCError):  # an unknown service: read whole, then refused
                await HealthStub(bulk_channel).Check(HealthCheckRequest(service="x" * (20 * MiB)))
            assert (True, False) in at_reads
            assert at_reads[-1] == (True, False)  # the body is in; the answer is not out yet
            assert not gate.precedence.held
            assert fleet_protocols[0].connection._transport.is_reading()
            await HealthStub(fleet_channel).Check(HealthCheckRequest())
    finally:
        for server in (bulk, fleet):
            server.close()
            await server.wait_closed()


async def _health_over_grpc(port: int) -> None:
    with closing(Channel("127.0.0.1", port)) as channel:
        await HealthStub(channel).Check(HealthCheckRequest())


async def _health_over_rest(port: int) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/health") as response,
    ):
        assert response.status == 200


async def _serve_health_over_rest(
    address: Address, gate: CallGate, yields: bool, *, task_status: TaskStatus[None]
) -> None:
    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    serve = partial(serve_http, shutdown_timeout=0.25, yields=yields)
    await serve(app, address, "test listener", None, gate, task_status=task_status)


@pytest.mark.parametrize(
    ("transport", "fleet"),
    [("grpc", True), ("grpc", False), ("rest", True), ("rest", False)],
    ids=["grpc-fleet", "grpc-bulk", "rest-fleet", "rest-metrics"],
)
async def test_during_a_hold_only_fleet_listeners_wait(transport: str, fleet: bool) -> None:
    """A call to a Fleet listener (gRPC or REST) is answered once the hold ends; a bulk or
    metrics listener is served all along."""
    gate = late_gate()
    address = Address("127.0.0.1", free_port())
    call = _health_over_grpc if transport == "grpc" else _health_over_rest
    async with anyio.create_task_group() as tasks:
        if transport == "grpc":
            serve = partial(serve_grpc, profile=FLEET if fleet else BULK)
            await tasks.start(serve, [Health()], address, "test listener", None, gate)
        else:
            await tasks.start(_serve_health_over_rest, address, gate, fleet)
        gate.precedence.hold(upload := object())
        answered = anyio.Event()

        async def call_and_note() -> None:
            await call(address.port)
            answered.set()

        tasks.start_soon(call_and_note)
        with anyio.move_on_after(0.5):
            await answered.wait()
        assert answered.is_set() is not fleet
        gate.precedence.release(upload)
        with anyio.fail_after(5):
            await answered.wait()
        tasks.cancel_scope.cancel()
