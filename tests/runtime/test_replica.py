"""A replica's lease: taken at startup, kept, taken again when lost, handed over at shutdown.

On the in-memory state with a clock the test moves; several replicas on one PostgreSQL
database are in tests/runtime/test_replicas.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from superlink_async.runtime.replica import (
    INTERRUPTED_RUN_DETAILS,
    ReplicaLease,
    lost_run_details,
    shutdown_run_details,
)
from superlink_async.services.runs import RunEvents
from superlink_async.state import LinkState, open_state
from superlink_async.testing import FakeClock
from superlink_async.wire.recorddict_pb2 import ConfigRecord

pytestmark = pytest.mark.anyio

REPLICA = "link-a"
LEASE = 4.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def state(clock: FakeClock) -> AsyncIterator[LinkState]:
    async with open_state(":flwr-in-memory-state:", clock) as opened:
        yield opened


async def pending_run(state: LinkState) -> int:
    return await state.create_run("a/b", "1.0", "0" * 64, {}, ConfigRecord())


async def status_of(state: LinkState, run_id: int) -> tuple[str, str, str]:
    run = await state.get_run(run_id)
    assert run is not None
    return run.status.status, run.status.sub_status, run.status.details


async def test_renewals_come_every_quarter_lease() -> None:
    """Three renewals in a row may fail before the lease lapses."""
    async with open_state(":flwr-in-memory-state:") as state:
        assert ReplicaLease(state, RunEvents(), REPLICA, LEASE).renew_interval == LEASE / 4


async def test_registering_fails_the_runs_an_earlier_process_left(
    state: LinkState, log_records: list[logging.LogRecord]
) -> None:
    """A run a previous process (any id: memory is one process's own) left starting fails
    as interrupted, with the warning line the single-process server always logged."""
    run_id = await pending_run(state)
    assert await state.claim_pending_run("earlier-process") is not None
    await ReplicaLease(state, RunEvents(), REPLICA, LEASE).register()
    assert await status_of(state, run_id) == ("finished", "failed", INTERRUPTED_RUN_DETAILS)
    assert f"Marked interrupted run(s) as failed: [{run_id}]" in [
        record.getMessage() for record in log_records
    ]
    assert REPLICA in await state.get_replica_leases()


async def test_a_tick_renews_the_lease(state: LinkState, clock: FakeClock) -> None:
    lease = ReplicaLease(state, RunEvents(), REPLICA, LEASE)
    await lease.register()
    clock.advance(LEASE / 4)
    await lease.tick()
    assert (await state.get_replica_leases())[REPLICA] == clock.now + LEASE


async def test_a_late_tick_of_a_lone_replica_keeps_its_runs(
    state: LinkState, clock: FakeClock, log_records: list[logging.LogRecord]
) -> None:
    """A tick held up past the lease (the loop or the state saturated) renews and goes on:
    the replica does not reap itself, so its running runs survive the overload."""
    lease = ReplicaLease(state, RunEvents(), REPLICA, LEASE)
    await lease.register()
    run_id = await pending_run(state)
    assert await state.claim_pending_run(REPLICA) is not None
    clock.advance(3 * LEASE)
    await lease.tick()
    assert (await state.get_replica_leases())[REPLICA] == clock.now + LEASE
    assert (await status_of(state, run_id))[0] == "starting"
    assert [record for record in log_records if record.levelno >= logging.WARNING] == []


async def test_a_lost_lease_is_an_error_line_and_is_taken_again(
    state: LinkState, clock: FakeClock, log_records: list[logging.LogRecord]
) -> None:
    """Reaped while it could not renew (its runs failed, naming it), the replica says so
    in an ERROR line and takes a new lease instead of serving without one."""
    lease = ReplicaLease(state, RunEvents(), REPLICA, LEASE)
    await lease.register()
    run_id = await pending_run(state)
    assert await state.claim_pending_run(REPLICA) is not None
    clock.advance(LEASE + 1)
    (reaped,) = await state.reap_lost_replicas(lost_run_details)  # as another replica would
    assert (reaped.replica_id, reaped.failed_runs) == (REPLICA, [run_id])
    await lease.tick()
    errors = [record.getMessage() for record in log_records if record.levelno == logging.ERROR]
    assert errors == [
        f"SuperLink replica {REPLICA} lost its lease (not renewed within 4 s) and its runs "
        "were failed; taking the lease again"
    ]
    assert (await state.get_replica_leases())[REPLICA] == clock.now + LEASE
    assert await status_of(state, run_id) == ("finished", "failed", lost_run_details(REPLICA))
    assert "lost (its lease expired)" in lost_run_details(REPLICA)


async def test_hand_over_fails_the_replicas_runs_and_frees_its_reservations(
    state: LinkState, log_records: list[logging.LogRecord]
) -> None:
    """At shutdown the running run fails at once, naming the replica, and the run reserved
    for its next child goes back to the queue, for any replica to claim."""
    lease = ReplicaLease(state, RunEvents(), REPLICA, LEASE)
    await lease.register()
    running = await pending_run(state)
    assert await state.claim_pending_run(REPLICA) is not None
    reserved = await pending_run(state)
    assert await state.reserve_pending_run(REPLICA) == reserved
    await lease.hand_over()
    assert await status_of(state, running) == ("finished", "failed", shutdown_run_details(REPLICA))
    assert shutdown_run_details(REPLICA) == (
        "SuperLink replica link-a shut down while this run was in progress"
    )
    claimed = await state.claim_pending_run("link-b")
    assert claimed is not None and claimed.run_id == reserved
    assert REPLICA not in await state.get_replica_leases()
    assert f"Marked run(s) of this replica as failed at shutdown: [{running}]" in [
        record.getMessage() for record in log_records
    ]
