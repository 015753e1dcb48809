"""Behaviour only the PostgreSQL backend has: several processes on one database, its schema.

Two backend objects on one database, each with its own pool, stand for two SuperLink
processes. The behaviour shared with the other backends is pinned by ``test_linkstate.py``
and what a reopen keeps by ``test_reopen.py``; both run here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from superlink_async.state import rules
from superlink_async.state.base import (
    RUNNING,
    STARTING,
    MessageRejectedError,
    PublicKeyInUseError,
    RunStatus,
    SchemaVersionError,
    StateError,
    StateUnavailableError,
)
from superlink_async.state.columns import to_db
from superlink_async.state.postgres import SCHEMA_VERSION, PostgresLinkState
from superlink_async.state.postgres.connect import borrow_connection, create_pool
from superlink_async.state.postgres.rows import is_online, ttl_lapsed
from superlink_async.state.postgres.schema import SCHEMA_LOCK_KEY, VERSION_1_SCHEMA, prepare_schema
from superlink_async.testing.clock import FakeClock
from superlink_async.testing.postgres import PASSWORD
from superlink_async.testing.processes import LOOPBACK
from superlink_async.wire.message_pb2 import Context
from superlink_async.wire.recorddict_pb2 import ConfigRecord, RecordDict
from tests.polling import eventually
from tests.state.conftest import opened
from tests.state.test_sqlite import instruction, reply

pytestmark = pytest.mark.anyio

PING = 30.0


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, beside any backend."""
    connection = await asyncpg.connect(postgres_url)
    try:
        yield connection
    finally:
        await connection.close()


async def new_run(state: PostgresLinkState) -> int:
    return await state.create_run("a", "1", "", {}, ConfigRecord())


# --- Two processes, one database -----------------------------------------------------------
async def test_a_write_through_one_process_is_read_at_once_through_the_other(
    first: PostgresLinkState, second: PostgresLinkState, clock: FakeClock
) -> None:
    """Nothing is cached: each kind of data SQLite keeps in memory is read fresh each time.

    (SQLite caches the nodes with instructions waiting, run rows and key bindings.) Each
    value is read through ``first`` before ``second`` changes it, so a cache would be warm.
    """
    node_id = await first.create_node(PING)
    assert await second.get_online_nodes() == [node_id]
    run_id = await new_run(first)

    # Instructions waiting.
    assert not await second.has_instructions_waiting(node_id)
    assert await second.pull_message_ins(node_id) == []
    sent = instruction(run_id, node_id, clock)
    sent.metadata.message_id = await first.store_message_ins(sent)
    assert await second.has_instructions_waiting(node_id)
    assert await second.pull_message_ins(node_id) == [sent]
    assert not await first.has_instructions_waiting(node_id)
    assert await first.pull_message_ins(node_id) == []

    # Run rows.
    assert (run := await first.get_run(run_id)) is not None
    assert run.status == RunStatus("pending")
    claimed = await second.claim_pending_run("second")
    assert claimed is not None
    assert claimed.run_id == run_id
    assert (run := await first.get_run(run_id)) is not None
    assert run.status == RunStatus(STARTING)
    assert await second.update_run_status(run_id, RunStatus(RUNNING))
    assert (await first.get_run_statuses([run_id]))[run_id] == RunStatus(RUNNING)
    assert await first.claim_pending_run("first") is None

    # Key bindings.
    keyed, _ = await first.create_keyed_node(PING, b"key")
    assert await first.get_node_id(b"key") == keyed
    assert await first.is_idle_node(b"key", keyed)
    await second.store_message_ins(instruction(run_id, keyed, clock))
    assert not await first.is_idle_node(b"key", keyed)
    await second.delete_node(keyed)
    assert await first.get_node_id(b"key") is None
    assert not await first.is_idle_node(b"key", keyed)
    rejoined, displaced = await second.create_keyed_node(PING, b"key")
    assert displaced is None
    assert await first.get_node_id(b"key") == rejoined
    await second.replace_known_public_keys([b"k1", b"k2"])
    assert await first.get_known_public_keys() == {b"k1", b"k2"}

    # Liveness, contexts, logs, replies.
    clock.advance(PING / 2)
    assert await second.acknowledge_ping(node_id, PING)
    clock.advance(PING)
    assert node_id in await first.get_online_nodes()
    context = Context(run_id=run_id, node_id=0, state=RecordDict())
    context.run_config["lr"].double = 0.1
    await second.set_serverapp_context(run_id, context)
    assert await first.get_serverapp_context(run_id) == context
    await second.add_serverapp_log(run_id, "line")
    assert (await first.get_serverapp_log(run_id, 0.0))[0] == "line"
    answer = reply(sent, clock)
    answer.metadata.message_id = await second.store_message_res(answer)
    assert await first.take_replies(run_id, [sent.metadata.message_id]) == [answer]
    assert (await second.get_stats()).replies_stored == 0


