"""The ServerApp scheduler with real child processes (not flwr-serverapp: commands that fail)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from superlink_async.config import Address
from superlink_async.runtime.scheduler import (
    EXIT_GRACE,
    MAX_LAUNCH_FAILURES,
    POLL_SECONDS,
    SIMULATION,
    RunScheduler,
)
from superlink_async.services.runs import RunEvents
from superlink_async.state import LinkState, RunRecord, open_state
from superlink_async.state.base import RunStatus
from superlink_async.wire.recorddict_pb2 import ConfigRecord
from tests.polling import eventually, process_gone

pytestmark = pytest.mark.anyio

ADDRESS = Address("0.0.0.0", 9091)
REPLICA = "replica-under-test"
#: A child that never claims: it sleeps until it is ended.
SLEEPS = (sys.executable, "-c", "import time; time.sleep(60)")


def scheduler_for(
    state: LinkState, command: tuple[str, ...], events: RunEvents | None = None
) -> RunScheduler:
    """A scheduler of ``REPLICA`` launching ``command`` for a server on ``ADDRESS``."""
    return RunScheduler(state, events or RunEvents(), command, ADDRESS, replica_id=REPLICA)


@pytest.fixture
async def state() -> AsyncIterator[LinkState]:
    async with open_state(":flwr-in-memory-state:") as opened:
        yield opened


async def pending_run(state: LinkState) -> int:
    return await state.create_run("a/b", "1.0", "0" * 64, {}, ConfigRecord())


async def wait_until_finished(state: LinkState, run_id: int, seconds: float) -> RunRecord:
    with anyio.fail_after(seconds):
        while True:
            run = await state.get_run(run_id)
            assert run is not None
            if run.status.status == "finished":
                return run
            await anyio.sleep(0.05)


async def run_scheduler(state: LinkState, command: tuple[str, ...], run_id: int) -> RunRecord:
    scheduler = scheduler_for(state, command)
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run)
        run = await wait_until_finished(state, run_id, seconds=20)
        group.cancel_scope.cancel()
    return run


async def test_children_dial_loopback_when_the_server_binds_all_interfaces(
    state: LinkState,
) -> None:
    scheduler = scheduler_for(state, ("flwr-serverapp",))
    assert scheduler.argv == [
        "flwr-serverapp",
        "--run-once",
        "--serverappio-api-address",
        "127.0.0.1:9091",
        "--insecure",
    ]


async def test_simulation_children_dial_simulationio_on_loopback(state: LinkState) -> None:
    """flwr-simulation gets the reference's flags; unlike the reference, 0.0.0.0 is rewritten
    to 127.0.0.1 for it too, as for flwr-serverapp."""
    scheduler = RunScheduler(
        state,
        RunEvents(),
        ("flwr-simulation",),
        Address("0.0.0.0", 9096),
        replica_id=REPLICA,
        app=SIMULATION,
    )
    assert scheduler.argv == [
        "flwr-simulation",
        "--run-once",
        "--simulationio-api-address",
        "127.0.0.1:9096",
        "--insecure",
    ]


async def test_a_missing_command_fails_the_run_reserved_for_it_with_the_reason(
    state: LinkState,
) -> None:
    """The run that fails is the one this replica reserved: an older one, reserved by
    another replica sharing the state, stays pending for that replica's child."""
    theirs = await pending_run(state)
    assert await state.reserve_pending_run("other-replica") == theirs
    ours = await pending_run(state)
    run = await run_scheduler(state, ("/nonexistent/flwr-serverapp",), ours)
    assert run.status.sub_status == "failed"
    assert "Could not launch `/nonexistent/flwr-serverapp`" in run.status.details
    other = await state.get_run(theirs)
    assert other is not None and other.status.status == "pending"


async def test_the_run_is_reserved_for_this_replica_before_its_child_is_launched(
    state: LinkState,
) -> None:
    """While the child starts, another replica cannot claim the oldest run: its claim gets
    the next one; a claim through this replica (the child's) gets the reserved run."""
    oldest = await pending_run(state)
    newer = await pending_run(state)
    scheduler = scheduler_for(state, SLEEPS)
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run)
        await eventually(lambda: scheduler.alive > 0, seconds=10)
        elsewhere = await state.claim_pending_run("other-replica")
        assert elsewhere is not None and elsewhere.run_id == newer
        ours = await state.claim_pending_run(REPLICA)
        assert ours is not None and (ours.run_id, ours.owner) == (oldest, REPLICA)
        group.cancel_scope.cancel()


