"""grpclib servicers: one line per method, converting nothing but the call shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from grpclib.server import Stream

from superlink_async.services.appio import AppIoService
from superlink_async.services.exec import ExecService
from superlink_async.services.fleet import FleetService
from superlink_async.services.node_auth import NodeAuthenticator, StaleTimestampError
from superlink_async.services.serverappio import ServerAppIoService
from superlink_async.services.simulationio import SimulationIoService
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.calls import server_streaming, unary
from superlink_async.wire import (
    exec_grpc,
    fleet_grpc,
    fleet_pb2,
    serverappio_grpc,
    simulationio_grpc,
)

AnyStream = Stream[Any, Any]


class FleetServicer(fleet_grpc.FleetBase):
    """``flwr.proto.Fleet`` (grpc-rere); with an authenticator, every call is signed.

    While the loop is behind, a poll from a node with nothing waiting is answered
    "nothing waiting" before its signature is checked: the node polls again after its
    usual 3 s (see ``NodeAuthenticator.is_idle_poll``). A call whose signature is too old
    by the time it reaches us is refused UNAVAILABLE (retried) rather than UNAUTHENTICATED
    (fatal to a SuperNode) while the loop is behind: it may have aged in our accept queue.
    """

    def __init__(
        self, service: FleetService, gate: CallGate, auth: NodeAuthenticator | None = None
    ) -> None:
        self._service = service
        self._gate = gate
        self._auth = auth

    async def _serve(
        self, stream: AnyStream, method: str, handler: Callable[[Any], Awaitable[Any]]
    ) -> None:
        auth = self._auth
        if auth is None:
            await unary(stream, handler, self._gate)
            return

        arrived_at = auth.now()  # before any wait of ours: admission, the body, state reads

        async def authenticated(request: Any) -> Any:
            metadata: Mapping[str, Any] = stream.metadata or {}
            if (
                method == "PullMessages"
                and self._gate.behind
                and await auth.is_idle_poll(metadata, request.node.node_id)
            ):
                self._gate.count_early_answer(method)
                return fleet_pb2.PullMessagesResponse()
            try:
                return await auth.call(method, metadata, request, handler, arrived_at)
            except StaleTimestampError as exc:
                if not self._gate.behind:
                    raise
                # Signed in time, perhaps, but kept waiting by us before it reached this
                # servicer (accept, handshake): a retry with a fresh signature will do.
                reason = "the call waited too long to be served; retry"
                raise self._gate.shed("Fleet", method, reason) from exc

        await unary(stream, authenticated, self._gate)

    async def CreateNode(self, stream: AnyStream) -> None:
        await self._serve(stream, "CreateNode", self._service.create_node)

    async def DeleteNode(self, stream: AnyStream) -> None:
        await self._serve(stream, "DeleteNode", self._service.delete_node)

    async def Ping(self, stream: AnyStream) -> None:
        await self._serve(stream, "Ping", self._service.ping)

    async def PullMessages(self, stream: AnyStream) -> None:
        await self._serve(stream, "PullMessages", self._service.pull_messages)

    async def PushMessages(self, stream: AnyStream) -> None:
        await self._serve(stream, "PushMessages", self._service.push_messages)

    async def GetRun(self, stream: AnyStream) -> None:
        await self._serve(stream, "GetRun", self._service.get_run)

    async def GetFab(self, stream: AnyStream) -> None:
        await self._serve(stream, "GetFab", self._service.get_fab)


class _AppIoMethods:
    """The run lifecycle methods ServerAppIo and SimulationIo share (same names and messages)."""

    _service: AppIoService
    _gate: CallGate

    async def UpdateRunStatus(self, stream: AnyStream) -> None:
        await unary(stream, self._service.update_run_status, self._gate)

    async def GetRunStatus(self, stream: AnyStream) -> None:
        await unary(stream, self._service.get_run_status, self._gate)

    async def PushLogs(self, stream: AnyStream) -> None:
        await unary(stream, self._service.push_logs, self._gate)


class ServerAppIoServicer(_AppIoMethods, serverappio_grpc.ServerAppIoBase):
    """``flwr.proto.ServerAppIo``."""

    def __init__(self, service: ServerAppIoService, gate: CallGate) -> None:
        self._service: ServerAppIoService = service
        self._gate = gate

    async def CreateRun(self, stream: AnyStream) -> None:
        await unary(stream, self._service.create_run, self._gate)

    async def GetNodes(self, stream: AnyStream) -> None:
        await unary(stream, self._service.get_nodes, self._gate)

    async def PushMessages(self, stream: AnyStream) -> None:
        await unary(stream, self._service.push_messages, self._gate)

    async def PullMessages(self, stream: AnyStream) -> None:
        await unary(stream, self._service.pull_messages, self._gate)

    async def GetRun(self, stream: AnyStream) -> None:
        await unary(stream, self._service.get_run, self._gate)

    async def GetFab(self, stream: AnyStream) -> None:
        await unary(stream, self._service.get_fab, self._gate)

    async def PullServerAppInputs(self, stream: AnyStream) -> None:
        await unary(stream, self._service.pull_serverapp_inputs, self._gate)

    async def PushServerAppOutputs(self, stream: AnyStream) -> None:
        await unary(stream, self._service.push_serverapp_outputs, self._gate)


class SimulationIoServicer(_AppIoMethods, simulationio_grpc.SimulationIoBase):
    """``flwr.proto.SimulationIo``."""

    def __init__(self, service: SimulationIoService, gate: CallGate) -> None:
        self._service: SimulationIoService = service
        self._gate = gate

    async def PullSimulationInputs(self, stream: AnyStream) -> None:
        await unary(stream, self._service.pull_simulation_inputs, self._gate)

    async def PushSimulationOutputs(self, stream: AnyStream) -> None:
        await unary(stream, self._service.push_simulation_outputs, self._gate)

    async def GetFederationOptions(self, stream: AnyStream) -> None:
        await unary(stream, self._service.get_federation_options, self._gate)


class ExecServicer(exec_grpc.ExecBase):
    """``flwr.proto.Exec``."""

    def __init__(self, service: ExecService, gate: CallGate) -> None:
        self._service = service
        self._gate = gate

    async def StartRun(self, stream: AnyStream) -> None:
        await unary(stream, self._service.start_run, self._gate)

    async def StopRun(self, stream: AnyStream) -> None:
        await unary(stream, self._service.stop_run, self._gate)

    async def StreamLogs(self, stream: AnyStream) -> None:
        await server_streaming(stream, self._service.stream_logs, self._gate)

    async def ListRuns(self, stream: AnyStream) -> None:
        await unary(stream, self._service.list_runs, self._gate)

    async def GetLoginDetails(self, stream: AnyStream) -> None:
        await unary(stream, self._service.get_login_details, self._gate)

    async def GetAuthTokens(self, stream: AnyStream) -> None:
        await unary(stream, self._service.get_auth_tokens, self._gate)
