"""Fleet over REST: routes, the reference's header checks, HTTP codes, and bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from superlink_async.services.fleet import FleetService
from superlink_async.transports.fleet_calls import FLEET_CALLS
from superlink_async.transports.gate import CallGate
from superlink_async.transports.rest import PROTOBUF, ROUTES, fleet_rest_app
from superlink_async.wire import exec_pb2, fleet_pb2, run_pb2, serverappio_pb2
from superlink_async.wire.node_pb2 import Node
from tests.services.conftest import Link

pytestmark = pytest.mark.anyio

HEADERS = {"Content-Type": PROTOBUF, "Accept": PROTOBUF}
MAX_BODY = 64 * 1024


@pytest.fixture
async def client(link: Link) -> AsyncIterator[TestClient[Any, Any]]:
    gate = CallGate(max_message_bytes=MAX_BODY)
    app = fleet_rest_app(FleetService(link.state, link.fabs, clock=link.clock), gate)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def post_raw_path(client: TestClient[Any, Any], path: str, body: bytes) -> ClientResponse:
    """POST to ``path`` exactly as written (``//api/...`` would otherwise read as a host)."""
    base = str(client.make_url("/")).rstrip("/")
    return await client.session.post(base + path, data=body, headers=HEADERS)


async def create_node(client: TestClient[Any, Any]) -> int:
    body = fleet_pb2.CreateNodeRequest(ping_interval=30).SerializeToString()
    response = await client.post("/api/v0/fleet/create-node", data=body, headers=HEADERS)
    assert response.status == 200
    assert response.headers["Content-Type"] == PROTOBUF
    return fleet_pb2.CreateNodeResponse.FromString(await response.read()).node.node_id


async def test_create_node_and_ping_round_trip(client: TestClient[Any, Any], link: Link) -> None:
    node_id = await create_node(client)
    assert await link.state.get_online_nodes() == [node_id]
    ping = fleet_pb2.PingRequest(node=Node(node_id=node_id), ping_interval=30)
    response = await client.post(
        "/api/v0/fleet/ping", data=ping.SerializeToString(), headers=HEADERS
    )
    assert fleet_pb2.PingResponse.FromString(await response.read()).success


async def test_double_slash_paths_of_the_1_18_supernode_are_served(
    client: TestClient[Any, Any], link: Link
) -> None:
    """The 1.18.0 REST SuperNode asks for //api/v0/fleet/pull-messages; the reference 404s."""
    node_id = await create_node(client)
    run_id = await link.running_run()
    instruction = link.instruction(run_id, node_id)
    await link.serverappio.PushMessages(
        serverappio_pb2.PushInsMessagesRequest(run_id=run_id, messages_list=[instruction])
    )
    pull = fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id)).SerializeToString()
    response = await post_raw_path(client, "//api/v0/fleet/pull-messages", pull)
    assert response.status == 200
    pulled = fleet_pb2.PullMessagesResponse.FromString(await response.read())
    assert len(pulled.messages_list) == 1


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        ({"Accept": PROTOBUF}, "Missing header `Content-Type`"),
        ({"Content-Type": "application/json", "Accept": PROTOBUF}, "Unsupported `Content-Type`"),
        ({"Content-Type": PROTOBUF}, "Missing header `Accept`"),
        ({"Content-Type": PROTOBUF, "Accept": "*/*"}, "Unsupported `Accept`"),
    ],
)
async def test_header_checks_answer_400_with_the_reference_texts(
    client: TestClient[Any, Any], headers: dict[str, str], text: str
) -> None:
    response = await client.post(
        "/api/v0/fleet/ping",
        data=b"",
        headers=headers,
        skip_auto_headers=["Content-Type", "Accept"],
    )
    assert (response.status, await response.text()) == (400, text)


async def test_unknown_routes_and_methods(client: TestClient[Any, Any]) -> None:
    assert (await client.post("/api/v0/fleet/nope", headers=HEADERS)).status == 404
    assert (await client.post("/elsewhere", headers=HEADERS)).status == 404
    response = await client.get("/api/v0/fleet/ping")
    assert (response.status, await response.text()) == (405, "Method Not Allowed")


async def test_garbage_body_is_400_and_changes_nothing(
    client: TestClient[Any, Any], link: Link
) -> None:
    node_id = await create_node(client)
    response = await client.post("/api/v0/fleet/delete-node", data=b"\xff\xff\xff", headers=HEADERS)
    assert response.status == 400
    assert await link.state.node_exists(node_id)


async def test_a_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    response = await client.post(
        "/api/v0/fleet/push-messages", data=b"\0" * (MAX_BODY + 1), headers=HEADERS
    )
    assert response.status == 413


async def test_run_not_running_is_403_with_the_grpc_text(
    client: TestClient[Any, Any], link: Link
) -> None:
    run_id = await link.start_run()
    body = run_pb2.GetRunRequest(run_id=run_id).SerializeToString()
    response = await post_raw_path(client, "//api/v0/fleet/get-run", body)
    assert (response.status, await response.text()) == (403, "Run is pending.")
    await link.exec.StopRun(exec_pb2.StopRunRequest(run_id=run_id))
    response = await post_raw_path(client, "//api/v0/fleet/get-run", body)
    assert await response.text() == "Run is finished. Stopped by user."


async def test_unknown_node_delete_is_404(client: TestClient[Any, Any]) -> None:
    body = fleet_pb2.DeleteNodeRequest(node=Node(node_id=77)).SerializeToString()
    response = await client.post("/api/v0/fleet/delete-node", data=body, headers=HEADERS)
    assert (response.status, await response.text()) == (404, "Node 77 not found")


async def test_draining_answers_503(link: Link) -> None:
    gate = CallGate()
    await gate.drain(0)
    app = fleet_rest_app(FleetService(link.state, link.fabs), gate)
    async with TestClient(TestServer(app)) as draining:
        body = fleet_pb2.CreateNodeRequest(ping_interval=30).SerializeToString()
        response = await draining.post("/api/v0/fleet/create-node", data=body, headers=HEADERS)
    assert response.status == 503


def test_every_route_has_a_fleet_call() -> None:
    assert set(ROUTES.values()) == set(FLEET_CALLS)
