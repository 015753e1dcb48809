"""Exec API behaviour: what the ``flwr`` CLI calls (run, ls, log, stop)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from superlink_async.logs import logger
from superlink_async.services.errors import ServiceError, Status
from superlink_async.services.fabs import parse_fab
from superlink_async.services.runs import RunEvents
from superlink_async.state.base import FINISHED, STOPPED, LinkState, RunStatus
from superlink_async.state.codec import run_to_proto, user_config_from_proto
from superlink_async.state.fab_store import FabStore
from superlink_async.state.rules import iso_timestamp
from superlink_async.wire import exec_pb2

#: Longest a log stream sleeps between checks when nothing wakes it.
LOG_POLL_SECONDS = 0.5

#: The simulation executor refuses a run without it (flwr-simulation needs it too).
NUM_SUPERNODES = "num-supernodes"

#: The reference answers login calls so when user authentication is off (always in OSS).
NO_USER_AUTH = "ExecServicer initialized without user authentication"


async def _no_stop_hook(run_id: int) -> None:
    """Default ``on_stop``: nothing else to end."""


class ExecService:
    """The Exec methods; ``on_stop`` ends a stopped run's ServerApp or simulation process.

    With ``simulation`` (the simulation executor) a run must say how many SuperNodes to
    simulate, in its federation options.
    """

    def __init__(
        self,
        state: LinkState,
        fabs: FabStore,
        events: RunEvents,
        on_stop: Callable[[int], Awaitable[None]] = _no_stop_hook,
        clock: Callable[[], float] = time.time,
        *,
        simulation: bool = False,
    ) -> None:
        self._simulation = simulation
        self._state = state
        self._fabs = fabs
        self._events = events
        self._on_stop = on_stop
        self._clock = clock

    async def start_run(self, request: exec_pb2.StartRunRequest) -> exec_pb2.StartRunResponse:
        """Store the FAB and create a pending run with its context and federation options.

        A FAB that cannot be read, or a simulation without ``num-supernodes``, is answered,
        as by the reference, with an empty response (no ``run_id``), which the CLI reports
        as a failed start; the reason is logged here.
        """
        logger.info("ExecServicer.StartRun")
        content = request.fab.content
        try:
            if self._simulation and NUM_SUPERNODES not in request.federation_options.data:
                raise ValueError(f"Federation options doesn't contain key `{NUM_SUPERNODES}`.")
            info = parse_fab(content)
        except ValueError as exc:  # FabError is one too
            logger.error("Could not start run: %s", exc)
            logger.error("Executor failed to start run")
            return exec_pb2.StartRunResponse()
        fab_hash = await self._fabs.put(content)
        if request.fab.hash_str and request.fab.hash_str != hashlib.sha256(content).hexdigest():
            logger.warning("StartRun: the FAB hash in the request does not match its content")
        run_id = await self._state.create_run(
            info.fab_id,
            info.fab_version,
            fab_hash,
            user_config_from_proto(request.override_config),
            request.federation_options,
        )
        logger.info("Created run %s", run_id, extra={"run_id": run_id})
        self._events.notify()
        return exec_pb2.StartRunResponse(run_id=run_id)

    async def stream_logs(
        self, request: exec_pb2.StreamLogsRequest
    ) -> AsyncIterator[exec_pb2.StreamLogsResponse]:
        """Stream a run's ServerApp output until the run has finished.

        The status is read *before* the logs: a ServerApp pushes its last lines before it
        reports the final status, so the read that follows a "finished" sees them all (the
        reference checked afterwards and could drop them).
        """
        logger.info("ExecServicer.StreamLogs")
        run_id = request.run_id
        if await self._state.get_run(run_id) is None:
            raise ServiceError(Status.NOT_FOUND, "Run ID not found")
        after = request.after_timestamp + 1e-6
        while True:
            run = await self._state.get_run(run_id)
            finished = run is None or run.status.status == FINISHED
            text, latest = await self._state.get_serverapp_log(run_id, after)
            if text:
                yield exec_pb2.StreamLogsResponse(log_output=text, latest_timestamp=latest)
                after = max(latest + 1e-6, after)
            if finished:
                logger.info("All logs for run ID `%s` returned", run_id, extra={"run_id": run_id})
                return
            await self._events.wait(LOG_POLL_SECONDS)

    async def list_runs(self, request: exec_pb2.ListRunsRequest) -> exec_pb2.ListRunsResponse:
        """One run (when ``run_id`` is present) or all of them, and the server's ``now``."""
        logger.info("ExecServicer.List")
        if request.HasField("run_id"):
            run = await self._state.get_run(request.run_id)
            runs = [run] if run else []
        else:
            runs = await self._state.get_runs()
        response = exec_pb2.ListRunsResponse(now=iso_timestamp(self._clock()))
        for run in runs:
            response.run_dict[run.run_id].CopyFrom(run_to_proto(run))
        return response

    async def stop_run(self, request: exec_pb2.StopRunRequest) -> exec_pb2.StopRunResponse:
        """Finish a run as stopped, drop its pending messages and end its ServerApp."""
        logger.info("ExecServicer.StopRun")
        run_id = request.run_id
        run = await self._state.get_run(run_id)
        if run is None:
            raise ServiceError(Status.NOT_FOUND, f"Run ID {run_id} not found")
        if run.status.status == FINISHED:
            raise ServiceError(Status.FAILED_PRECONDITION, f"Run ID {run_id} is already finished")
        success = await self._state.update_run_status(run_id, RunStatus(FINISHED, STOPPED))
        if success:
            await self._state.delete_run_messages(run_id)
            self._events.notify()
            await self._on_stop(run_id)
        return exec_pb2.StopRunResponse(success=success)

    async def get_login_details(
        self, request: exec_pb2.GetLoginDetailsRequest
    ) -> exec_pb2.GetLoginDetailsResponse:
        """User authentication is not part of the OSS SuperLink."""
        logger.info("ExecServicer.GetLoginDetails")
        raise ServiceError(Status.UNIMPLEMENTED, NO_USER_AUTH)

    async def get_auth_tokens(
        self, request: exec_pb2.GetAuthTokensRequest
    ) -> exec_pb2.GetAuthTokensResponse:
        """User authentication is not part of the OSS SuperLink."""
        logger.info("ExecServicer.GetAuthTokens")
        raise ServiceError(Status.UNIMPLEMENTED, NO_USER_AUTH)