async def test_pulls_racing_on_two_pools_never_deliver_one_instruction_twice(
    first: PostgresLinkState, second: PostgresLinkState, clock: FakeClock
) -> None:
    node_id = await first.create_node(PING)
    run_id = await new_run(first)
    stored = await first.store_messages_ins([instruction(run_id, node_id, clock)] * 60)
    pulled: list[str] = []

    async def drain(state: PostgresLinkState) -> None:
        while batch := await state.pull_message_ins(node_id, limit=2):
            pulled.extend(message.metadata.message_id for message in batch)

    await asyncio.gather(*(drain(state) for state in [first, second] * 4))
    assert sorted(pulled) == sorted(str(message_id) for message_id in stored)


async def test_a_serverapp_taking_replies_hides_no_waiting_instruction_from_its_node(
    first: PostgresLinkState, second: PostgresLinkState, clock: FakeClock
) -> None:
    """A node's pull skips the instructions another transaction locks. A take that locked
    every instruction it was asked about, 4 times a second, made the nodes of a 1,000-node
    round miss theirs (and wait 3 s to poll again): here, with a take running all along,
    every node's one pull gets its instruction."""
    run_id = await new_run(first)
    nodes = [await first.create_node(PING) for _ in range(30)]
    stored = await first.store_messages_ins([instruction(run_id, node, clock) for node in nodes])
    ids = [str(message_id) for message_id in stored]
    pulling = True

    async def take_all_along() -> None:
        while pulling:
            assert await second.take_replies(run_id, ids) == []

    taking = asyncio.ensure_future(take_all_along())
    try:
        await asyncio.sleep(0.05)  # the takes are under way
        for node in nodes:
            assert len(await first.pull_message_ins(node)) == 1, "the node's pull came back empty"
    finally:
        pulling = False
        await taking


async def test_claims_racing_on_two_pools_start_each_run_once(
    first: PostgresLinkState, second: PostgresLinkState
) -> None:
    runs = {await new_run(first) for _ in range(6)}
    claims = await asyncio.gather(
        *(state.claim_pending_run("replica") for state in [first, second] * 5)
    )
    claimed = [run.run_id for run in claims if run is not None]
    assert sorted(claimed) == sorted(runs)


async def test_replies_racing_on_two_pools_store_one_and_refuse_the_other(
    first: PostgresLinkState, second: PostgresLinkState, clock: FakeClock
) -> None:
    """The constraint that settles the race is told as the rule's refusal, not a crash."""
    node_id = await first.create_node(PING)
    run_id = await new_run(first)
    sent = instruction(run_id, node_id, clock)
    sent.metadata.message_id = await first.store_message_ins(sent)
    await first.pull_message_ins(node_id)
    outcomes = await asyncio.gather(
        *(state.store_message_res(reply(sent, clock)) for state in [first, second] * 3),
        return_exceptions=True,
    )
    refusals = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(refusals) == 5
    assert all(isinstance(refusal, MessageRejectedError) for refusal in refusals)
    assert all("already has a reply" in str(refusal) for refusal in refusals)


async def test_a_reply_whose_instruction_is_taken_between_its_read_and_insert_is_refused(
    first: PostgresLinkState, db: asyncpg.Connection, clock: FakeClock
) -> None:
    """A reply is stored without a transaction: the foreign key settles a take meanwhile.

    The instruction's row is held by another connection, so the reply reads it (plain reads
    do not wait) and its insert waits; the other connection deletes the instruction, as a
    ServerApp's take would. The reply is refused as for an unknown instruction, not a crash.
    """
    node_id = await first.create_node(PING)
    run_id = await new_run(first)
    sent = instruction(run_id, node_id, clock)
    sent.metadata.message_id = await first.store_message_ins(sent)
    await first.pull_message_ins(node_id)
    async with db.transaction():
        await db.execute(
            "SELECT 1 FROM message_ins WHERE message_id = $1 FOR UPDATE", sent.metadata.message_id
        )
        storing = asyncio.ensure_future(first.store_message_res(reply(sent, clock)))
        await asyncio.sleep(0.3)
        assert not storing.done()  # read the instruction, waits on its row to insert
        await db.execute("DELETE FROM message_ins WHERE message_id = $1", sent.metadata.message_id)
    with pytest.raises(MessageRejectedError, match="does not exist"):
        await storing
    assert await db.fetchval("SELECT count(*) FROM message_res") == 0


