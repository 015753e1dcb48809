"""grpcio clients of the three SuperLink APIs, typed with the 1.18.0 wire messages.

grpcio's C-core does the HTTP/2 work outside the interpreter, which keeps the generator
cheaper than the Python servers it measures. The message classes are ours; their
descriptors are byte-identical to flwr 1.18.0's, so this is the real wire protocol.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message as ProtoMessage

from superlink_async.wire import (
    exec_pb2,
    fab_pb2,
    fleet_pb2,
    run_pb2,
    serverappio_pb2,
)

#: What every 1.18.0 client sets: 2 GiB - 1 in both directions.
MAX_MESSAGE_LENGTH = 2_147_483_647

Request = TypeVar("Request", bound=ProtoMessage)
Response = TypeVar("Response", bound=ProtoMessage)


def open_channel(address: str, *, own_connection: bool) -> grpc.aio.Channel:
    """A plaintext channel; ``own_connection`` gives it a TCP connection of its own.

    grpcio shares one connection between channels with equal arguments (the global
    subchannel pool); a real SuperNode is a process of its own, so it has its own.
    """
    options: list[tuple[str, int]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
        ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
    ]
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.insecure_channel(address, options=options)


def _unary(
    channel: grpc.aio.Channel, path: str, request: type[Request], response: type[Response]
) -> grpc.aio.UnaryUnaryMultiCallable[Request, Response]:
    return channel.unary_unary(
        path,
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )


class FleetStub:
    """The Fleet calls a SuperNode makes (``DeleteNode`` is left out: nodes are dropped)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        prefix = "/flwr.proto.Fleet/"
        self.create_node = _unary(
            channel,
            prefix + "CreateNode",
            fleet_pb2.CreateNodeRequest,
            fleet_pb2.CreateNodeResponse,
        )
        self.ping = _unary(channel, prefix + "Ping", fleet_pb2.PingRequest, fleet_pb2.PingResponse)
        self.pull_messages = _unary(
            channel,
            prefix + "PullMessages",
            fleet_pb2.PullMessagesRequest,
            fleet_pb2.PullMessagesResponse,
        )
        self.push_messages = _unary(
            channel,
            prefix + "PushMessages",
            fleet_pb2.PushMessagesRequest,
            fleet_pb2.PushMessagesResponse,
        )
        self.get_run = _unary(
            channel, prefix + "GetRun", run_pb2.GetRunRequest, run_pb2.GetRunResponse
        )
        self.get_fab = _unary(
            channel, prefix + "GetFab", fab_pb2.GetFabRequest, fab_pb2.GetFabResponse
        )


class ServerAppIoStub:
    """The ServerAppIo calls ``flwr-serverapp`` makes for one run."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        prefix = "/flwr.proto.ServerAppIo/"
        self.pull_server_app_inputs = _unary(
            channel,
            prefix + "PullServerAppInputs",
            serverappio_pb2.PullServerAppInputsRequest,
            serverappio_pb2.PullServerAppInputsResponse,
        )
        self.update_run_status = _unary(
            channel,
            prefix + "UpdateRunStatus",
            run_pb2.UpdateRunStatusRequest,
            run_pb2.UpdateRunStatusResponse,
        )
        self.get_nodes = _unary(
            channel,
            prefix + "GetNodes",
            serverappio_pb2.GetNodesRequest,
            serverappio_pb2.GetNodesResponse,
        )
        self.push_messages = _unary(
            channel,
            prefix + "PushMessages",
            serverappio_pb2.PushInsMessagesRequest,
            serverappio_pb2.PushInsMessagesResponse,
        )
        self.pull_messages = _unary(
            channel,
            prefix + "PullMessages",
            serverappio_pb2.PullResMessagesRequest,
            serverappio_pb2.PullResMessagesResponse,
        )
        self.push_server_app_outputs = _unary(
            channel,
            prefix + "PushServerAppOutputs",
            serverappio_pb2.PushServerAppOutputsRequest,
            serverappio_pb2.PushServerAppOutputsResponse,
        )


class ExecStub:
    """The one Exec call the driver needs: ``flwr run``'s StartRun."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.start_run = _unary(
            channel,
            "/flwr.proto.Exec/StartRun",
            exec_pb2.StartRunRequest,
            exec_pb2.StartRunResponse,
        )
