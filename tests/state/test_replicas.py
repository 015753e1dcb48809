"""Replicas in the LinkState contract, run against every backend (see conftest).

Reservations and claims (which run a replica's child gets), leases, and what happens to the
runs of a replica that registers again, lapses or leaves. What only several processes on one
database show (races, other live replicas, notifications) is in ``test_postgres_replicas``.
"""

from __future__ import annotations

import anyio
import pytest

from superlink_async.state import rules
from superlink_async.state.base import (
    COMPLETED,
    FINISHED,
    PENDING,
    RUNNING,
    STARTING,
    STOPPED,
    LinkState,
    LostReplica,
    RunStatus,
)
from superlink_async.testing.clock import FakeClock
from tests.state.test_linkstate import new_run

pytestmark = pytest.mark.anyio

LEASE = 10.0


def lost(details: str) -> RunStatus:
    return rules.lost_run_status(details)


def replica_gone(replica_id: str) -> str:
    return f"replica {replica_id} lost"


async def runs_created(state: LinkState, clock: FakeClock, count: int) -> list[int]:
    """``count`` pending runs, oldest first, each a second after the previous one."""
    runs = []
    for _ in range(count):
        runs.append(await new_run(state))
        clock.advance(1.0)
    return runs


async def status_of(state: LinkState, run_id: int) -> RunStatus:
    run = await state.get_run(run_id)
    assert run is not None
    return run.status


async def running(state: LinkState, replica_id: str) -> int:
    """Claim the next run for ``replica_id`` and move it to running; its id."""
    claimed = await state.claim_pending_run(replica_id)
    assert claimed is not None
    assert await state.update_run_status(claimed.run_id, RunStatus(RUNNING))
    return claimed.run_id


async def holdings(state: LinkState, clock: FakeClock, replica_id: str) -> tuple[int, int, int]:
    """A registered replica holding a running, a starting and a reserved run (by age)."""
    await runs_created(state, clock, 3)
    await state.register_replica(replica_id, LEASE, "restarted")
    running_run = await running(state, replica_id)
    starting = await state.claim_pending_run(replica_id)
    reserved = await state.reserve_pending_run(replica_id)
    assert starting is not None
    assert reserved is not None
    return running_run, starting.run_id, reserved


# --- Reservations and claims -----------------------------------------------------------------
async def test_reservations_take_the_pending_runs_oldest_first_each_once(
    state: LinkState, clock: FakeClock
) -> None:
    """Each reservation takes the oldest run nobody reserved; the run stays pending."""
    first, second = await runs_created(state, clock, 2)
    assert await state.reserve_pending_run("a") == first
    assert await state.reserve_pending_run("b") == second
    assert await state.reserve_pending_run("a") is None
    run = await state.get_run(first)
    assert run is not None
    assert (run.status, run.owner) == (RunStatus(PENDING), "")
    assert await state.get_pending_run_id() == first


async def test_a_claim_prefers_its_reservation_then_the_oldest_unreserved_run(
    state: LinkState, clock: FakeClock
) -> None:
    others, unreserved, own = await runs_created(state, clock, 3)
    assert await state.reserve_pending_run("a") == others
    assert await state.reserve_pending_run("b") == unreserved
    assert await state.reserve_pending_run("c") == own
    assert await state.release_replica("b", "gone") == []  # "unreserved" is nobody's again
    claimed = await state.claim_pending_run("c")
    assert claimed is not None
    assert claimed.run_id == own  # its own, though newer
    claimed = await state.claim_pending_run("c")
    assert claimed is not None
    assert claimed.run_id == unreserved
    assert await state.claim_pending_run("c") is None  # the one left is "a"'s


async def test_a_claim_never_takes_a_run_another_replica_reserved(
    state: LinkState, clock: FakeClock
) -> None:
    (run_id,) = await runs_created(state, clock, 1)
    assert await state.reserve_pending_run("a") == run_id
    assert await state.claim_pending_run("b") is None
    claimed = await state.claim_pending_run("a")
    assert claimed is not None
    assert (claimed.run_id, claimed.status, claimed.owner) == (run_id, RunStatus(STARTING), "a")


async def test_the_owner_of_a_claimed_run_is_stored_and_read_back(
    state: LinkState, clock: FakeClock
) -> None:
    run_id, other = await runs_created(state, clock, 2)
    claimed = await state.claim_pending_run("a")
    assert claimed is not None
    assert claimed.owner == "a"
    assert await state.get_run(run_id) == claimed
    owners = {run.run_id: run.owner for run in await state.get_runs()}
    assert owners == {run_id: "a", other: ""}
    assert await state.update_run_status(run_id, RunStatus(RUNNING))
    run = await state.get_run(run_id)
    assert run is not None
    assert run.owner == "a"  # kept through later transitions


