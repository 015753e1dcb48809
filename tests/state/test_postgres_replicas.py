"""Replicas on one PostgreSQL database: races between processes, live peers, change notices.

``first`` and ``second`` (conftest) are two replicas on one database, sharing one fake clock
as synchronised machines do. What every backend does alike is pinned by ``test_replicas``.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg
import pytest

from superlink_async.state import rules
from superlink_async.state.base import (
    PENDING,
    RUNNING,
    LostReplica,
    RunStatus,
    StateUnavailableError,
)
from superlink_async.state.columns import to_db
from superlink_async.state.postgres import PostgresLinkState
from superlink_async.state.postgres.kept import Kept
from superlink_async.state.postgres.notices import CHANNEL, INSTRUCTIONS, NODE
from superlink_async.state.postgres.rows import claim_rank, reapable
from superlink_async.testing.clock import FakeClock
from superlink_async.testing.postgres import PostgresServer, running_postgres_server
from superlink_async.wire.message_pb2 import Message
from tests.polling import eventually
from tests.state.conftest import opened
from tests.state.test_postgres import PING, new_run
from tests.state.test_replicas import LEASE, replica_gone, running, status_of
from tests.state.test_sqlite import instruction

pytestmark = pytest.mark.anyio


class Wakes:
    """Counts ``on_change`` calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self.heard_at = 0.0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.heard_at = time.perf_counter()
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def next(self, seconds: float = 10.0) -> None:
        await asyncio.wait_for(self._event.wait(), seconds)


# --- Races ---------------------------------------------------------------------------------
async def test_reservations_and_claims_racing_on_two_pools_hand_each_run_out_once(
    first: PostgresLinkState, second: PostgresLinkState
) -> None:
    """Ten reservations at once take ten different runs; ten claims at once start each run
    once, each by the replica that reserved it."""
    runs = [await new_run(first) for _ in range(10)]
    replicas = [(first, "a"), (second, "b")] * 5
    reserved = await asyncio.gather(*(state.reserve_pending_run(r) for state, r in replicas))
    assert sorted(run_id for run_id in reserved if run_id is not None) == sorted(runs)
    claims = await asyncio.gather(*(state.claim_pending_run(r) for state, r in replicas))
    owners = {run.run_id: run.owner for run in claims if run is not None}
    assert len([run for run in claims if run is not None]) == len(owners) == 10
    assert owners == {run_id: r for run_id, (_, r) in zip(reserved, replicas, strict=True)}


async def test_reservations_and_claims_mixed_at_once_never_share_a_run(
    first: PostgresLinkState, second: PostgresLinkState
) -> None:
    runs = [await new_run(first) for _ in range(10)]
    results = await asyncio.gather(
        *(first.reserve_pending_run("a") for _ in range(5)),
        *(second.claim_pending_run("b") for _ in range(5)),
    )
    reserved = [run_id for run_id in results[:5] if isinstance(run_id, int)]
    claimed = [run.run_id for run in results[5:] if run is not None and not isinstance(run, int)]
    assert len(reserved) == len(claimed) == 5
    assert sorted(reserved + claimed) == sorted(runs)
    for run_id in reserved:
        assert await status_of(first, run_id) == RunStatus(PENDING)


async def test_claims_keep_the_queue_order_across_replicas(
    first: PostgresLinkState, second: PostgresLinkState, clock: FakeClock
) -> None:
    runs = []
    for _ in range(4):
        runs.append(await new_run(first))
        clock.advance(1.0)
    order = []
    for state, replica in [(second, "b"), (first, "a")] * 2:
        claimed = await state.claim_pending_run(replica)
        assert claimed is not None
        order.append(claimed.run_id)
    assert order == runs


