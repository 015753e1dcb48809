"""GrpcAdapter: Fleet calls wrapped in MessageContainer, answered as a 1.18.0 client expects."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.message import Message as ProtoMessage
from grpclib import GRPCError, Status
from grpclib.testing import ChannelFor

from superlink_async.services.fleet import FleetService
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.adapter import GrpcAdapterServicer
from superlink_async.wire import fleet_pb2, grpcadapter_grpc, run_pb2
from superlink_async.wire.grpcadapter_pb2 import MessageContainer
from superlink_async.wire.node_pb2 import Node
from tests.services.conftest import Link

pytestmark = pytest.mark.anyio


@pytest.fixture
async def adapter(link: Link) -> AsyncIterator[grpcadapter_grpc.GrpcAdapterStub]:
    servicer = GrpcAdapterServicer(
        FleetService(link.state, link.fabs, clock=link.clock), CallGate()
    )
    async with ChannelFor([servicer]) as channel:
        yield grpcadapter_grpc.GrpcAdapterStub(channel)


def wrap(request: ProtoMessage) -> MessageContainer:
    return MessageContainer(
        grpc_message_name=type(request).__name__,
        grpc_message_content=request.SerializeToString(),
    )


async def test_create_node_answers_with_the_reference_metadata(
    adapter: grpcadapter_grpc.GrpcAdapterStub, link: Link
) -> None:
    reply = await adapter.SendReceive(wrap(fleet_pb2.CreateNodeRequest(ping_interval=30)))
    assert reply.grpc_message_name == "CreateNodeResponse"
    assert dict(reply.metadata) == {
        "flower-package-name": "flwr",
        "flower-package-version": "1.18.0",
        "flower-version": "1.18.0",
        "grpc-message-module": "flwr.proto.fleet_pb2",
        "grpc-message-qualname": "CreateNodeResponse",
    }
    node_id = fleet_pb2.CreateNodeResponse.FromString(reply.grpc_message_content).node.node_id
    assert await link.state.get_online_nodes() == [node_id]


async def test_get_run_reply_names_the_run_module(
    adapter: grpcadapter_grpc.GrpcAdapterStub,
) -> None:
    reply = await adapter.SendReceive(wrap(run_pb2.GetRunRequest(run_id=5)))
    assert reply.metadata["grpc-message-module"] == "flwr.proto.run_pb2"
    assert not run_pb2.GetRunResponse.FromString(reply.grpc_message_content).HasField("run")


async def test_ping_of_an_unknown_node_is_not_an_error(
    adapter: grpcadapter_grpc.GrpcAdapterStub,
) -> None:
    reply = await adapter.SendReceive(
        wrap(fleet_pb2.PingRequest(node=Node(node_id=9), ping_interval=30.0))
    )
    assert not fleet_pb2.PingResponse.FromString(reply.grpc_message_content).success


async def test_service_errors_become_the_call_status(
    adapter: grpcadapter_grpc.GrpcAdapterStub, link: Link
) -> None:
    run_id = await link.start_run()
    with pytest.raises(GRPCError) as error:
        await adapter.SendReceive(wrap(run_pb2.GetRunRequest(run_id=run_id)))
    assert (error.value.status, error.value.message) == (
        Status.PERMISSION_DENIED,
        "Run is pending.",
    )


@pytest.mark.parametrize(
    ("container", "message"),
    [
        (MessageContainer(grpc_message_name="Nope"), "Invalid grpc_message_name: Nope"),
        (
            MessageContainer(grpc_message_name="PingRequest", grpc_message_content=b"\xff\xff"),
            "Malformed PingRequest",
        ),
    ],
)
async def test_bad_containers_are_invalid_argument(
    adapter: grpcadapter_grpc.GrpcAdapterStub, container: MessageContainer, message: str
) -> None:
    with pytest.raises(GRPCError) as error:
        await adapter.SendReceive(container)
    assert (error.value.status, error.value.message) == (Status.INVALID_ARGUMENT, message)
