"""Signature checks in worker processes: right answers to the right calls, whatever happens.

Most tests set ``spill_lag=0`` so that every check goes to a worker; the default hands
checks out only while the loop is behind, which the last tests pin.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import anyio
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from superlink_async.loop_lag import LoopLag
from superlink_async.runtime import signature_workers
from superlink_async.runtime.signature_workers import (
    SPILL_LAG,
    WorkerSignatures,
    default_workers,
)
from superlink_async.services.signatures import is_signed_by
from tests.node_keys import NodeKey
from tests.polling import eventually

pytestmark = pytest.mark.anyio

KEYS = [NodeKey() for _ in range(3)]


def signed(key: NodeKey, text: str) -> tuple[bytes, bytes, bytes]:
    data = text.encode()
    return key.pem, data, key.private.sign(data, ec.ECDSA(hashes.SHA256()))


async def test_many_checks_at_once_each_get_their_own_answer() -> None:
    """Hundreds in flight (so they share batches) over two workers: no answer goes astray."""
    checks = []
    for index in range(300):
        pem, data, signature = signed(KEYS[index % 3], f"t{index}")
        if index % 4 == 0:
            pem = KEYS[(index + 1) % 3].pem  # signed by another key
        checks.append(((pem, data, signature), index % 4 != 0))
    workers = WorkerSignatures(2, LoopLag(), spill_lag=0)
    answers: dict[int, bool] = {}

    async def check(index: int) -> None:
        answers[index] = await workers.is_signed_by(*checks[index][0])

    async with anyio.create_task_group() as tasks:
        await tasks.start(workers.run)
        async with anyio.create_task_group() as calls:
            for index in range(len(checks)):
                calls.start_soon(check, index)
        tasks.cancel_scope.cancel()
    assert answers == {index: expected for index, (_, expected) in enumerate(checks)}


async def test_a_worker_that_dies_leaves_its_checks_to_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A killed worker costs no call its answer: pending and later checks run on the loop."""
    workers = WorkerSignatures(1, LoopLag(), spill_lag=0)
    good = signed(KEYS[0], "alive")
    async with anyio.create_task_group() as tasks:
        await tasks.start(workers.run)
        (worker,) = workers._running
        assert worker.transport is not None
        os.kill(worker.transport.get_pid(), signal.SIGKILL)
        with caplog.at_level(logging.WARNING), anyio.fail_after(5):
            assert await workers.is_signed_by(*good)
            await worker.exited.wait()
            await anyio.sleep(0.01)  # the watcher logs right after
            assert await workers.is_signed_by(*good)
            assert not await workers.is_signed_by(*signed(KEYS[1], "forged")[:2], b"x")
        tasks.cancel_scope.cancel()
    assert "signature worker process ended" in caplog.text


async def test_workers_start_before_ready_and_are_gone_after_stop() -> None:
    workers = WorkerSignatures(2, LoopLag())
    async with anyio.create_task_group() as tasks:
        await tasks.start(workers.run)
        running = list(workers._running)
        assert len(running) == 2 and all(worker.alive for worker in running)
        tasks.cancel_scope.cancel()
    assert all(worker.exited.is_set() for worker in running)
    # Not running: checks are answered on the loop.
    assert await workers.is_signed_by(*signed(KEYS[2], "after"))


def test_workers_by_default_only_where_cpus_are_left_for_them() -> None:
    assert [default_workers(cpus) for cpus in (1, 2, 3, 4, 8)] == [0, 0, 0, 3, 7]


async def test_a_worker_that_cannot_start_leaves_checks_to_the_loop_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that exits before its handshake is noticed when it ends, not after 30 s."""
    monkeypatch.setattr(sys, "executable", "/bin/false")
    workers = WorkerSignatures(1, LoopLag())
    with caplog.at_level(logging.WARNING), anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            await tasks.start(workers.run)
            assert workers._running == []
            assert await workers.is_signed_by(*signed(KEYS[0], "inline"))
            tasks.cancel_scope.cancel()
    assert "signature worker did not start" in caplog.text


@pytest.fixture
def checks_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The data of every check made in this process (workers check in theirs)."""
    made: list[bytes] = []
    check: Callable[[bytes, bytes, bytes], bool] = is_signed_by

    def counted(pem: bytes, data: bytes, signature: bytes) -> bool:
        made.append(data)
        return check(pem, data, signature)

    monkeypatch.setattr(signature_workers, "is_signed_by", counted)
    return made


async def test_checks_stay_on_the_loop_while_it_keeps_up(checks_on_the_loop: list[bytes]) -> None:
    """No wait for a worker when the loop has time: the check is made right there."""
    lag = LoopLag()
    workers = WorkerSignatures(1, lag)
    async with anyio.create_task_group() as tasks:
        await tasks.start(lag.run)
        await tasks.start(workers.run)
        await anyio.sleep(0.1)  # a few lag measurements of an idle loop
        assert not workers.behind
        assert await workers.is_signed_by(*signed(KEYS[0], "idle"))
        tasks.cancel_scope.cancel()
    assert checks_on_the_loop == [b"idle"]


async def test_checks_go_to_workers_while_the_loop_is_behind(
    checks_on_the_loop: list[bytes],
) -> None:
    """A loop whose timers fire late hands checks to the workers, and takes them back."""
    lag = LoopLag()
    workers = WorkerSignatures(1, lag)
    async with anyio.create_task_group() as tasks:
        await tasks.start(lag.run)
        await tasks.start(workers.run)
        await anyio.sleep(0.05)  # the lag timer is running
        time.sleep(SPILL_LAG * 5)  # noqa: ASYNC251 (the point: the loop is stuck, its timer late)
        await eventually(lambda: workers.behind, 5, every=0)
        valid, forged = signed(KEYS[1], "behind"), (*signed(KEYS[1], "forged")[:2], b"x")
        answers = await asyncio.gather(workers.is_signed_by(*valid), workers.is_signed_by(*forged))
        assert list(answers) == [True, False]
        assert checks_on_the_loop == []
        await eventually(lambda: not workers.behind, 5, every=0.005)
        assert await workers.is_signed_by(*signed(KEYS[2], "caught up"))
        tasks.cancel_scope.cancel()
    assert checks_on_the_loop == [b"caught up"]


async def test_spill_lag_0_sends_every_check_to_a_worker(checks_on_the_loop: list[bytes]) -> None:
    """Even on an idle loop, whose timers may fire a clock tick early."""
    workers = WorkerSignatures(1, LoopLag(), spill_lag=0)
    async with anyio.create_task_group() as tasks:
        await tasks.start(workers.run)
        await anyio.sleep(0.1)
        assert await workers.is_signed_by(*signed(KEYS[0], "idle"))
        tasks.cancel_scope.cancel()
    assert checks_on_the_loop == []