async def test_two_reapers_racing_reap_each_lapsed_lease_once(
    first: PostgresLinkState, second: PostgresLinkState, clock: FakeClock
) -> None:
    runs = [await new_run(first) for _ in range(3)]
    for replica in ("a", "b", "c"):
        await first.register_replica(replica, LEASE, "restarted")
    held = {replica: await running(first, replica) for replica in ("a", "b", "c")}
    assert sorted(held.values()) == sorted(runs)
    clock.advance(LEASE / 2)
    assert await second.renew_replica_lease("c", LEASE)
    clock.advance(LEASE / 2)
    reaps = await asyncio.gather(
        *(state.reap_lost_replicas(replica_gone) for state in [first, second] * 3)
    )
    reaped = sorted((entry for reap in reaps for entry in reap), key=lambda e: e.replica_id)
    assert reaped == [LostReplica("a", [held["a"]], []), LostReplica("b", [held["b"]], [])]
    assert await status_of(second, held["a"]) == rules.lost_run_status("replica a lost")
    assert await status_of(second, held["c"]) == RunStatus(RUNNING)
    assert set(await first.get_replica_leases()) == {"c"}


# --- Live peers ----------------------------------------------------------------------------
async def two_replicas(
    first: PostgresLinkState, second: PostgresLinkState, b_lease: float
) -> tuple[int, int, int]:
    """ "a" through ``first`` and "b" through ``second``, each running a run, "b" reserving a
    third: (a's run, b's run, b's reservation)."""
    for _ in range(3):
        await new_run(first)
    await first.register_replica("a", LEASE, "restarted")
    await second.register_replica("b", b_lease, "restarted")
    a_run = await running(first, "a")
    b_run = await running(second, "b")
    reserved = await second.reserve_pending_run("b")
    assert reserved is not None
    return a_run, b_run, reserved


async def test_registering_leaves_the_runs_of_other_live_replicas_alone(
    first: PostgresLinkState, second: PostgresLinkState, clock: FakeClock
) -> None:
    """Unlike memory and SQLite, another lease here may be another live process."""
    own, other, _ = await two_replicas(first, second, LEASE)
    assert await first.register_replica("a", LEASE, "a restarted") == [own]
    assert await status_of(first, other) == RunStatus(RUNNING)
    assert await first.claim_pending_run("a") is None  # "b"'s reservation holds
    assert set(await first.get_replica_leases()) == {"a", "b"}


async def test_reaping_fails_only_the_runs_of_the_lease_that_lapsed(
    first: PostgresLinkState, second: PostgresLinkState, clock: FakeClock
) -> None:
    lapsed, alive, reserved = await two_replicas(first, second, 3 * LEASE)
    clock.advance(LEASE)
    assert await second.reap_lost_replicas(replica_gone) == [LostReplica("a", [lapsed], [])]
    assert await status_of(first, alive) == RunStatus(RUNNING)
    assert await first.claim_pending_run("a") is None
    claimed = await second.claim_pending_run("b")
    assert claimed is not None
    assert claimed.run_id == reserved


async def test_a_lease_renewed_by_its_replica_is_not_reaped(
    first: PostgresLinkState, second: PostgresLinkState, clock: FakeClock
) -> None:
    await first.register_replica("a", LEASE, "restarted")
    clock.advance(LEASE)
    assert await first.renew_replica_lease("a", LEASE)  # lapsed, but nobody reaped it yet
    assert await second.reap_lost_replicas(replica_gone) == []
    assert await second.get_replica_leases() == {"a": clock.now + LEASE}


async def test_the_sql_lease_and_claim_rules_give_the_rules_answers_on_the_server(
    first: PostgresLinkState, postgres_url: str
) -> None:
    cases = [
        ("a", until, now, reaper)
        for until, now in [(100.0, 99.0), (100.0, 100.0), (100.0, 100.5)]
        for reaper in (None, "a", "b")
    ]
    ranks = [("", "a"), ("a", "a"), ("b", "a"), ("", "")]
    connection = await asyncpg.connect(postgres_url)
    try:
        reaped = await connection.fetch(
            f"SELECT {reapable('r', 'u', 'n', 'x')} AS reaped FROM unnest($1::text[], "
            "$2::float8[], $3::float8[], $4::text[]) WITH ORDINALITY AS cases (r, u, n, x, i) "
            "ORDER BY i",
            *(list(column) for column in zip(*cases, strict=True)),
        )
        ranked = await connection.fetch(
            f"SELECT {claim_rank('r', 'x')} AS rank FROM unnest($1::text[], $2::text[]) "
            "WITH ORDINALITY AS cases (r, x, i) ORDER BY i",
            *(list(column) for column in zip(*ranks, strict=True)),
        )
    finally:
        await connection.close()
    assert [row["reaped"] for row in reaped] == [rules.reapable(*case) for case in cases]
    assert [row["rank"] for row in ranked] == [rules.claim_rank(*case) for case in ranks]


