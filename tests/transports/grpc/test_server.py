"""The listeners: what a long-lived gRPC connection keeps, and how sockets are bound."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from contextlib import closing

import anyio
import pytest
from aiohttp import web
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.health.service import Health
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest
from grpclib.protocol import H2Protocol

from superlink_async.config import Address
from superlink_async.transports.grpc.server import (
    BULK,
    CLOSED_STREAMS_REMEMBERED,
    FLEET,
    LeanServer,
    MiB,
    serve_grpc,
)
from superlink_async.transports.http import serve_http
from tests.ports import free_port

pytestmark = pytest.mark.anyio

CALLS = 3 * CLOSED_STREAMS_REMEMBERED


async def test_a_busy_connection_keeps_no_finished_calls() -> None:
    """After many calls on one connection, no finished call and few closed streams remain.

    grpclib alone keeps up to ten finished calls per connection, h2 the last 65,536
    closed streams and a 64-slot deque per setting: for a fleet of idle SuperNodes, most
    of the server's memory. The calls keep working with settings held in lists.
    """
    port = free_port()
    server = LeanServer([Health()])
    protocols: list[H2Protocol] = []
    make_protocol = server._protocol_factory

    def recording_factory() -> H2Protocol:
        protocols.append(make_protocol())
        return protocols[-1]

    server._protocol_factory = recording_factory  # type: ignore[method-assign]
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
            await tasks.start(serve_http, web.Application(), address, "test listener")
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
    protocols: list[H2Protocol] = []
    reads: list[int] = []
    make_protocol = server._protocol_factory

    def recording_factory() -> H2Protocol:
        protocol = make_protocol()
        updated = protocol.buffer_updated  # type: ignore[attr-defined]

        def record(nbytes: int) -> None:
            reads.append(nbytes)
            updated(nbytes)

        protocol.buffer_updated = record  # type: ignore[attr-defined]
        protocols.append(protocol)
        return protocol

    server._protocol_factory = recording_factory  # type: ignore[method-assign]
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
    protocols: list[H2Protocol] = []
    make_protocol = server._protocol_factory

    def recording_factory() -> H2Protocol:
        protocols.append(make_protocol())
        return protocols[-1]

    server._protocol_factory = recording_factory  # type: ignore[method-assign]
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