async def test_keyed_nodes_racing_on_two_pools_bind_the_key_once(
    first: PostgresLinkState, second: PostgresLinkState
) -> None:
    outcomes = await asyncio.gather(
        *(state.create_keyed_node(PING, b"same-key") for state in [first, second] * 3),
        return_exceptions=True,
    )
    created = [outcome for outcome in outcomes if isinstance(outcome, tuple)]
    assert len(created) == 1
    assert all(
        isinstance(outcome, PublicKeyInUseError) for outcome in outcomes if outcome not in created
    )
    assert await second.get_node_id(b"same-key") == created[0][0]
    assert len(await first.get_online_nodes()) == 1


# --- Ids, cancellation, transactions -------------------------------------------------------
async def test_uint64_ids_above_2_63_round_trip_and_sort_unsigned(
    first: PostgresLinkState,
    db: asyncpg.Connection,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node_ids = iter([2**64 - 2, 2**63, 5])
    monkeypatch.setattr(rules, "new_node_id", lambda: next(node_ids))
    monkeypatch.setattr(rules, "new_run_id", lambda: 2**64 - 1)
    nodes = [await first.create_node(PING) for _ in range(3)]
    run_id = await new_run(first)
    assert nodes == [2**64 - 2, 2**63, 5]
    assert run_id == 2**64 - 1
    assert await db.fetchval("SELECT run_id FROM run") == -1  # bigint holds the same bits
    assert await first.get_online_nodes() == [5, 2**63, 2**64 - 2]
    sent = instruction(run_id, nodes[0], clock)
    sent.metadata.message_id = await first.store_message_ins(sent)
    [pulled] = await first.pull_message_ins(nodes[0])
    assert (pulled.metadata.run_id, pulled.metadata.dst_node_id) == (run_id, nodes[0])
    answer = reply(pulled, clock)
    answer.metadata.message_id = await first.store_message_res(answer)
    assert await first.take_replies(run_id, [sent.metadata.message_id]) == [answer]
    assert list(await first.get_run_statuses([run_id])) == [run_id]


async def test_a_caller_cancelled_mid_operation_leaves_it_whole_or_absent(
    first: PostgresLinkState, db: asyncpg.Connection, clock: FakeClock
) -> None:
    """Each batch of instructions is stored entirely or not at all; each run has its context.

    Callers are cancelled after different delays, most while their transactions are in
    flight; afterwards the backend still serves.
    """
    node_id = await first.create_node(PING)
    run_id = await new_run(first)
    cancelled_in_flight = 0
    for number, delay in enumerate([0.0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032]):
        heavy = instruction(run_id, node_id, clock, group=f"batch-{number}")
        heavy.content.configs["blob"].data["x"].bytes = random.randbytes(20_000)
        for operation in (
            first.store_messages_ins([heavy] * 40),
            first.create_run("a", "1", "", {}, ConfigRecord()),
        ):
            task: asyncio.Task[Any] = asyncio.ensure_future(operation)
            await asyncio.sleep(delay)
            if not task.done():
                cancelled_in_flight += 1
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert cancelled_in_flight >= 4
    await first.aclose()  # waits for the operations still running

    counts = await db.fetch("SELECT group_id, count(*) AS n FROM message_ins GROUP BY group_id")
    assert {row["n"] for row in counts} <= {40}
    orphans = await db.fetchval(
        "SELECT count(*) FROM run WHERE run_id NOT IN (SELECT run_id FROM context)"
    )
    assert orphans == 0


async def test_an_operation_rolled_back_to_break_a_deadlock_runs_again(
    first: PostgresLinkState,
    db: asyncpg.Connection,
    clock: FakeClock,
    log_records: list[logging.LogRecord],
) -> None:
    """Another process locking in the opposite order makes PostgreSQL abort the purge
    (the first to wait); the purge runs again and does its whole work."""
    node_id = await first.create_node(PING)
    run_id = await new_run(first)
    exchanges = []
    for _ in range(2):
        sent = instruction(run_id, node_id, clock)
        sent.metadata.ttl = 10.0
        sent.metadata.message_id = await first.store_message_ins(sent)
        exchanges.append(sent.metadata.message_id)
    for sent in await first.pull_message_ins(node_id, limit=2):
        answer = reply(sent, clock)
        answer.metadata.ttl = 5.0
        await first.store_message_res(answer)
    clock.advance(60.0)
    lock_reply = "SELECT 1 FROM message_res WHERE reply_to_message_id = $1 FOR UPDATE"
    async with db.transaction():
        await db.execute(lock_reply, exchanges[1])
        purge = asyncio.ensure_future(first.purge_expired_messages())
        await asyncio.sleep(0.3)  # the purge deleted the first reply and waits for the second
        await db.execute(lock_reply, exchanges[0])  # waits for the purge: a deadlock
    assert await asyncio.wait_for(purge, 30) == 4
    assert any("Retrying" in record.getMessage() for record in log_records)
    assert (await first.get_stats()).replies_stored == 0


async def test_a_failing_transaction_leaves_nothing_behind_and_the_pool_serves_on(
    first: PostgresLinkState,
) -> None:
    async def write_then_fail(db: Any) -> None:
        await db.execute("INSERT INTO known_public_key (public_key) VALUES ($1)", b"key")
        raise ValueError("second step failed")

    with pytest.raises(ValueError, match="second step"):
        await first._transaction(write_then_fail)
    assert await first.get_known_public_keys() == set()
    await first.replace_known_public_keys([b"key"])
    assert await first.get_known_public_keys() == {b"key"}


async def test_a_connection_a_failure_broke_is_closed_and_one_a_statement_refused_is_kept(
    postgres_url: str,
) -> None:
    """Pool connections go back with no reset round trip, so ``borrow_connection`` closes one
    whose call failed as an outage or an out-of-step protocol does (asyncpg's reset would
    have failed on it); a statement's own error leaves the connection in the pool."""
    pool = await create_pool(postgres_url, max_size=1)
    try:
        async with borrow_connection(pool) as db:
            first_pid = await db.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with borrow_connection(pool) as db:
                await db.execute("SELECT 1 / 0")
        async with borrow_connection(pool) as db:
            assert await db.fetchval("SELECT pg_backend_pid()") == first_pid
        with pytest.raises(asyncpg.InternalClientError):
            async with borrow_connection(pool) as db:
                raise asyncpg.InternalClientError("another operation is in progress")
        async with borrow_connection(pool) as db:
            assert await db.fetchval("SELECT pg_backend_pid()") != first_pid
    finally:
        await pool.close()


async def test_a_connection_the_server_ends_mid_call_fails_unavailable(
    first: PostgresLinkState,
) -> None:
    """The server ending a connection mid-call (a restart, an administrator) is an outage:
    the caller is told ``StateUnavailableError`` (UNAVAILABLE, retried), not asyncpg's
    refusal to close a connection that has already closed itself and left the pool."""
    ended_by_itself = "SELECT pg_terminate_backend(pg_backend_pid())"
    with pytest.raises(StateUnavailableError, match="terminating connection"):
        await first._call(lambda conn: conn.execute(ended_by_itself))
    assert await first.get_known_public_keys() == set()


async def test_a_connection_the_server_ended_while_it_sat_idle_fails_once_unavailable(
    postgres_url: str, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """A server shutting down sends each connection a farewell error, then ends its socket.

    If an idle pooled connection has read the error but not yet the socket's end, asyncpg
    still counts it open, and its next call fails "another operation is in progress"
    before sending anything (seen in tests/e2e's PostgreSQL restart under load). The relay
    here holds the socket's end back, so that moment is reached every time: the call is
    told ``StateUnavailableError``, the connection is closed, and the next call gets a
    fresh one and finds what was stored.
    """
    async with (
        HeldEndRelay(postgres_url) as relay,
        opened(relay.url, clock, pool_size=1) as state,
    ):
        await state.replace_known_public_keys([b"key"])
        pid = await state._call(lambda conn: conn.fetchval("SELECT pg_backend_pid()"))
        await all_connections_back(state)
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        await eventually(lambda: relay.ended_by_server == 1, seconds=5, every=0.01)
        await asyncio.sleep(0.05)  # the farewell error, forwarded, is read by now
        with pytest.raises(StateUnavailableError, match="another operation") as refused:
            await state.get_known_public_keys()
        assert isinstance(refused.value.__cause__, asyncpg.InternalClientError)
        assert await state.get_known_public_keys() == {b"key"}
        assert await state._call(lambda conn: conn.fetchval("SELECT pg_backend_pid()")) != pid
        relay.release_ends()  # so that closing the pool's connection completes


class HeldEndRelay:
    """A TCP relay to the database of ``url`` that passes every byte at once but holds back
    the server's end of each connection until ``release_ends``."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self._target = (parts.hostname or LOOPBACK, parts.port or 5432)
        self._parts = parts
        self._released = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._relays: set[asyncio.Future[Any]] = set()
        #: Connections whose server side has ended (its end held back from the client).
        self.ended_by_server = 0
        self.url = ""

    async def __aenter__(self) -> HeldEndRelay:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        port = self._server.sockets[0].getsockname()[1]
        netloc = self._parts.netloc.rsplit(":", 1)[0] + f":{port}"
        self.url = urllib.parse.urlunsplit(self._parts._replace(netloc=netloc))
        return self

    def release_ends(self) -> None:
        """Pass on the ends held back, and every later one at once."""
        self._released.set()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release_ends()
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _accept(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection(*self._target)
        self._writers += [to_client, to_server]
        self._relays.add(
            asyncio.gather(
                self._pump(client, to_server, hold_end=False),
                self._pump(server, to_client, hold_end=True),
            )
        )

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, hold_end: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        if hold_end:
            self.ended_by_server += 1
            await self._released.wait()
        sink.close()


async def test_the_pool_tells_how_full_it_is_and_how_long_operations_waited(
    postgres_url: str, clock: FakeClock
) -> None:
    """With one connection, a second operation waits for the first to give it back.

    The first holds its connection in a transaction blocked on a row another connection
    locked; the pool is then full (1 open, 1 busy) and the waits add up to the hold. A
    caller is answered before its connection is back in the pool, so "busy" reaches 0 a
    loop iteration or two after the answer.
    """
    async with opened(postgres_url, clock, pool_size=1) as state:
        run_id = await new_run(state)
        assert state.connection_pool.max_size == 1
        await all_connections_back(state)
        before = state.connection_pool
        blocker = await asyncpg.connect(postgres_url)
        try:
            async with blocker.transaction():
                await blocker.execute(
                    "SELECT 1 FROM run WHERE run_id = $1 FOR UPDATE", to_db(run_id)
                )
                held = asyncio.ensure_future(state.update_run_status(run_id, RunStatus(STARTING)))
                await asyncio.sleep(0.1)
                assert (state.connection_pool.open, state.connection_pool.busy) == (1, 1)
                waiting = asyncio.ensure_future(state.get_run(run_id))
                await asyncio.sleep(0.4)
            assert await held
            assert await waiting is not None
        finally:
            await blocker.close()
        await all_connections_back(state)
        after = state.connection_pool
    assert after.acquisitions == before.acquisitions + 2
    assert after.waited_seconds - before.waited_seconds >= 0.3


async def all_connections_back(state: PostgresLinkState) -> None:
    """Wait (at most a second) until no connection of ``state``'s pool is busy."""
    await eventually(lambda: state.connection_pool.busy == 0, seconds=1, every=0.001)


async def test_closed_state_refuses_calls_and_closes_once(first: PostgresLinkState) -> None:
    await first.aclose()
    await first.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await first.get_runs()


async def test_the_rules_written_in_sql_agree_with_rules_on_every_boundary(
    db: asyncpg.Connection,
) -> None:
    """``rows.is_online`` and ``rows.ttl_lapsed`` decide as ``rules`` does, to the last bit."""
    generator = random.Random(14)
    cases: list[tuple[float, float, float]] = []
    for _ in range(400):
        created_at = generator.choice([0.0, 0.1, 1.7e9 + generator.random(), generator.random()])
        ttl = generator.choice([0.0, 0.2, 0.5, 3600.0, generator.uniform(0, 1e4)])
        end = created_at + ttl
        now = generator.choice([end, math.nextafter(end, math.inf), math.nextafter(end, -math.inf)])
        cases.append((created_at, ttl, now))
    rows = await db.fetch(
        f"SELECT {ttl_lapsed('c', 't', 'n')} AS lapsed, {is_online('c', 'n')} AS online "
        "FROM unnest($1::float8[], $2::float8[], $3::float8[]) "
        "WITH ORDINALITY AS cases (c, t, n, i) ORDER BY i",
        *(list(column) for column in zip(*cases, strict=True)),
    )
    assert [row["lapsed"] for row in rows] == [rules.ttl_lapsed(*case) for case in cases]
    assert [row["online"] for row in rows] == [rules.is_online(c, n) for c, _, n in cases]


# --- Schema ---------------------------------------------------------------------------------
async def test_processes_starting_at_once_on_an_empty_database_create_one_schema(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    states = await asyncio.gather(
        *(PostgresLinkState.open(postgres_url, clock=clock) for _ in range(4))
    )
    for state in states:
        await state.aclose()
    assert await db.fetchval("SELECT array_agg(version) FROM superlink_schema") == [SCHEMA_VERSION]


async def test_opening_waits_for_a_schema_change_in_progress(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    """The advisory lock serialises schema work: an open waits while another holds it."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        opening = asyncio.ensure_future(PostgresLinkState.open(postgres_url, clock=clock))
        await asyncio.sleep(0.5)
        assert not opening.done()
    state = await asyncio.wait_for(opening, 10)
    await state.aclose()


async def test_a_schema_written_by_a_newer_version_is_refused_naming_the_database(
    first: PostgresLinkState, postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    await db.execute("UPDATE superlink_schema SET version = $1", SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError) as refused:
        await PostgresLinkState.open(postgres_url, clock=clock)
    message = str(refused.value)
    database = postgres_url.rsplit("/", 1)[1]
    assert database in message
    assert "127.0.0.1" in message
    assert f"version {SCHEMA_VERSION + 1}" in message
    assert "newer superlink-async" in message
    assert PASSWORD not in message
    assert await db.fetchval("SELECT version FROM superlink_schema") == SCHEMA_VERSION + 1


async def test_a_database_with_our_table_names_but_no_version_is_refused(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    await db.execute("CREATE TABLE run (anything integer)")
    with pytest.raises(StateError, match="not created by superlink-async"):
        await PostgresLinkState.open(postgres_url, clock=clock)
    assert await db.fetchval("SELECT to_regclass('superlink_schema')") is None


async def test_a_migration_runs_whole_in_one_transaction_or_not_at_all(
    first: PostgresLinkState, db: asyncpg.Connection
) -> None:
    """A failing step leaves the previous version in place; a working one moves it on."""
    failing = {SCHEMA_VERSION: ("ALTER TABLE node ADD COLUMN extra integer", "SELECT 1 / 0")}
    with pytest.raises(asyncpg.DivisionByZeroError):
        await prepare_schema(db, "test", version=SCHEMA_VERSION + 1, migrations=failing)
    assert await db.fetchval("SELECT version FROM superlink_schema") == SCHEMA_VERSION
    columns = "SELECT count(*) FROM information_schema.columns WHERE column_name = 'extra'"
    assert await db.fetchval(columns) == 0

    working = {SCHEMA_VERSION: ("ALTER TABLE node ADD COLUMN extra integer",)}
    await prepare_schema(db, "test", version=SCHEMA_VERSION + 1, migrations=working)
    assert await db.fetchval("SELECT version FROM superlink_schema") == SCHEMA_VERSION + 1
    assert await db.fetchval(columns) == 1


async def test_a_version_1_database_is_migrated_keeping_its_runs(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    """A database a version-1 superlink-async wrote opens migrated to the current version:
    its runs read back with no owner, and one it left running fails at the first
    registration (its ServerApp is gone)."""
    async with db.transaction():
        for statement in VERSION_1_SCHEMA:
            await db.execute(statement)
        await db.execute("INSERT INTO superlink_schema (version) VALUES (1)")
    for run_id, status in ((11, "pending"), (12, "running")):
        await db.execute(
            "INSERT INTO run (run_id, fab_id, fab_version, fab_hash, override_config, "
            "federation_options, pending_at, starting_at, running_at, finished_at, status, "
            "sub_status, details) VALUES ($1, 'flwr/app', '1.0', 'abc', $2, $3, "
            "'2025-06-15T15:06:40+00:00', '', '', '', $4, '', '')",
            run_id,
            b"",
            b"",
            status,
        )
    async with opened(postgres_url, clock) as state:
        assert [(run.run_id, run.status.status, run.owner) for run in await state.get_runs()] == [
            (11, "pending", ""),
            (12, "running", ""),
        ]
        assert await state.register_replica("a", 10.0, "restarted") == [12]
        assert await state.reserve_pending_run("a") == 11
        assert await state.get_replica_leases() == {"a": clock.now + 10.0}
    assert await db.fetchval("SELECT version FROM superlink_schema") == SCHEMA_VERSION == 3