# --- Change notices ------------------------------------------------------------------------
class Notices:
    """The notices on ``CHANNEL``, heard on a connection of the test's own (free for raw SQL)."""

    def __init__(self, connection: asyncpg.Connection[Any]) -> None:
        self.connection = connection
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def heard(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        self._queue.put_nowait(str(payload))

    async def next(self) -> str:
        """The next notice's payload (fail after 10 s)."""
        return await asyncio.wait_for(self._queue.get(), 10)


@asynccontextmanager
async def heard_notices(url: str) -> AsyncIterator[Notices]:
    """Listen on ``CHANNEL`` of the database at ``url`` for the block's length."""
    connection = await asyncpg.connect(url)
    notices = Notices(connection)
    try:
        await connection.add_listener(CHANNEL, notices.heard)
        yield notices
    finally:
        await connection.close()


async def test_each_change_to_a_run_or_a_log_sends_a_notice_naming_it(
    first: PostgresLinkState, postgres_url: str, clock: FakeClock
) -> None:
    """Creating, reserving, claiming, moving and appending a log each notify; so do the
    register, reap and release that change runs."""
    async with heard_notices(postgres_url) as notices:
        run_id = await new_run(first)
        stored = to_db(run_id)
        assert await notices.next() == f"run {stored}"
        await first.reserve_pending_run("a")
        assert await notices.next() == f"run {stored}"
        await first.claim_pending_run("a")
        assert await notices.next() == f"run {stored}"
        await first.update_run_status(run_id, RunStatus(RUNNING))
        assert await notices.next() == f"run {stored}"
        await first.add_serverapp_log(run_id, "line")
        assert await notices.next() == f"log {stored}"
        await first.register_replica("a", LEASE, "restarted")  # fails the run "a" held
        assert await notices.next() == "runs"
        other = to_db(await new_run(first))
        await running(first, "a")  # a claim, then a status change
        assert [await notices.next() for _ in range(3)] == [f"run {other}"] * 3
        clock.advance(LEASE)
        await first.reap_lost_replicas(replica_gone)
        assert await notices.next() == "runs"
        await first.release_replica("a", "gone")  # nothing left to change: no notice
        await first.add_serverapp_log(run_id, "after")
        assert await notices.next() == f"log {stored}"


async def test_listen_wakes_on_another_replicas_run_status_and_log_changes(
    first: PostgresLinkState, second: PostgresLinkState
) -> None:
    """``second`` hears what ``first`` writes: a new run, a status change, a log line."""
    wakes = Wakes()
    async with anyio.create_task_group() as group:
        group.start_soon(second.listen, wakes)
        await wakes.next()  # listening (the call made on connecting)
        latencies, writes = [], []
        run_id = await new_run(first)
        for step in range(50):
            wakes.clear()
            started = time.perf_counter()
            if step == 0:
                await first.update_run_status(run_id, RunStatus("starting"))
            elif step == 1:
                await first.update_run_status(run_id, RunStatus(RUNNING))
            elif step % 2:
                await first.add_serverapp_log(run_id, f"line {step}\n")
            else:
                await new_run(first)
            writes.append(time.perf_counter() - started)
            await wakes.next()
            latencies.append(wakes.heard_at - started)
        group.cancel_scope.cancel()
    logging.getLogger(__name__).info(
        "listen wake-up after a write began: median %.2f ms, max %.2f ms over %d notices "
        "(the writes themselves: median %.2f ms)",
        statistics.median(latencies) * 1000,
        max(latencies) * 1000,
        len(latencies),
        statistics.median(writes) * 1000,
    )
    assert len(latencies) == 50


async def test_listen_survives_the_server_restarting_and_hears_again(
    clock: FakeClock, log_records: list[logging.LogRecord]
) -> None:
    """The lost connection is warned about once, retried, and notices flow again."""
    with running_postgres_server() as own_server:
        await listen_through_a_restart(own_server, clock, log_records)


async def listen_through_a_restart(
    own_server: PostgresServer, clock: FakeClock, log_records: list[logging.LogRecord]
) -> None:
    url = own_server.url()
    wakes = Wakes()
    async with (
        opened(url, clock) as writer,
        opened(url, clock) as listener,
        anyio.create_task_group() as group,
    ):
        group.start_soon(listener.listen, wakes)
        await wakes.next()
        await anyio.to_thread.run_sync(own_server.stop)
        await eventually(lambda: warnings(log_records) == 1, seconds=10)
        await anyio.sleep(2.0)  # several retries, still one warning
        assert warnings(log_records) == 1
        await anyio.to_thread.run_sync(own_server.start)
        await eventually(lambda: hearing_again(log_records) == 1, seconds=20)
        wakes.clear()
        count = wakes.count
        await retried(writer)
        await wakes.next()
        assert wakes.count > count
        group.cancel_scope.cancel()


def warnings(records: list[logging.LogRecord]) -> int:
    return sum("Cannot hear other replicas" in record.getMessage() for record in records)


def hearing_again(records: list[logging.LogRecord]) -> int:
    return sum("changes to the" in r.getMessage() and "again" in r.getMessage() for r in records)


async def retried(writer: PostgresLinkState) -> None:
    """Create a run once the writer's pool reaches the restarted server again."""
    for _ in range(100):
        try:
            await new_run(writer)
            return
        except StateUnavailableError:
            await anyio.sleep(0.1)
    raise AssertionError("the writer never reached the restarted server")


# --- Facts kept while notices are heard ----------------------------------------------------
async def test_every_statement_that_may_end_a_kept_fact_sends_a_notice(
    first: PostgresLinkState, postgres_url: str, clock: FakeClock
) -> None:
    """The schema's triggers announce a deleted node, a rewritten key and a truncated table
    (``node``) and stored instructions (``ins``), whoever ran the statement: ours, or an
    operator's in psql."""
    async with heard_notices(postgres_url) as notices:
        node_id, _ = await first.create_keyed_node(PING, b"key")
        await first.delete_node(node_id)
        assert await notices.next() == NODE
        await first.create_keyed_node(PING, b"key")
        await notices.connection.execute("UPDATE node SET public_key = 'other'")
        assert await notices.next() == NODE
        await notices.connection.execute("DELETE FROM node")
        assert await notices.next() == NODE
        await first.create_keyed_node(PING, b"key")
        await notices.connection.execute("TRUNCATE node")
        assert await notices.next() == NODE
        await first.acknowledge_ping(node_id, PING)  # liveness leaves bindings as they are
        await first.create_node(PING)
        run_id = await new_run(first)
        await first.add_serverapp_log(run_id, "line")
        assert [await notices.next(), await notices.next()] == [
            f"run {to_db(run_id)}",
            f"log {to_db(run_id)}",
        ]
        node_id = await first.create_node(PING)
        await first.store_message_ins(instruction(run_id, node_id, clock))
        assert await notices.next() == INSTRUCTIONS
        await first.pull_message_ins(node_id)  # a delivery keeps "nothing waits" true
        await first.add_serverapp_log(run_id, "after")
        assert await notices.next() == f"log {to_db(run_id)}"


async def test_a_binding_read_is_kept_while_listening_and_read_again_after_a_deletion(
    first: PostgresLinkState, second: PostgresLinkState, postgres_url: str
) -> None:
    """While ``second`` listens, a binding it read is answered without the database; a node
    deleted through ``first`` or by an operator is heard, and the binding is read again.
    Without listening, every check reads the database."""

    def reads() -> int:
        return second.connection_pool.acquisitions

    node_id, _ = await first.create_keyed_node(PING, b"key")
    assert await second.is_key_bound(b"key", node_id)
    before = reads()
    assert await second.is_key_bound(b"key", node_id)
    assert reads() == before + 1  # not listening: nothing kept
    wakes = Wakes()
    async with anyio.create_task_group() as group:
        group.start_soon(second.listen, wakes)
        await wakes.next()
        assert await second.is_key_bound(b"key", node_id)
        before = reads()
        assert await second.is_key_bound(b"key", node_id)
        assert not await second.is_key_bound(b"other-key", node_id)  # never kept: read
        assert reads() == before + 1

        await first.delete_node(node_id)
        await eventually_unbound(second, b"key", node_id)
        rejoined, _ = await first.create_keyed_node(PING, b"key")
        assert await second.is_key_bound(b"key", rejoined)
        assert not await second.is_key_bound(b"key", node_id)

        connection = await asyncpg.connect(postgres_url)
        try:
            await connection.execute("DELETE FROM node")
        finally:
            await connection.close()
        await eventually_unbound(second, b"key", rejoined)
        group.cancel_scope.cancel()

    again, _ = await first.create_keyed_node(PING, b"key")
    assert await second.is_key_bound(b"key", again)
    before = reads()
    assert await second.is_key_bound(b"key", again)
    assert reads() == before + 1  # listening ended: nothing kept


async def eventually_unbound(state: PostgresLinkState, key: bytes, node_id: int) -> None:
    """Wait (up to ~5 s) until ``state`` no longer finds ``key`` bound to ``node_id``."""
    for _ in range(500):
        if not await state.is_key_bound(key, node_id):
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"{key!r} is still found bound to node {node_id}")


