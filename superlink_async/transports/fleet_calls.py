"""The Fleet methods by request type: one table that the REST and GrpcAdapter transports share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from superlink_async.services.fleet import FleetService
from superlink_async.wire import fab_pb2, fleet_pb2, run_pb2

FleetCall = Callable[[FleetService, Any], Awaitable[ProtoMessage]]

FLEET_CALLS: dict[type[ProtoMessage], FleetCall] = {
    fleet_pb2.CreateNodeRequest: FleetService.create_node,
    fleet_pb2.DeleteNodeRequest: FleetService.delete_node,
    fleet_pb2.PingRequest: FleetService.ping,
    fleet_pb2.PullMessagesRequest: FleetService.pull_messages,
    fleet_pb2.PushMessagesRequest: FleetService.push_messages,
    run_pb2.GetRunRequest: FleetService.get_run,
    fab_pb2.GetFabRequest: FleetService.get_fab,
}
