"""The SuperLink process as one of the replicas sharing a database: its lease and its runs.

Each replica holds a lease in the state, renewed every quarter of ``--replica-lease``. A
replica that stops renewing (killed, its machine lost) is reaped by whichever other replica
ticks next after the lease lapsed (never by itself: a replica that ticks is alive): its
starting and running runs are finished as failed, naming it, and the runs it had reserved
go back to the queue. So a lost replica's runs are failed at most ``lease + renew interval
of the reaper`` (1.25 leases with equal leases) after its last renewal. A replica shutting
down hands its runs over at once instead (``hand_over``). Memory and SQLite states are one
process's own, so their leases only ever name this one.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from superlink_async.logs import logger
from superlink_async.runtime.shutdown import HANDOVER
from superlink_async.services.runs import RunEvents
from superlink_async.state.base import (
    LinkState,
    StateError,
    StateUnavailableError,
    StorageFullError,
)

#: What a run still starting or running at startup is finished with.
INTERRUPTED_RUN_DETAILS = "The SuperLink restarted while this run was in progress"


def lost_run_details(replica_id: str) -> str:
    """What the runs of a replica whose lease lapsed are finished with."""
    return (
        f"SuperLink replica {replica_id} was lost (its lease expired) "
        "while this run was in progress"
    )


def shutdown_run_details(replica_id: str) -> str:
    """What the runs of a replica that shut down are finished with."""
    return f"SuperLink replica {replica_id} shut down while this run was in progress"


class ReplicaLease:
    """Takes, keeps and hands back one replica's lease; reaps the replicas that lost theirs.

    ``events`` is notified when reaping changed runs, so this process's waiters (the
    scheduler, log streams) see it at once. ``on_retaken`` is called when a lost lease was
    taken again, which dropped the replica's reservations.
    """

    def __init__(
        self,
        state: LinkState,
        events: RunEvents,
        replica_id: str,
        lease_seconds: float,
        on_retaken: Callable[[], None] | None = None,
    ) -> None:
        self._state = state
        self._events = events
        self.replica_id = replica_id
        self.lease_seconds = lease_seconds
        self._on_retaken = on_retaken

    @property
    def renew_interval(self) -> float:
        """Seconds between renewals: a quarter of the lease, so three may fail in a row."""
        return self.lease_seconds / 4

    async def register(self, details: str = INTERRUPTED_RUN_DETAILS) -> None:
        """Take the lease; runs an earlier process with this id left behind are failed."""
        if interrupted := await self._state.register_replica(
            self.replica_id, self.lease_seconds, details
        ):
            logger.warning("Marked interrupted run(s) as failed: %s", interrupted)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew and reap every ``renew_interval`` until cancelled, riding out state outages."""
        task_status.started()
        while True:
            await anyio.sleep(self.renew_interval)
            try:
                await self.tick()
            except (StateUnavailableError, StorageFullError) as exc:
                # The lease survives a few missed renewals; the next tick tries again.
                logger.warning(
                    "Cannot renew the lease of SuperLink replica %s now: %s", self.replica_id, exc
                )

    async def tick(self) -> None:
        """Renew the lease (taking it again if it was lost), then reap the lapsed ones."""
        if not await self._state.renew_replica_lease(self.replica_id, self.lease_seconds):
            logger.error(
                "SuperLink replica %s lost its lease (not renewed within %g s) and its runs "
                "were failed; taking the lease again",
                self.replica_id,
                self.lease_seconds,
            )
            await self.register(lost_run_details(self.replica_id))
            if self._on_retaken is not None:
                self._on_retaken()
            self._events.notify()
        lost = await self._state.reap_lost_replicas(lost_run_details, reaper=self.replica_id)
        for replica in lost:
            logger.warning(
                "SuperLink replica %s was lost (its lease expired): failed run(s) %s, "
                "run(s) back in the queue %s",
                replica.replica_id,
                replica.failed_runs,
                replica.released_runs,
            )
        if lost:
            self._events.notify()

    async def hand_over(self) -> None:
        """At shutdown: fail this replica's runs and free its reservations now, bounded.

        If the state cannot be reached within the handover stage's bound, the lease is left
        to lapse and another replica reaps it.
        """
        released: list[int] = []
        with anyio.move_on_after(HANDOVER.bound) as bounded:
            try:
                released = await self._state.release_replica(
                    self.replica_id, shutdown_run_details(self.replica_id)
                )
            except StateError as exc:
                logger.warning(
                    "SuperLink replica %s could not hand over its runs (%s); another replica "
                    "will once its lease lapses",
                    self.replica_id,
                    exc,
                )
                return
        if bounded.cancelled_caught:
            logger.warning(
                "SuperLink replica %s could not hand over its runs within %g s; another "
                "replica will once its lease lapses",
                self.replica_id,
                HANDOVER.bound,
            )
        elif released:
            logger.warning("Marked run(s) of this replica as failed at shutdown: %s", released)