def test_a_read_under_way_when_a_notice_is_heard_is_not_kept() -> None:
    """The read may have seen the database before the change: keeping what it found would
    keep it for ever."""
    bindings: Kept[tuple[bytes, int]] = Kept()
    bindings.listening(True)
    read_at = bindings.generation
    bindings.forget()
    bindings.keep((b"key", 7), read_at)
    assert not bindings.holds((b"key", 7))
    bindings.keep((b"key", 7), bindings.generation)
    assert bindings.holds((b"key", 7))
    assert not bindings.holds((b"key", 8))
    bindings.listening(False)
    assert not bindings.holds((b"key", 7))
    bindings.keep((b"key", 7), bindings.generation)  # not heard: not kept
    assert not bindings.holds((b"key", 7))


async def test_a_node_with_nothing_waiting_is_answered_from_memory_until_instructions_come(
    first: PostgresLinkState, second: PostgresLinkState, postgres_url: str, clock: FakeClock
) -> None:
    """While ``second`` listens, a node it found with nothing deliverable is polled without
    the database (pulls and idle checks alike); instructions stored through ``first`` are
    heard and pulled, those stored through ``second`` at once. An instruction a pull passed
    over because another transaction held it is pulled once it is let go: an empty pull is
    kept only after a read that waits for no lock."""

    def reads() -> int:
        return second.connection_pool.acquisitions

    run_id = await new_run(first)
    node_id, _ = await first.create_keyed_node(PING, b"key")
    wakes = Wakes()
    async with anyio.create_task_group() as group:
        group.start_soon(second.listen, wakes)
        await wakes.next()
        assert await second.pull_message_ins(node_id) == []
        assert await second.is_key_bound(b"key", node_id)
        before = reads()
        assert await second.pull_message_ins(node_id) == []
        assert await second.is_idle_node(b"key", node_id)
        assert reads() == before

        sent = instruction(run_id, node_id, clock)
        sent.metadata.message_id = await first.store_message_ins(sent)
        assert await eventually_pulled(second, node_id) == [sent]
        own = instruction(run_id, node_id, clock)
        own.metadata.message_id = await second.store_message_ins(own)
        assert await second.pull_message_ins(node_id) == [own]

        held = instruction(run_id, node_id, clock)
        held.metadata.message_id = await first.store_message_ins(held)
        holder = await asyncpg.connect(postgres_url)
        try:
            hold = holder.transaction()
            await hold.start()
            await holder.execute(
                "SELECT 1 FROM message_ins WHERE message_id = $1 FOR UPDATE",
                held.metadata.message_id,
            )
            for _ in range(500):  # until the notice came and a pull read the database
                before = reads()
                assert await second.pull_message_ins(node_id) == []
                if reads() > before:
                    break
                await anyio.sleep(0.01)
            await hold.rollback()
        finally:
            await holder.close()
        assert await second.pull_message_ins(node_id) == [held]
        group.cancel_scope.cancel()


async def eventually_pulled(state: PostgresLinkState, node_id: int) -> list[Message]:
    """Pull (up to ~5 s) until ``state`` hands the node something."""
    for _ in range(500):
        if pulled := await state.pull_message_ins(node_id):
            return pulled
        await anyio.sleep(0.01)
    raise AssertionError(f"nothing was pulled for node {node_id}")
