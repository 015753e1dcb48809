"""GrpcAdapter (``--fleet-api-type grpc-adapter``): Fleet requests inside one generic message.

The container names the request type; the reply names the response type and carries the
metadata a 1.18.0 ``flower-supernode --grpc-adapter`` expects, module names included
(``flwr.proto.<file>_pb2``, as the reference's own modules are called).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from grpclib.server import Stream

from superlink_async.services.errors import ServiceError, Status
from superlink_async.services.fleet import FleetService
from superlink_async.transports.fleet_calls import FLEET_CALLS
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.calls import unary
from superlink_async.wire import grpcadapter_grpc
from superlink_async.wire.grpcadapter_pb2 import MessageContainer

FLOWER_PACKAGE_NAME = "flwr"
FLOWER_PACKAGE_VERSION = "1.18.0"

_BY_NAME = {request_type.__name__: request_type for request_type in FLEET_CALLS}


def _reference_module(message: ProtoMessage) -> str:
    """``flwr/proto/fleet.proto`` -> ``flwr.proto.fleet_pb2``, the reference's module name."""
    return message.DESCRIPTOR.file.name.removesuffix(".proto").replace("/", ".") + "_pb2"


class GrpcAdapterServicer(grpcadapter_grpc.GrpcAdapterBase):
    """``flwr.proto.GrpcAdapter``: unwrap, delegate to the Fleet service, wrap the answer."""

    def __init__(self, service: FleetService, gate: CallGate) -> None:
        self._service = service
        self._gate = gate

    async def SendReceive(self, stream: Stream[Any, Any]) -> None:  # noqa: D102
        await unary(stream, self.send_receive, self._gate)

    async def send_receive(self, container: MessageContainer) -> MessageContainer:
        """Run the Fleet call the container holds and put its response in a container."""
        request_type = _BY_NAME.get(container.grpc_message_name)
        if request_type is None:
            raise ServiceError(
                Status.INVALID_ARGUMENT,
                f"Invalid grpc_message_name: {container.grpc_message_name}",
            )
        try:
            request = request_type.FromString(container.grpc_message_content)
        except DecodeError as exc:
            raise ServiceError(
                Status.INVALID_ARGUMENT, f"Malformed {container.grpc_message_name}"
            ) from exc
        response = await FLEET_CALLS[request_type](self._service, request)
        name = type(response).__name__
        return MessageContainer(
            metadata={
                "flower-package-name": FLOWER_PACKAGE_NAME,
                "flower-package-version": FLOWER_PACKAGE_VERSION,
                "flower-version": FLOWER_PACKAGE_VERSION,
                "grpc-message-module": _reference_module(response),
                "grpc-message-qualname": name,
            },
            grpc_message_name=name,
            grpc_message_content=response.SerializeToString(),
        )
