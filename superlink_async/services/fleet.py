"""Fleet API behaviour: what SuperNodes call, whatever the transport."""

from __future__ import annotations

import time
from collections.abc import Callable

from superlink_async.logs import logger
from superlink_async.services.errors import ServiceError, Status
from superlink_async.services.fabs import load_fab
from superlink_async.services.runs import ensure_running, require_running
from superlink_async.services.validation import (
    bounded_ping_interval,
    ping_interval_error,
    validate_message,
)
from superlink_async.state.base import (
    LinkState,
    MessageRejectedError,
    NodeNotFoundError,
    PublicKeyInUseError,
)
from superlink_async.state.codec import run_to_fleet_proto
from superlink_async.state.fab_store import FabStore
from superlink_async.wire import fab_pb2, fleet_pb2, run_pb2
from superlink_async.wire.node_pb2 import Node

#: What PushMessages answers in ``reconnect``: the reference always asks for 5 s.
RECONNECT_SECONDS = 5


class FleetService:
    """The seven Fleet methods over one state and FAB store."""

    def __init__(
        self, state: LinkState, fabs: FabStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._state = state
        self._fabs = fabs
        self._clock = clock

    async def create_node(
        self, request: fleet_pb2.CreateNodeRequest, public_key: bytes | None = None
    ) -> fleet_pb2.CreateNodeResponse:
        """Register a node for ``ping_interval`` seconds of liveness, bound to its key if any.

        A key held by an online node is UNAUTHENTICATED (as the reference answers) and
        leaves no node behind.
        """
        logger.info("[Fleet.CreateNode] Request ping_interval=%s", request.ping_interval)
        ping_interval = _ping_interval(request.ping_interval)
        if public_key is None:
            node_id = await self._state.create_node(ping_interval)
        else:
            try:
                node_id, replaced = await self._state.create_keyed_node(ping_interval, public_key)
            except PublicKeyInUseError as exc:
                raise ServiceError(Status.UNAUTHENTICATED, str(exc)) from exc
            if replaced is not None:
                logger.info("Node %s rejoins with the key of offline node %s", node_id, replaced)
        logger.info("[Fleet.CreateNode] Created node_id=%s", node_id, extra={"node_id": node_id})
        return fleet_pb2.CreateNodeResponse(node=Node(node_id=node_id))

    async def delete_node(
        self, request: fleet_pb2.DeleteNodeRequest
    ) -> fleet_pb2.DeleteNodeResponse:
        """Forget a node; node id 0 (unset) is a no-op as in the reference."""
        node_id = request.node.node_id
        logger.info("[Fleet.DeleteNode] Delete node_id=%s", node_id, extra={"node_id": node_id})
        if node_id:
            try:
                await self._state.delete_node(node_id)
            except NodeNotFoundError as exc:
                raise ServiceError(Status.NOT_FOUND, str(exc)) from exc
        return fleet_pb2.DeleteNodeResponse()

    async def ping(self, request: fleet_pb2.PingRequest) -> fleet_pb2.PingResponse:
        """Extend a node's liveness; ``success`` is false for an unknown node."""
        interval = _ping_interval(request.ping_interval)
        success = await self._state.acknowledge_ping(request.node.node_id, interval)
        return fleet_pb2.PingResponse(success=success)

    async def pull_messages(
        self, request: fleet_pb2.PullMessagesRequest
    ) -> fleet_pb2.PullMessagesResponse:
        """Hand the node at most one instruction, marked delivered as it leaves."""
        node_id = request.node.node_id
        logger.info("[Fleet.PullMessages] node_id=%s", node_id, extra={"node_id": node_id})
        messages = await self._state.pull_message_ins(node_id, limit=1)
        return fleet_pb2.PullMessagesResponse(messages_list=messages)

    async def push_messages(
        self, request: fleet_pb2.PushMessagesRequest
    ) -> fleet_pb2.PushMessagesResponse:
        """Store the node's replies; ``results`` maps each stored reply's id to 0.

        A reply for a run that is not running is PERMISSION_DENIED (the node drops it and
        carries on). A malformed or unexpected reply is logged and left out of ``results``
        with status OK, as the reference answers, because any other status makes a 1.18
        SuperNode shut down.
        """
        if not request.messages_list:
            logger.info("[Fleet.PushMessages] No replies to push")
            raise ServiceError(Status.INVALID_ARGUMENT, "`messages_list` must not be empty")
        first = request.messages_list[0].metadata
        logger.info(
            "[Fleet.PushMessages] Push replies from node_id=%s",
            first.src_node_id,
            extra={"node_id": first.src_node_id, "run_id": first.run_id},
        )
        response = fleet_pb2.PushMessagesResponse(
            reconnect=fleet_pb2.Reconnect(reconnect=RECONNECT_SECONDS)
        )
        for message in request.messages_list:
            await require_running(self._state, message.metadata.run_id)
            if errors := validate_message(message, is_reply=True, now=self._clock()):
                logger.error("Invalid reply from node %s: %s", message.metadata.src_node_id, errors)
                continue
            try:
                message_id = await self._state.store_message_res(message)
            except MessageRejectedError as exc:
                logger.error("%s", exc)
                continue
            response.results[message_id] = 0
        return response

    async def get_run(self, request: run_pb2.GetRunRequest) -> run_pb2.GetRunResponse:
        """The run's identity and config, if it is running; empty for an unknown run."""
        run_id = request.run_id
        logger.info(
            "[Fleet.GetRun] Requesting `Run` for run_id=%s", run_id, extra={"run_id": run_id}
        )
        run = await self._state.get_run(run_id)
        if run is None:
            logger.error("`run_id` does not exist.")
            return run_pb2.GetRunResponse()
        return run_pb2.GetRunResponse(run=run_to_fleet_proto(ensure_running(run)))

    async def get_fab(self, request: fab_pb2.GetFabRequest) -> fab_pb2.GetFabResponse:
        """The FAB of a running run."""
        logger.info("[Fleet.GetFab] Requesting FAB for fab_hash=%s", request.hash_str)
        run = await require_running(self._state, request.run_id)
        if request.hash_str != run.fab_hash:
            # Only the run's own FAB is served: a node has no business with any other.
            raise ServiceError(Status.NOT_FOUND, f"Found no FAB with hash: {request.hash_str}")
        return fab_pb2.GetFabResponse(fab=await load_fab(self._fabs, request.hash_str))


def _ping_interval(requested: float) -> float:
    """The liveness a CreateNode or Ping gets: INVALID_ARGUMENT for nonsense, else clamped."""
    if (error := ping_interval_error(requested)) is not None:
        raise ServiceError(Status.INVALID_ARGUMENT, error)
    return bounded_ping_interval(requested)
