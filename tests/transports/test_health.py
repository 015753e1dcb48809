"""Health: grpc.health.v1 on every gRPC port and GET /health on REST, driven by one probe."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.testing import ChannelFor

from superlink_async import SuperLink
from superlink_async.config import Address
from superlink_async.services.fleet import FleetService
from superlink_async.state import open_state
from superlink_async.state.fab_store import DirectoryFabStore
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.servicers import FleetServicer
from superlink_async.transports.health import PROBE_TTL, HealthProbe
from superlink_async.transports.rest import fleet_rest_app
from tests.ports import loopback, loopback_config

pytestmark = pytest.mark.anyio

SERVING = HealthCheckResponse.SERVING
NOT_SERVING = HealthCheckResponse.NOT_SERVING


async def check(address: str, service: str = "") -> int:
    parsed = Address.parse(address)
    with closing(Channel(parsed.host, parsed.port)) as channel:
        response = await HealthStub(channel).Check(HealthCheckRequest(service=service))
    return response.status


async def test_every_grpc_port_answers_serving_without_node_auth(tmp_path: Path) -> None:
    fleet, adapter = loopback(), loopback()
    config = loopback_config(
        tmp_path, fleet_api_type="grpc-rere,grpc-adapter", fleet_api_address=f"{fleet},{adapter}"
    )
    async with SuperLink(config):
        for address in (config.exec_api_address, config.serverappio_api_address, fleet, adapter):
            assert await check(address) == SERVING
        assert await check(fleet, "flwr.proto.Fleet") == SERVING
        assert await check(config.exec_api_address, "flwr.proto.Exec") == SERVING


async def test_draining_or_a_dead_store_is_not_serving(tmp_path: Path) -> None:
    gate = CallGate()
    async with open_state(":flwr-in-memory-state:") as state:
        probe = HealthProbe(state, gate)
        servicer = FleetServicer(FleetService(state, DirectoryFabStore(tmp_path)), gate)
        async with ChannelFor([servicer, probe.grpc_service([servicer])]) as channel:
            stub = HealthStub(channel)
            assert (await stub.Check(HealthCheckRequest())).status == SERVING
            await gate.drain(0)
            assert not await probe.healthy()
            await anyio.sleep(PROBE_TTL + 0.1)  # the service reuses a result this long
            assert (await stub.Check(HealthCheckRequest())).status == NOT_SERVING
    closed = HealthProbe(state, CallGate())
    assert not await closed.healthy()


async def test_rest_health_follows_the_probe(tmp_path: Path) -> None:
    gate = CallGate()
    async with open_state(":flwr-in-memory-state:") as state:
        probe = HealthProbe(state, gate)
        app = fleet_rest_app(FleetService(state, DirectoryFabStore(tmp_path)), gate, probe.healthy)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/health")
            assert (response.status, await response.text()) == (200, "SERVING")
            await gate.drain(0)
            response = await client.get("/health")
            assert (response.status, await response.text()) == (503, "NOT_SERVING")
