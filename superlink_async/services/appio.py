"""What the per-run app processes share, whichever API they dial.

``flwr-serverapp`` (ServerAppIo) and ``flwr-simulation`` (SimulationIo) drive a run the same
way: claim the oldest pending run with its context and FAB, report status changes, push their
output as the run's log, and hand back the final context. That behaviour lives here once;
:mod:`serverappio` and :mod:`simulationio` add what only their API has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from superlink_async.logs import logger
from superlink_async.services.errors import ServiceError, Status
from superlink_async.services.fabs import load_fab
from superlink_async.services.runs import RunEvents, raise_if_finished, require_run, require_running
from superlink_async.state.base import FAILED, FINISHED, LinkState, RunNotFoundError, RunStatus
from superlink_async.state.codec import run_status_from_proto, run_status_to_proto, run_to_proto
from superlink_async.state.fab_store import FabStore
from superlink_async.wire import fab_pb2, log_pb2, message_pb2, run_pb2


@dataclass(frozen=True)
class RunInputs:
    """What an app process needs to start a claimed run."""

    context: message_pb2.Context
    run: run_pb2.Run
    fab: fab_pb2.Fab


class InputsResponse(Protocol):
    """PullServerAppInputsResponse and PullSimulationInputsResponse: the same three fields."""

    context: message_pb2.Context
    run: run_pb2.Run
    fab: fab_pb2.Fab


InputsResponseT = TypeVar("InputsResponseT", bound=InputsResponse)


class AppIoService:
    """Run lifecycle calls of an app process; ``on_claim`` tells the scheduler which run it took.

    Runs are claimed for ``replica_id``, the SuperLink replica serving this API: the one
    its scheduler reserved for the child first, else the oldest nobody reserved.
    """

    def __init__(
        self,
        state: LinkState,
        fabs: FabStore,
        events: RunEvents,
        *,
        replica_id: str,
        on_claim: Callable[[int], None] = lambda run_id: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._fabs = fabs
        self._events = events
        self._replica_id = replica_id
        self._on_claim = on_claim
        self._clock = clock

    async def claim_run_inputs(self) -> RunInputs | None:
        """Start a pending run (``LinkState.claim_pending_run``) and return what its app needs.

        None if there is none to claim. A run that cannot start (its FAB is gone) is
        finished as failed with the reason, and the next pending run is tried: one broken
        run never blocks the queue.
        """
        while (run := await self._state.claim_pending_run(self._replica_id)) is not None:
            self._on_claim(run.run_id)
            context = await self._state.get_serverapp_context(run.run_id)
            try:
                fab = await load_fab(self._fabs, run.fab_hash)
            except ServiceError as exc:
                await self._fail_run(run.run_id, f"Failed to start run: {exc.message}")
                continue
            if context is None:
                await self._fail_run(run.run_id, "Failed to start run: no ServerApp context")
                continue
            logger.info("Starting run %d", run.run_id, extra={"run_id": run.run_id})
            self._events.notify()
            return RunInputs(context=context, run=run_to_proto(run), fab=fab)
        return None

    async def pull_inputs(self, response: InputsResponseT) -> InputsResponseT:
        """``response`` filled with the inputs of the run claimed, or left empty if none."""
        if (inputs := await self.claim_run_inputs()) is not None:
            response.context.CopyFrom(inputs.context)
            response.run.CopyFrom(inputs.run)
            response.fab.CopyFrom(inputs.fab)
        return response

    async def store_outputs(self, run_id: int, context: message_pb2.Context) -> None:
        """Keep the app's final context, for a running run."""
        await require_running(self._state, run_id)
        await self._state.set_serverapp_context(run_id, context)

    async def update_run_status(
        self, request: run_pb2.UpdateRunStatusRequest
    ) -> run_pb2.UpdateRunStatusResponse:
        """Move a run along; an invalid transition is logged and still answered OK.

        flower-superlink answers OK too: a ServerApp does not learn that its status was
        refused.
        """
        run = await require_run(self._state, request.run_id)
        raise_if_finished(run)
        await self._state.update_run_status(
            request.run_id, run_status_from_proto(request.run_status)
        )
        self._events.notify()
        return run_pb2.UpdateRunStatusResponse()

    async def get_run_status(
        self, request: run_pb2.GetRunStatusRequest
    ) -> run_pb2.GetRunStatusResponse:
        """Statuses of the known runs among the ids asked for."""
        statuses = await self._state.get_run_statuses(request.run_ids)
        response = run_pb2.GetRunStatusResponse()
        for run_id, status in statuses.items():
            response.run_status_dict[run_id].CopyFrom(run_status_to_proto(status))
        return response

    async def push_logs(self, request: log_pb2.PushLogsRequest) -> log_pb2.PushLogsResponse:
        """Append the app's output to the run's log."""
        try:
            await self._state.add_serverapp_log(request.run_id, "".join(request.logs))
        except RunNotFoundError as exc:
            raise ServiceError(Status.NOT_FOUND, str(exc)) from exc
        self._events.notify()
        return log_pb2.PushLogsResponse()

    async def _fail_run(self, run_id: int, details: str) -> None:
        logger.error("Run %d: %s", run_id, details, extra={"run_id": run_id})
        await self._state.update_run_status(run_id, RunStatus(FINISHED, FAILED, details))
        self._events.notify()
