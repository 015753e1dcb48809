"""The run scheduler (``--isolation subprocess``): one child process per run.

The child is ``flwr-serverapp`` (deployment executor, dialling ServerAppIo) or
``flwr-simulation`` (simulation executor, dialling SimulationIo); both claim a pending run
the same way, so one scheduler serves both. Before a child is launched, the oldest pending
run nobody reserved is reserved for this replica in the state, so that of several replicas
sharing one database exactly one launches a child for it; the child then claims it through
this replica's API. The claimed run is bound to the child, so the scheduler can tell when a
child dies without finishing its run (the run fails, with the reason) and which child to end
when a run is stopped. Every tick (woken by run events, at least every ``POLL_SECONDS``) it
reads the statuses of its children's runs: a run finished elsewhere (``flwr stop`` through
another replica, a reaper) ends its child. A command that cannot be launched, or that keeps
dying before it claims a run, fails the reserved run instead of being relaunched forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup, TaskStatus

from superlink_async.config import Address
from superlink_async.logs import logger
from superlink_async.runtime.children import end_leftovers, spawn, terminate
from superlink_async.runtime.shutdown import CHILDREN
from superlink_async.services.runs import RunEvents
from superlink_async.state.base import (
    FAILED,
    FINISHED,
    PENDING,
    STOPPED,
    LinkState,
    RunStatus,
    StateUnavailableError,
    StorageFullError,
)

#: Longest the scheduler sleeps before looking for pending runs again.
POLL_SECONDS = 1.0
#: Consecutive children dying before they claim a run, after which that run fails.
MAX_LAUNCH_FAILURES = 3
#: Seconds a child of a stopped run gets to exit after SIGTERM before it is killed (at
#: shutdown: the children stage's bound).
TERMINATE_GRACE = 5.0
#: Seconds a child whose run finished otherwise than stopped may take to exit by itself
#: (a ServerApp reports its own end, then exits) before it gets SIGTERM.
EXIT_GRACE = 1.0


@dataclass(frozen=True)
class ChildApp:
    """The kind of child launched per run: its name in log lines and its address flag."""

    name: str
    address_flag: str
    #: What the child runs, as run details say it ("ServerApp process exited ...").
    runs: str


SERVERAPP = ChildApp("flwr-serverapp", "--serverappio-api-address", "ServerApp")
SIMULATION = ChildApp("flwr-simulation", "--simulationio-api-address", "Simulation")


@dataclass
class _Child:
    process: asyncio.subprocess.Process
    run_id: int | None = None
    #: Whether it is being ended (its run was stopped or finished).
    ending: bool = False


class RunScheduler:
    """Launches, binds and reaps the children of one kind (``app``) for ``replica_id``.

    A child dials ``address`` rewritten for a local client: ``0.0.0.0`` becomes
    ``127.0.0.1`` for both kinds (the reference rewrites the ServerAppIo address only).
    """

    def __init__(
        self,
        state: LinkState,
        events: RunEvents,
        command: Sequence[str],
        address: Address,
        *,
        replica_id: str,
        app: ChildApp = SERVERAPP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._events = events
        self._replica_id = replica_id
        self._app = app
        self.argv = [
            *command,
            "--run-once",
            app.address_flag,
            str(address.dialable()),
            "--insecure",
        ]
        self._dial_address = address.dialable()
        self._clock = clock
        self._children: list[_Child] = []
        self._failures = 0
        self._next_launch_at = 0.0
        #: The run reserved for the next child, until a child claims a run (it survives
        #: children dying before they claim: the next one is launched for the same run).
        self._reserved: int | None = None
        #: Children started, and runs failed because their child never got going (metrics).
        self.launches = 0
        self.launch_failures = 0

    @property
    def alive(self) -> int:
        """How many children are running."""
        return len(self._children)

    @property
    def pids(self) -> list[int]:
        """Process ids of the children still being watched."""
        return [child.process.pid for child in self._children]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Launch children for pending runs until cancelled, then end them all."""
        try:
            async with anyio.create_task_group() as group:
                task_status.started()
                while True:
                    try:
                        await self._end_children_of_finished_runs(group)
                        await self._launch_if_needed(group)
                    except (StateUnavailableError, StorageFullError) as exc:
                        # The database is back soon (or health says otherwise): look again.
                        # (A reservation is a write, which a full disk refuses.)
                        logger.warning("Cannot look for pending runs: %s", exc)
                    await self._events.wait(POLL_SECONDS)
        finally:
            with anyio.CancelScope(shield=True):
                await self.shutdown()

    def run_claimed(self, run_id: int) -> None:
        """A child claimed ``run_id``: bind it to the child that was waiting."""
        for child in self._children:
            if child.run_id is None:
                child.run_id = run_id
                self._failures = 0
                self._reserved = None
                return

    def reservation_lost(self) -> None:
        """The state dropped this replica's reservation (its lease was lost and taken again).

        A child still waiting to claim gets a new one at the next tick; without one, that
        child could only ever claim a run nobody reserved.
        """
        self._reserved = None

    async def stop_run(self, run_id: int) -> None:
        """End the child serving ``run_id``, if there is one."""
        for child in list(self._children):
            if child.run_id == run_id:
                child.ending = True
                await terminate(child.process, TERMINATE_GRACE)

    async def shutdown(self) -> None:
        """End every child (within the children stage's bound), e.g. when the server stops."""
        async with anyio.create_task_group() as group:
            for child in self._children:
                group.start_soon(terminate, child.process, CHILDREN.bound)

    async def _end_children_of_finished_runs(self, group: TaskGroup) -> None:
        """End each child whose run finished, wherever it was finished.

        A stopped run's child is ended at once, as ``stop_run`` does; one that finished
        otherwise gets ``EXIT_GRACE`` to exit by itself first.
        """
        serving = {
            child.run_id: child
            for child in self._children
            if child.run_id is not None and not child.ending
        }
        if not serving:
            return
        statuses = await self._state.get_run_statuses(list(serving))
        for run_id, status in statuses.items():
            if status.status != FINISHED:
                continue
            child = serving[run_id]
            child.ending = True
            grace = 0.0 if status.sub_status == STOPPED else EXIT_GRACE
            group.start_soon(self._end_child, child, grace)

    async def _end_child(self, child: _Child, grace: float) -> None:
        with anyio.move_on_after(grace):
            await child.process.wait()
        if child.process.returncode is None:
            logger.info(
                "Run %s is finished; ending its %s process",
                child.run_id,
                self._app.name,
                extra={"run_id": child.run_id},
            )
        await terminate(child.process, TERMINATE_GRACE)

    async def _launch_if_needed(self, group: TaskGroup) -> None:
        if any(child.run_id is None for child in self._children):
            # One child is already waiting to claim the next run. It keeps a reservation:
            # its run may have been stopped meanwhile, or the reservation lost.
            await self._reservation()
            return
        if self._clock() < self._next_launch_at:
            return
        run_id = await self._reservation()
        if run_id is None:
            return
        logger.info(
            "Launching %s subprocess. Connects to SuperLink on %s",
            self._app.name,
            self._dial_address,
        )
        try:
            process = await spawn(self.argv)
        except OSError as exc:
            self.launch_failures += 1
            self._reserved = None
            await self._fail_run(run_id, f"Could not launch `{self.argv[0]}`: {exc}")
            return
        self.launches += 1
        child = _Child(process)
        self._children.append(child)
        group.start_soon(self._reap, child)

    async def _reservation(self) -> int | None:
        """The run the next child is for: the one still held if it is pending, else a new one."""
        held = self._reserved
        if held is not None:
            status = (await self._state.get_run_statuses([held])).get(held)
            if status is not None and status.status == PENDING:
                return held
        self._reserved = await self._state.reserve_pending_run(self._replica_id)
        return self._reserved

    async def _reap(self, child: _Child) -> None:
        code = await child.process.wait()
        end_leftovers(child.process)
        self._children.remove(child)
        if child.run_id is not None:
            await self._fail_unfinished(child.run_id, code)
        else:
            try:
                await self._count_failed_launch(code)
            except StateUnavailableError as exc:
                # The pending run stays pending; the next launch tries it again.
                logger.warning("Cannot look for the run %s was for: %s", self._app.name, exc)
        self._events.notify()

    async def _fail_unfinished(self, run_id: int, code: int) -> None:
        """Fail the run of a child that died, retrying while the state cannot be reached.

        A restart meanwhile fails the run as interrupted instead.
        """
        while True:
            try:
                run = await self._state.get_run(run_id)
                if run is not None and run.status.status != FINISHED:
                    await self._fail_run(
                        run_id,
                        f"{self._app.runs} process exited with code {code} before the run finished",
                    )
                return
            except StateUnavailableError as exc:
                logger.warning("Cannot record the end of run %s yet: %s", run_id, exc)
                await anyio.sleep(POLL_SECONDS)

    async def _count_failed_launch(self, code: int) -> None:
        self._failures += 1
        self._next_launch_at = self._clock() + min(2.0**self._failures, 30.0)
        logger.warning("%s exited with code %s before it started a run", self._app.name, code)
        if self._failures < MAX_LAUNCH_FAILURES:
            return
        self._failures = 0
        self._next_launch_at = 0.0
        run_id, self._reserved = self._reserved, None
        if run_id is not None:
            self.launch_failures += 1
            await self._fail_run(
                run_id,
                f"{self._app.name} exited {MAX_LAUNCH_FAILURES} times (last exit code {code}) "
                "before it could start the run",
            )

    async def _fail_run(self, run_id: int, details: str) -> None:
        logger.error("Run %s failed: %s", run_id, details, extra={"run_id": run_id})
        await self._state.update_run_status(run_id, RunStatus(FINISHED, FAILED, details))
        self._events.notify()
