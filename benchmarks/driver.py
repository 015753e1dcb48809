"""A ServerApp driver: ``flwr run`` plus ``flwr-serverapp``'s calls, for timed rounds.

It starts a run with a real FAB over Exec, claims it over ServerAppIo (the SuperLink runs
with ``--isolation process``, so nobody else does), marks it running, and then runs rounds
as ``flwr-serverapp``'s grid does: GetNodes, one PushMessages with an instruction per node,
PullMessages until every reply is in. The only departure is the pull period, which is
shorter than the grid's 3 s so that a round's wall time is not rounded up to 3 s steps.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType

import grpc

from benchmarks import messages
from benchmarks.wire import ExecStub, ServerAppIoStub, open_channel
from superlink_async.wire import exec_pb2, fab_pb2, message_pb2, run_pb2, serverappio_pb2

#: The failure key of replies still missing when a round's time is up.
MISSING = "missing at the timeout"
#: Bounds every other driver call; the largest round moves ~200 MB through the SuperLink.
CALL_TIMEOUT = 120.0


@dataclass(frozen=True)
class RoundOutcome:
    """What one round took and brought back."""

    nodes: int
    wall_seconds: float
    #: Replies that carried content.
    replies: int
    #: Error replies by error code (5: node unavailable) and replies still missing.
    failures: dict[str, int]
    #: The one PushMessages call alone; the round's timeout when it did not return by then.
    push_seconds: float
    push_timed_out: bool


class ServerAppDriver:
    """One run on a SuperLink; an async context manager that finishes the run on exit."""

    def __init__(self, exec_address: str, serverappio_address: str, pull_period: float) -> None:
        self._exec_channel = open_channel(exec_address, own_connection=True)
        self._io_channel = open_channel(serverappio_address, own_connection=True)
        self._exec = ExecStub(self._exec_channel)
        self._io = ServerAppIoStub(self._io_channel)
        self._pull_period = pull_period
        self._run_id = 0
        self._rounds = 0

    async def start_run(self) -> None:
        """StartRun with a FAB, claim the run and mark it running, like ``flwr-serverapp``."""
        fab = messages.make_fab()
        started = await self._exec.start_run(
            exec_pb2.StartRunRequest(
                fab=fab_pb2.Fab(hash_str=hashlib.sha256(fab).hexdigest(), content=fab)
            ),
            timeout=CALL_TIMEOUT,
        )
        if not started.HasField("run_id"):
            raise RuntimeError("StartRun did not create a run")
        inputs = await self._io.pull_server_app_inputs(
            serverappio_pb2.PullServerAppInputsRequest(), timeout=CALL_TIMEOUT
        )
        if inputs.run.run_id != started.run_id:
            raise RuntimeError(f"PullServerAppInputs handed out {inputs.run.run_id}, not ours")
        self._run_id = started.run_id
        await self._set_status(run_pb2.RunStatus(status="running"))

    async def wait_for_nodes(self, count: int, timeout: float) -> int:
        """Poll GetNodes until ``count`` nodes are online; returns how many are."""
        deadline = time.monotonic() + timeout
        while True:
            online = len(await self._node_ids())
            if online >= count or time.monotonic() > deadline:
                return online
            await asyncio.sleep(0.2)

    async def round(self, payload_bytes: int, reply_bytes: int, timeout: float) -> RoundOutcome:
        """One instruction per online node and every reply back; timed from push to last reply.

        ``timeout`` bounds the whole round from the push on, the push included: flwr's grid
        sets no deadline on it, but a push still running then has failed the round.
        """
        self._rounds += 1
        group = str(self._rounds)
        node_ids = await self._node_ids()
        batch = [
            messages.instruction(self._run_id, node_id, group, payload_bytes, reply_bytes)
            for node_id in node_ids
        ]
        started = time.monotonic()
        try:
            pushed = await self._io.push_messages(
                serverappio_pb2.PushInsMessagesRequest(messages_list=batch, run_id=self._run_id),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            wall = time.monotonic() - started
            return RoundOutcome(len(batch), wall, 0, {MISSING: len(batch)}, wall, True)
        push_seconds = time.monotonic() - started
        waiting = {message_id for message_id in pushed.message_ids if message_id}
        if len(waiting) != len(batch):
            raise RuntimeError(f"the SuperLink stored {len(waiting)} of {len(batch)} instructions")
        replies = 0
        failures: Counter[str] = Counter()
        deadline = started + timeout
        while waiting and time.monotonic() < deadline:
            pulled = await self._io.pull_messages(
                serverappio_pb2.PullResMessagesRequest(
                    message_ids=sorted(waiting), run_id=self._run_id
                ),
                timeout=CALL_TIMEOUT,
            )
            for message in pulled.messages_list:
                waiting.discard(message.metadata.reply_to_message_id)
                if message.HasField("error"):
                    failures[f"error code {message.error.code}"] += 1
                else:
                    replies += 1
            if waiting:
                await asyncio.sleep(self._pull_period)
        wall = time.monotonic() - started
        if waiting:
            failures[MISSING] = len(waiting)
        return RoundOutcome(len(batch), wall, replies, dict(failures), push_seconds, False)

    async def _node_ids(self) -> list[int]:
        got = await self._io.get_nodes(
            serverappio_pb2.GetNodesRequest(run_id=self._run_id), timeout=CALL_TIMEOUT
        )
        return [node.node_id for node in got.nodes]

    async def _set_status(self, status: run_pb2.RunStatus) -> None:
        await self._io.update_run_status(
            run_pb2.UpdateRunStatusRequest(run_id=self._run_id, run_status=status),
            timeout=CALL_TIMEOUT,
        )

    async def __aenter__(self) -> ServerAppDriver:
        await self.start_run()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._run_id and exc_type is None:
                await self._io.push_server_app_outputs(
                    serverappio_pb2.PushServerAppOutputsRequest(
                        run_id=self._run_id, context=message_pb2.Context(run_id=self._run_id)
                    ),
                    timeout=CALL_TIMEOUT,
                )
                await self._set_status(run_pb2.RunStatus(status="finished", sub_status="completed"))
        finally:
            await self._exec_channel.close()
            await self._io_channel.close()