async def test_a_run_stopped_while_reserved_is_neither_claimed_nor_released(
    state: LinkState, clock: FakeClock
) -> None:
    stopped, waiting = await runs_created(state, clock, 2)
    assert await state.reserve_pending_run("a") == stopped
    assert await state.update_run_status(stopped, RunStatus(FINISHED, STOPPED))
    claimed = await state.claim_pending_run("a")
    assert claimed is not None
    assert claimed.run_id == waiting
    assert await state.release_replica("a", "gone") == [waiting]
    assert await status_of(state, stopped) == RunStatus(FINISHED, STOPPED)


# --- Registering ---------------------------------------------------------------------------
async def test_registering_fails_the_runs_of_that_id_and_of_no_replica_oldest_first(
    state: LinkState, clock: FakeClock
) -> None:
    """An earlier process's starting/running runs, and runs no replica owns, cannot go on."""
    ownerless, own_running, own_starting, done, pending = await runs_created(state, clock, 5)
    await state.update_run_status(ownerless, RunStatus(STARTING))  # claimed by no replica
    assert await running(state, "a") == own_running
    claimed = await state.claim_pending_run("a")
    assert claimed is not None
    assert claimed.run_id == own_starting
    assert await running(state, "a") == done
    await state.update_run_status(done, RunStatus(FINISHED, COMPLETED))
    clock.advance(3.0)
    failed = await state.register_replica("a", LEASE, "SuperLink restarted")
    assert failed == [ownerless, own_running, own_starting]
    statuses = await state.get_run_statuses([pending, ownerless, own_running, own_starting, done])
    assert statuses == {
        pending: RunStatus(PENDING),
        ownerless: lost("SuperLink restarted"),
        own_running: lost("SuperLink restarted"),
        own_starting: lost("SuperLink restarted"),
        done: RunStatus(FINISHED, COMPLETED),
    }
    run = await state.get_run(own_running)
    assert run is not None
    assert run.finished_at == rules.iso_timestamp(clock.now)
    assert await state.register_replica("a", LEASE, "again") == []


async def test_registering_gives_back_the_runs_that_id_had_reserved(
    state: LinkState, clock: FakeClock
) -> None:
    (run_id,) = await runs_created(state, clock, 1)
    assert await state.register_replica("a", LEASE, "restarted") == []
    assert await state.reserve_pending_run("a") == run_id
    assert await state.register_replica("a", LEASE, "restarted") == []
    assert await status_of(state, run_id) == RunStatus(PENDING)
    claimed = await state.claim_pending_run("b")
    assert claimed is not None
    assert claimed.run_id == run_id


async def test_registering_takes_a_lease_until_now_plus_its_length(
    state: LinkState, clock: FakeClock
) -> None:
    await state.register_replica("a", LEASE, "restarted")
    assert await state.get_replica_leases() == {"a": clock.now + LEASE}


# --- Renewing ------------------------------------------------------------------------------
async def test_renewing_moves_the_lease_on_while_it_is_held(
    state: LinkState, clock: FakeClock
) -> None:
    await state.register_replica("a", LEASE, "restarted")
    clock.advance(LEASE / 2)
    assert await state.renew_replica_lease("a", 2 * LEASE)
    assert await state.get_replica_leases() == {"a": clock.now + 2 * LEASE}


async def test_renewing_a_lease_that_was_reaped_or_never_taken_fails(
    state: LinkState, clock: FakeClock
) -> None:
    """A replica that lost its lease must register again (its runs are already failed)."""
    assert not await state.renew_replica_lease("never", LEASE)
    await state.register_replica("a", LEASE, "restarted")
    clock.advance(LEASE)
    assert [entry.replica_id for entry in await state.reap_lost_replicas(replica_gone)] == ["a"]
    assert not await state.renew_replica_lease("a", LEASE)
    assert await state.get_replica_leases() == {}


# --- Reaping -------------------------------------------------------------------------------
async def test_reaping_a_lapsed_lease_fails_its_runs_and_frees_its_reservations(
    state: LinkState, clock: FakeClock
) -> None:
    """From the lease's last instant on, its runs fail naming it; its reservation is queued."""
    lost_running, lost_starting, reserved = await holdings(state, clock, "a")
    untouched = await new_run(state)
    clock.advance(LEASE - 0.5)
    assert await state.reap_lost_replicas(replica_gone) == []  # not lapsed yet
    clock.advance(0.5)
    reaped = await state.reap_lost_replicas(replica_gone)
    assert reaped == [LostReplica("a", [lost_running, lost_starting], [reserved])]
    assert await status_of(state, lost_running) == lost("replica a lost")
    assert await status_of(state, lost_starting) == lost("replica a lost")
    assert await status_of(state, reserved) == RunStatus(PENDING)
    await state.register_replica("b", LEASE, "restarted")
    claimed = await state.claim_pending_run("b")  # the reservation went back to the queue
    assert claimed is not None
    assert claimed.run_id == reserved
    assert await status_of(state, untouched) == RunStatus(PENDING)
    assert await state.reap_lost_replicas(replica_gone) == []  # each lapse is reaped once


