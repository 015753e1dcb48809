"""PostgreSQL stopped while a SuperLink serves: UNAVAILABLE, NOT_SERVING, nothing lost, recovery.

A real SuperLink (embedded, real sockets) on its own throwaway PostgreSQL server, which the
test stops and starts again on the same port and data: calls that need the database are
answered UNAVAILABLE with a message over gRPC and 503 over REST (never INTERNAL/UNKNOWN),
health on both says NOT_SERVING, and once the server is back the same SuperLink, never
restarted, serves what it had acknowledged before (an instruction, a FAB) by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import aiohttp
import anyio
import anyio.to_thread
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from superlink_async import SuperLink
from superlink_async.config import Address
from superlink_async.state.base import SUPERLINK_NODE_ID
from superlink_async.testing.postgres import PASSWORD, PostgresServer, running_postgres_server
from superlink_async.transports.rest import PROTOBUF
from superlink_async.wire import (
    exec_grpc,
    exec_pb2,
    fab_pb2,
    fleet_grpc,
    fleet_pb2,
    run_pb2,
    serverappio_grpc,
    serverappio_pb2,
)
from superlink_async.wire.fab_pb2 import Fab
from superlink_async.wire.message_pb2 import Message, Metadata
from superlink_async.wire.node_pb2 import Node
from superlink_async.wire.recorddict_pb2 import RecordDict
from tests.fabs import make_fab
from tests.logged import assert_no_traceback
from tests.node_keys import NodeKey
from tests.ports import loopback, loopback_config

pytestmark = pytest.mark.anyio

#: How long the SuperLink may take to notice the database is back (health is probed each second).
RECOVERY_SECONDS = 15.0


def channel(address: str) -> Channel:
    parsed = Address.parse(address)
    return Channel(parsed.host, parsed.port)


async def health(address: str) -> int:
    with closing(channel(address)) as open_channel:
        response = await HealthStub(open_channel).Check(HealthCheckRequest())
    return response.status


async def health_becomes(address: str, status: int) -> None:
    """Wait (bounded) until health on ``address`` says ``status`` (a result lives 1 s)."""
    with anyio.fail_after(RECOVERY_SECONDS):
        while True:
            if await health(address) == status:
                return
            await anyio.sleep(0.2)


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with running_postgres_server() as server:
        yield server


async def test_a_stopped_database_is_unavailable_then_served_again_without_a_restart(
    own_server: PostgresServer, tmp_path: Path, log_records: list[logging.LogRecord]
) -> None:
    fleet, rest, metrics = loopback(), loopback(), loopback()
    config = loopback_config(
        tmp_path,
        database=own_server.url(),
        fleet_api_type="grpc-rere,rest",
        fleet_api_address=f"{fleet},{rest}",
        metrics_address=metrics,
    )
    async with SuperLink(config):
        with (
            closing(channel(fleet)) as fleet_channel,
            closing(channel(config.exec_api_address)) as exec_channel,
            closing(channel(config.serverappio_api_address)) as appio_channel,
        ):
            nodes = fleet_grpc.FleetStub(fleet_channel)
            key = NodeKey()
            appio = serverappio_grpc.ServerAppIoStub(appio_channel)
            node_id = (
                await nodes.CreateNode(
                    fleet_pb2.CreateNodeRequest(ping_interval=3600.0),
                    metadata=key.metadata(time.time()),
                )
            ).node.node_id
            fab = make_fab()
            started = await exec_grpc.ExecStub(exec_channel).StartRun(
                exec_pb2.StartRunRequest(fab=Fab(content=fab))
            )
            run_id = started.run_id
            claimed = await appio.PullServerAppInputs(serverappio_pb2.PullServerAppInputsRequest())
            await appio.UpdateRunStatus(
                run_pb2.UpdateRunStatusRequest(
                    run_id=run_id, run_status=run_pb2.RunStatus(status="running")
                )
            )
            instruction = Message(
                metadata=Metadata(
                    run_id=run_id,
                    src_node_id=SUPERLINK_NODE_ID,
                    dst_node_id=node_id,
                    message_type="train",
                    ttl=3600.0,
                    created_at=time.time(),
                ),
                content=RecordDict(),
            )
            pushed = await appio.PushMessages(
                serverappio_pb2.PushInsMessagesRequest(run_id=run_id, messages_list=[instruction])
            )
            assert await health(fleet) == HealthCheckResponse.SERVING

            await anyio.to_thread.run_sync(own_server.stop)
            with pytest.raises(GRPCError) as refused:
                await nodes.PullMessages(
                    fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id)),
                    metadata=key.metadata(time.time()),
                )
            assert refused.value.status == Status.UNAVAILABLE
            assert "PostgreSQL" in (refused.value.message or "")
            assert PASSWORD not in (refused.value.message or "")
            await health_becomes(fleet, HealthCheckResponse.NOT_SERVING)
            await health_becomes(config.exec_api_address, HealthCheckResponse.NOT_SERVING)
            async with aiohttp.ClientSession(f"http://{rest}") as client:
                assert (await client.get("/health")).status == 503
                body = fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id))
                response = await client.post(
                    "/api/v0/fleet/pull-messages",
                    data=body.SerializeToString(),
                    headers={"Content-Type": PROTOBUF, "Accept": PROTOBUF},
                )
                assert response.status == 503
                assert "PostgreSQL" in await response.text()
                scrape = await client.get(f"http://{metrics}/metrics")
                assert scrape.status == 200
                exposition = await scrape.text()
                assert 'method="PullMessages"' in exposition
                assert 'code="StateUnavailableError",method="PullMessages"' in exposition
                assert PASSWORD not in exposition

                await anyio.to_thread.run_sync(own_server.start)
                await health_becomes(fleet, HealthCheckResponse.SERVING)
                assert (await client.get("/health")).status == 200

            pulled = await nodes.PullMessages(
                fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id)),
                metadata=key.metadata(time.time()),
            )
            assert [m.metadata.message_id for m in pulled.messages_list] == list(pushed.message_ids)
            got = await nodes.GetFab(
                fab_pb2.GetFabRequest(
                    node=Node(node_id=node_id), hash_str=claimed.fab.hash_str, run_id=run_id
                ),
                metadata=key.metadata(time.time()),
            )
            assert got.fab.content == fab
    assert_no_traceback(log_records)
    assert not any(PASSWORD in record.getMessage() for record in log_records)