@pytest.mark.parametrize("sub_status", ["stopped", "failed"])
async def test_a_run_finished_elsewhere_ends_its_child(state: LinkState, sub_status: str) -> None:
    """A run of this replica's child finished by someone else (``flwr stop`` through
    another replica, a reaper) ends the child, though nobody told this scheduler: it reads
    its children's run statuses at every tick (at least every POLL_SECONDS). A stopped
    run's child is ended at once, another gets EXIT_GRACE to exit by itself first."""
    run_id = await pending_run(state)
    scheduler = scheduler_for(state, SLEEPS)
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run)
        await eventually(lambda: scheduler.alive > 0, seconds=10)
        claimed = await state.claim_pending_run(REPLICA)
        assert claimed is not None
        scheduler.run_claimed(run_id)
        await state.update_run_status(run_id, RunStatus("finished", sub_status, "elsewhere"))
        grace = 0.0 if sub_status == "stopped" else EXIT_GRACE
        await eventually(lambda: scheduler.alive == 0, seconds=POLL_SECONDS + grace + 3)
        group.cancel_scope.cancel()
    run = await state.get_run(run_id)
    assert run is not None and run.status.details == "elsewhere"


async def test_a_child_that_keeps_dying_before_claiming_fails_the_run(state: LinkState) -> None:
    run_id = await pending_run(state)
    dies = (sys.executable, "-c", "raise SystemExit(3)")
    run = await run_scheduler(state, dies, run_id)
    assert run.status.sub_status == "failed"
    assert f"exited {MAX_LAUNCH_FAILURES} times (last exit code 3)" in run.status.details


async def test_a_child_dying_mid_run_fails_that_run(state: LinkState) -> None:
    run_id = await pending_run(state)
    scheduler = scheduler_for(state, (sys.executable, "-c", "import time; time.sleep(1)"))
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run)
        await eventually(lambda: scheduler.alive > 0, seconds=10)
        claimed = await state.claim_pending_run(REPLICA)
        assert claimed is not None
        scheduler.run_claimed(run_id)
        run = await wait_until_finished(state, run_id, seconds=10)
        group.cancel_scope.cancel()
    assert run.status.sub_status == "failed"
    assert run.status.details == "ServerApp process exited with code 0 before the run finished"


async def test_stopping_a_run_ends_its_child(state: LinkState) -> None:
    run_id = await pending_run(state)
    scheduler = scheduler_for(state, SLEEPS)
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run)
        await eventually(lambda: scheduler.alive > 0, seconds=10)
        scheduler.run_claimed(run_id)
        with anyio.fail_after(10):
            await scheduler.stop_run(run_id)
        await eventually(lambda: scheduler.alive == 0, seconds=10)
        group.cancel_scope.cancel()


async def test_cancelling_the_scheduler_ends_every_child(state: LinkState) -> None:
    await pending_run(state)
    scheduler = scheduler_for(state, SLEEPS)
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            await group.start(scheduler.run)
            await eventually(lambda: scheduler.alive > 0, seconds=10)
            pids = scheduler.pids
            group.cancel_scope.cancel()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_stopping_a_run_ends_what_its_child_started(state: LinkState, tmp_path: Path) -> None:
    """A stopped run's child is ended with its whole process group, as flwr-simulation's Ray
    processes must be: here a grandchild that would otherwise sleep on."""
    run_id = await pending_run(state)
    pid_file = tmp_path / "grandchild.pid"
    starts_a_grandchild = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(60)"
    )
    scheduler = scheduler_for(state, (sys.executable, "-c", starts_a_grandchild))
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run)
        await eventually(lambda: pid_file.is_file() and pid_file.read_text() != "", seconds=10)
        grandchild = int(pid_file.read_text())
        scheduler.run_claimed(run_id)
        with anyio.fail_after(10):
            await scheduler.stop_run(run_id)
        await eventually(lambda: process_gone(grandchild), seconds=5)
        group.cancel_scope.cancel()


async def test_a_waiting_child_keeps_a_reservation_when_its_run_is_stopped_or_it_is_lost(
    state: LinkState,
) -> None:
    """The run reserved for a child that has not claimed yet is stopped: the scheduler
    reserves the next pending run for the same child. Its replica then loses the lease and
    takes it again (which drops its reservations): it reserves again. Each time another
    replica's claim cannot take that run; the child's own claim does."""
    events = RunEvents()
    first = await pending_run(state)
    scheduler = scheduler_for(state, SLEEPS, events)
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run)
        await eventually(lambda: scheduler.alive > 0, seconds=10)
        second = await pending_run(state)
        await state.update_run_status(first, RunStatus("finished", "stopped", ""))
        events.notify()
        await anyio.sleep(POLL_SECONDS + 0.5)  # a tick, whatever woke it
        assert await state.claim_pending_run("other-replica") is None
        await state.register_replica(REPLICA, 30.0, "")  # taken again: reservations dropped
        scheduler.reservation_lost()
        events.notify()
        await anyio.sleep(POLL_SECONDS + 0.5)
        assert await state.claim_pending_run("other-replica") is None
        claimed = await state.claim_pending_run(REPLICA)
        assert claimed is not None and claimed.run_id == second
        assert scheduler.launches == 1  # the same child all along
        group.cancel_scope.cancel()
