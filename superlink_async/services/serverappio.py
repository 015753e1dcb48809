"""ServerAppIo API behaviour: what a ``flwr-serverapp`` process calls."""

from __future__ import annotations

import hashlib
import uuid

from superlink_async.logs import logger
from superlink_async.services.appio import AppIoService
from superlink_async.services.errors import ServiceError, Status
from superlink_async.services.fabs import FabError, load_fab, parse_fab
from superlink_async.services.runs import require_running
from superlink_async.services.validation import validate_message
from superlink_async.state.base import MessageRejectedError, RunMismatchError
from superlink_async.state.codec import run_to_proto, user_config_from_proto
from superlink_async.wire import fab_pb2, run_pb2, serverappio_pb2
from superlink_async.wire.node_pb2 import Node
from superlink_async.wire.recorddict_pb2 import ConfigRecord


class ServerAppIoService(AppIoService):
    """The ServerAppIo methods; the run lifecycle ones are :class:`AppIoService`'s."""

    async def create_run(self, request: run_pb2.CreateRunRequest) -> run_pb2.CreateRunResponse:
        """Create a pending run; with a FAB, its hash is checked and its metadata is used."""
        fab_id, fab_version, fab_hash = request.fab_id, request.fab_version, ""
        if request.HasField("fab"):
            content = request.fab.content
            fab_hash = hashlib.sha256(content).hexdigest()
            if fab_hash != request.fab.hash_str:
                raise ServiceError(
                    Status.INVALID_ARGUMENT,
                    f"Malformed CreateRun: FAB ({request.fab.hash_str}) hash from request "
                    "doesn't match contents",
                )
            try:
                info = parse_fab(content)
            except FabError as exc:
                raise ServiceError(Status.INVALID_ARGUMENT, f"Malformed CreateRun: {exc}") from exc
            await self._fabs.put(content)
            fab_id, fab_version = info.fab_id, info.fab_version
        run_id = await self._state.create_run(
            fab_id,
            fab_version,
            fab_hash,
            user_config_from_proto(request.override_config),
            ConfigRecord(),
        )
        return run_pb2.CreateRunResponse(run_id=run_id)

    async def get_nodes(
        self, request: serverappio_pb2.GetNodesRequest
    ) -> serverappio_pb2.GetNodesResponse:
        """The online nodes, for a running run."""
        await require_running(self._state, request.run_id)
        nodes = [Node(node_id=node_id) for node_id in await self._state.get_online_nodes()]
        return serverappio_pb2.GetNodesResponse(nodes=nodes)

    async def push_messages(
        self, request: serverappio_pb2.PushInsMessagesRequest
    ) -> serverappio_pb2.PushInsMessagesResponse:
        """Store instructions; the whole batch is validated before any of it is stored.

        An instruction the state rejects (e.g. unknown destination) gets ``""`` as its id.
        """
        await require_running(self._state, request.run_id)
        if not request.messages_list:
            raise _malformed("PushMessages", "`messages_list` must not be empty")
        now = self._clock()
        for message in request.messages_list:
            if errors := validate_message(message, is_reply=False, now=now):
                raise _malformed("PushMessages", ", ".join(errors))
            if message.metadata.run_id != request.run_id:
                raise _malformed("PushMessages", "`Message.metadata` has mismatched `run_id`")
        message_ids = []
        for stored in await self._state.store_messages_ins(request.messages_list):
            if isinstance(stored, MessageRejectedError):
                logger.error("%s", stored)
                message_ids.append("")
            else:
                message_ids.append(stored)
        return serverappio_pb2.PushInsMessagesResponse(message_ids=message_ids)

    async def pull_messages(
        self, request: serverappio_pb2.PullResMessagesRequest
    ) -> serverappio_pb2.PullResMessagesResponse:
        """Replies (real or synthetic errors) to the given instructions, each handed out once."""
        await require_running(self._state, request.run_id)
        for message_id in request.message_ids:
            if not _is_uuid(message_id):
                raise _malformed("PullMessages", f"invalid message id {message_id!r}")
        try:
            replies = await self._state.take_replies(request.run_id, request.message_ids)
        except RunMismatchError as exc:
            raise _malformed("PullMessages", "`message.metadata` has mismatched `run_id`") from exc
        return serverappio_pb2.PullResMessagesResponse(messages_list=replies)

    async def get_run(self, request: run_pb2.GetRunRequest) -> run_pb2.GetRunResponse:
        """The full run (with timestamps and status); empty for an unknown run."""
        run = await self._state.get_run(request.run_id)
        return run_pb2.GetRunResponse(run=run_to_proto(run)) if run else run_pb2.GetRunResponse()

    async def get_fab(self, request: fab_pb2.GetFabRequest) -> fab_pb2.GetFabResponse:
        """A stored FAB by hash."""
        return fab_pb2.GetFabResponse(fab=await load_fab(self._fabs, request.hash_str))

    async def pull_serverapp_inputs(
        self, request: serverappio_pb2.PullServerAppInputsRequest
    ) -> serverappio_pb2.PullServerAppInputsResponse:
        """Start the oldest pending run; an empty response when none is pending."""
        return await self.pull_inputs(serverappio_pb2.PullServerAppInputsResponse())

    async def push_serverapp_outputs(
        self, request: serverappio_pb2.PushServerAppOutputsRequest
    ) -> serverappio_pb2.PushServerAppOutputsResponse:
        """Keep the ServerApp's final context, for a running run."""
        await self.store_outputs(request.run_id, request.context)
        return serverappio_pb2.PushServerAppOutputsResponse()


def _malformed(method: str, detail: str) -> ServiceError:
    return ServiceError(Status.INVALID_ARGUMENT, f"Malformed {method}: {detail}")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