async def test_a_reaper_never_drops_its_own_lapsed_lease_but_another_replica_does(
    state: LinkState, clock: FakeClock
) -> None:
    """A replica that reaps is alive: a renewal held up past its lease (a saturated state)
    must not fail its own runs; a lapse is still another replica's to reap."""
    lost_running, lost_starting, reserved = await holdings(state, clock, "a")
    clock.advance(LEASE + 1)
    assert await state.reap_lost_replicas(replica_gone, reaper="a") == []
    assert await status_of(state, lost_running) == RunStatus(RUNNING)
    assert await state.renew_replica_lease("a", LEASE)  # still held: the renewal lands
    clock.advance(LEASE)
    reaped = await state.reap_lost_replicas(replica_gone, reaper="b")
    assert reaped == [LostReplica("a", [lost_running, lost_starting], [reserved])]


async def test_reaping_a_lapsed_replica_that_held_nothing_reports_it_with_no_runs(
    state: LinkState, clock: FakeClock
) -> None:
    await state.register_replica("a", LEASE, "restarted")
    clock.advance(LEASE)
    assert await state.reap_lost_replicas(replica_gone) == [LostReplica("a", [], [])]
    assert await state.get_replica_leases() == {}


async def test_reaping_also_fails_runs_claimed_by_a_replica_without_a_lease(
    state: LinkState, clock: FakeClock
) -> None:
    """A claim that raced its replica's reaping leaves a run no lease holds: the next reap
    finishes it, named after its owner."""
    await runs_created(state, clock, 1)
    await state.register_replica("a", LEASE, "restarted")
    orphan = await running(state, "late")
    assert await state.reap_lost_replicas(replica_gone) == [LostReplica("late", [orphan], [])]
    assert await status_of(state, orphan) == lost("replica late lost")
    assert await state.get_replica_leases() == {"a": clock.now + LEASE}


# --- Releasing -----------------------------------------------------------------------------
async def test_releasing_hands_over_at_once_failing_runs_and_freeing_reservations(
    state: LinkState, clock: FakeClock
) -> None:
    first, second, reserved = await holdings(state, clock, "a")
    assert await state.release_replica("a", "replica a shut down") == [first, second]
    assert await status_of(state, first) == lost("replica a shut down")
    assert await status_of(state, second) == lost("replica a shut down")
    assert await state.get_replica_leases() == {}
    claimed = await state.claim_pending_run("b")
    assert claimed is not None
    assert claimed.run_id == reserved
    assert await state.release_replica("a", "again") == []


async def test_a_run_read_before_a_reap_or_a_release_reads_failed_after_it(
    state: LinkState, clock: FakeClock
) -> None:
    """Neither leaves a stale copy of the runs it finished (SQLite caches run rows)."""
    await runs_created(state, clock, 2)
    await state.register_replica("a", LEASE, "restarted")
    reaped = await running(state, "a")
    assert await status_of(state, reaped) == RunStatus(RUNNING)
    clock.advance(LEASE)
    await state.reap_lost_replicas(replica_gone)
    assert await status_of(state, reaped) == lost("replica a lost")
    await state.register_replica("b", LEASE, "restarted")
    released = await running(state, "b")
    assert await status_of(state, released) == RunStatus(RUNNING)
    await state.release_replica("b", "replica b shut down")
    assert await status_of(state, released) == lost("replica b shut down")


# --- Backends one process opens ------------------------------------------------------------
async def test_on_a_backend_one_process_opens_registering_ends_every_other_lease(
    one_process_state: LinkState, clock: FakeClock
) -> None:
    """No other process can hold a lease there: what an earlier one held cannot go on."""
    state = one_process_state
    await runs_created(state, clock, 2)
    await state.register_replica("old", LEASE, "restarted")
    held = await running(state, "old")
    reserved = await state.reserve_pending_run("old")
    assert await state.register_replica("new", LEASE, "SuperLink restarted") == [held]
    assert await status_of(state, held) == lost("SuperLink restarted")
    assert await state.get_replica_leases() == {"new": clock.now + LEASE}
    claimed = await state.claim_pending_run("new")
    assert claimed is not None
    assert claimed.run_id == reserved


async def test_on_a_backend_one_process_opens_listening_hears_nothing_until_cancelled(
    one_process_state: LinkState, clock: FakeClock
) -> None:
    """Every change there is this process's own: nothing to hear, and no error either."""
    calls: list[None] = []
    async with anyio.create_task_group() as group:
        group.start_soon(one_process_state.listen, lambda: calls.append(None))
        await new_run(one_process_state)
        await anyio.sleep(0.1)
        group.cancel_scope.cancel()
    assert calls == []
