"""The supervisor: named tasks stopped stage by stage; a crash or a return is exit 100."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import TaskStatus

from superlink_async import ExitCode, SuperLinkExit
from superlink_async.runtime.supervisor import Supervisor, TaskCrashedError

pytestmark = pytest.mark.anyio


async def forever(ended: list[str], name: str) -> None:
    """A component: runs until cancelled, and notes that its cleanup ran."""
    try:
        await anyio.sleep_forever()
    finally:
        ended.append(name)


async def fail_soon() -> None:
    await anyio.sleep(0.01)
    raise RuntimeError("boom")


async def return_soon() -> None:
    await anyio.sleep(0.01)


async def test_a_task_that_raises_ends_the_others_and_exits_100_naming_it() -> None:
    ended: list[str] = []
    with pytest.raises(SuperLinkExit) as exit_info:
        async with Supervisor() as supervisor:
            supervisor.start_soon("bystander", forever, ended, "bystander", stage="a")
            supervisor.start_soon("faulty", fail_soon, stage="b")
            await anyio.sleep(5)
            pytest.fail("the crash did not cancel the block")
    assert exit_info.value.code is ExitCode.SUPERLINK_THREAD_CRASH
    assert exit_info.value.message == "Task 'faulty' crashed: RuntimeError: boom"
    assert isinstance(exit_info.value.__cause__, RuntimeError)
    assert ended == ["bystander"]


async def test_a_task_that_returns_before_it_is_stopped_is_a_crash() -> None:
    """A component that quietly ends (a listener that stops serving) is not left unnoticed."""
    with pytest.raises(SuperLinkExit) as exit_info:
        async with Supervisor() as supervisor:
            supervisor.start_soon("quitter", return_soon, stage="a")
            await anyio.sleep(5)
            pytest.fail("the return did not cancel the block")
    assert exit_info.value.code is ExitCode.SUPERLINK_THREAD_CRASH
    assert exit_info.value.message == (
        "Task 'quitter' crashed: TaskReturnedError: it returned before it was stopped "
        "(a supervised task runs until then)"
    )


async def test_a_task_that_returns_while_another_crashed_leaves_the_first_crash_named() -> None:
    """Ending quietly because everything is being cancelled is no crash of its own."""

    async def return_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            return

    with pytest.raises(SuperLinkExit) as exit_info:
        async with Supervisor() as supervisor:
            supervisor.start_soon("polite", return_when_cancelled, stage="a")
            supervisor.start_soon("faulty", fail_soon, stage="b")
            await anyio.sleep(5)
    assert exit_info.value.message == "Task 'faulty' crashed: RuntimeError: boom"


async def test_a_task_that_fails_before_it_started_fails_start_naming_it() -> None:
    async def cannot_bind(*, task_status: TaskStatus[None]) -> None:
        raise OSError("address in use")

    with pytest.raises(SuperLinkExit) as exit_info:
        async with Supervisor() as supervisor:
            await supervisor.start("listener", cannot_bind, stage="a")
    assert exit_info.value.code is ExitCode.SUPERLINK_THREAD_CRASH
    assert exit_info.value.message == "Task 'listener' crashed: OSError: address in use"
    assert isinstance(exit_info.value.__cause__, OSError)


async def test_stop_ends_one_stage_after_its_cleanup_and_leaves_the_others_running() -> None:
    ended: list[str] = []

    async def slow_cleanup() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.2)
            ended.append("slow")

    async with Supervisor() as supervisor:
        supervisor.start_soon("first", forever, ended, "first", stage="early")
        supervisor.start_soon("slow", slow_cleanup, stage="early")
        supervisor.start_soon("late", forever, ended, "late", stage="late")
        await anyio.sleep(0.01)
        assert supervisor.running == ["first", "slow", "late"]
        await supervisor.stop("early")
        assert ended == ["first", "slow"]
        assert supervisor.running == ["late"]
        await supervisor.stop("late")
        assert ended == ["first", "slow", "late"]
        assert supervisor.running == []


async def test_leaving_the_block_cancels_what_no_stage_stopped() -> None:
    ended: list[str] = []
    with anyio.fail_after(5):
        async with Supervisor() as supervisor:
            await supervisor.start("listener", _started_forever, ended, stage="a")
    assert ended == ["listener"]


async def _started_forever(ended: list[str], *, task_status: TaskStatus[None]) -> None:
    task_status.started()
    await forever(ended, "listener")


def test_the_crash_error_names_the_task_and_carries_the_cause() -> None:
    cause = ValueError("bad")
    crash = TaskCrashedError("fleet-api", cause)
    assert str(crash) == "Task 'fleet-api' crashed: ValueError: bad"
    assert (crash.task_name, crash.cause) == ("fleet-api", cause)
