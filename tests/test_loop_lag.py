"""The loop-lag signal: zero on an idle loop, high while the loop is stuck, and smoothed."""

from __future__ import annotations

import time

import anyio
import pytest

from superlink_async.loop_lag import SMOOTHING, TICK, LoopLag, follow
from tests.polling import eventually

pytestmark = pytest.mark.anyio


async def test_an_idle_loop_runs_on_time() -> None:
    lag = LoopLag()
    async with anyio.create_task_group() as tasks:
        await tasks.start(lag.run)
        await anyio.sleep(10 * TICK)
        assert lag.level < 0.02
        tasks.cancel_scope.cancel()


async def test_a_stuck_loop_raises_the_level_and_it_falls_back_once_the_loop_is_free() -> None:
    lag = LoopLag()
    async with anyio.create_task_group() as tasks:
        await tasks.start(lag.run)
        await anyio.sleep(2 * TICK)
        time.sleep(5 * SMOOTHING)  # noqa: ASYNC251 (the point: nothing else runs meanwhile)
        await eventually(lambda: lag.level > 0.5 * SMOOTHING, 5, every=0)
        await eventually(lambda: lag.level < 0.01, 10)
        tasks.cancel_scope.cancel()


def test_one_short_stall_moves_the_level_only_part_of_the_way() -> None:
    """A single 50 ms stall (a collection, a burst of connections) is not read as overload."""
    level = follow(0.0, TICK + 0.05, TICK)
    assert 0.005 < level < 0.02


def test_a_loop_that_stays_behind_moves_the_level_all_the_way() -> None:
    """A second of ticks that each fire 100 ms late: the level is then nearly 100 ms."""
    level = 0.0
    for _ in range(8):
        level = follow(level, TICK + 0.1, TICK)
    assert 0.09 < level <= 0.1


def test_an_idle_loop_brings_the_level_down_within_a_second() -> None:
    level = 0.5
    for _ in range(50):
        level = follow(level, TICK, TICK)
    assert level < 0.01


def test_a_server_that_does_not_measure_reports_no_lag() -> None:
    assert LoopLag().level == 0.0
