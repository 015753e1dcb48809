"""The PostgreSQL backend: every ``LinkState`` method over a pool of asyncpg connections.

Open it with ``await PostgresLinkState.open(url)``: the URL (and libpq's environment
variables) as ``connect`` reads them, the schema created or migrated (``schema``).

Several processes may share the database, so every read asks the database, and a write
through one process is seen by the next read of any other. Two facts are the exception
(``kept``): a key's binding to its node, and that nothing deliverable waits for a node.
The database announces every change that may end them (the schema's triggers), and what
was read is kept only while this process hears those announcements.

Transactions: a method that writes more than once, or reads before it writes, runs in one
transaction (``READ COMMITTED``) and holds row locks for what it decided on: a run's status
row (``FOR UPDATE``) for its transition, the instructions a ServerApp takes (``FOR NO KEY
UPDATE``, so replies can still be stored under them), the destination nodes of stored
instructions (``FOR KEY SHARE``, so they are not deleted under them), the runs a lost
replica held (``FOR UPDATE``, in creation order). The rest are one statement each, atomic
by themselves: the node pull is one ``UPDATE ... RETURNING`` over rows picked ``FOR UPDATE
SKIP LOCKED``, so two pulls, from any processes, never hand out one instruction twice, and
a run reservation or claim the same. Races that a constraint settles (a key taken, a reply
stored, by another process meanwhile) are told as the rule's own refusal. A node's reply is
the one read-then-write without a transaction: its read decides, its insert alone writes,
and the constraints settle every race in between, so BEGIN and COMMIT would only add two
round trips to the call every node makes each round.

Replicas: each process's lease is a row of ``replica``, on this backend's clock (replicas on
several machines need synchronised clocks; their skew adds to the time a lost replica goes
unseen). Registering, reaping and releasing each drop leases and, in the same transaction,
finish the runs and give back the reservations that no lease holds any more; a reaper skips
(``SKIP LOCKED``) a lease another reaper is dropping, so each is reaped once.

Change notices (``notices``): every transaction that changes a run or appends a log sends
one, and the schema's triggers send one for every statement that may end a kept fact, each
delivered at its commit; ``listen`` hears them on a connection of its own.

An operation PostgreSQL rolls back to break a deadlock runs again (``_ATTEMPTS``).

Cancellation: each operation runs in a task of its own that the caller's cancellation does
not reach (the caller awaits a future the task settles): once started it commits or rolls
back whole, as on SQLite; ``aclose`` waits for those still running.

Failures that mean the database cannot serve right now (``connect.translated``: the server
down, restarting, unreachable) become ``StateUnavailableError``, which clients are told as
UNAVAILABLE and may retry.

The pool (``DEFAULT_POOL_SIZE``, ``--database-pool-size``): at most 40 connections, opened as
calls need them and closed after 5 minutes unused (``IDLE_CONNECTION_LIFETIME``); the
connect and statement timeouts are ``connect``'s (10 s to connect, 60 s a statement). A
call waits for a free connection while all are busy (``connection_pool`` adds up those
waits, for metrics); each operation holds one for its statements only, never across an
await of its caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

from superlink_async.config import DEFAULT_DATABASE_POOL_SIZE
from superlink_async.logs import logger
from superlink_async.state import rules
from superlink_async.state.base import (
    PENDING,
    STARTING,
    LostReplica,
    MessageRejectedError,
    NodeNotFoundError,
    PoolUsage,
    PublicKeyInUseError,
    RunNotFoundError,
    RunRecord,
    RunStatus,
    StateError,
    StateStats,
)
from superlink_async.state.columns import (
    HELD_RUN_FIELDS,
    MESSAGE_FIELDS,
    RUN_FIELDS,
    from_db,
    held_run_from_row,
    instructions_of_run,
    joined_log,
    key_holder_from_row,
    lost_run_params,
    message_from_row,
    message_params,
    new_run_params,
    run_from_row,
    run_status_from_row,
    take_results,
    to_db,
    transition_error_from_row,
    transition_params,
)
from superlink_async.state.common import BackendBase, NewRun
from superlink_async.state.postgres.connect import (
    PostgresTarget,
    borrow_connection,
    create_pool,
    translated,
    unavailable,
)
from superlink_async.state.postgres.kept import Kept
from superlink_async.state.postgres.notices import (
    CHANNEL,
    INSTRUCTIONS,
    LOG,
    NODE,
    RUN,
    RUNS,
    kind_of,
    listen_for_changes,
    notify,
)
from superlink_async.state.postgres.rows import (
    MESSAGE_METADATA_FIELDS,
    MESSAGE_PLACEHOLDERS,
    claim_rank,
    is_online,
    reapable,
    row_count,
    ttl_lapsed,
)
from superlink_async.state.postgres.schema import prepare_schema
from superlink_async.wire.message_pb2 import Context, Message
from superlink_async.wire.recorddict_pb2 import ConfigRecord

T = TypeVar("T")

#: Connections one process keeps open at most (why this many: ``config``).
DEFAULT_POOL_SIZE = DEFAULT_DATABASE_POOL_SIZE
#: Seconds an unused connection stays open.
IDLE_CONNECTION_LIFETIME = 300.0
#: Times an operation runs at most when PostgreSQL rolls it back to break a deadlock
#: between processes (e.g. a purge and a ServerApp taking the same expired exchanges, which
#: lock replies and instructions in opposite orders): rolled back whole, it is safe to rerun.
_ATTEMPTS = 3
_RETRIED = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

if TYPE_CHECKING:
    from superlink_async.state.postgres.schema import Connection

    Work: TypeAlias = Callable[[Connection], Awaitable[T]]

_INSERT_NODE = (
    "INSERT INTO node (node_id, online_until, ping_interval, public_key) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (node_id) DO NOTHING RETURNING node_id"
)
_INSERT_RUN = (
    "INSERT INTO run (run_id, fab_id, fab_version, fab_hash, override_config, "
    "federation_options, pending_at, starting_at, running_at, finished_at, status, sub_status, "
    "details) VALUES ($1, $2, $3, $4, $5, $6, $7, '', '', '', $8, '', '') "
    "ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
)


async def _insert_with_fresh_id(
    db: Connection, sql: str, new_id: Callable[[], int], *params: Any
) -> int:
    """Insert under a random id (``$1``), drawing again on the rare collision.

    ``sql`` must end in ``ON CONFLICT (id) DO NOTHING RETURNING id``.
    """
    while True:
        candidate = new_id()
        if await db.fetchval(sql, to_db(candidate), *params) is not None:
            return candidate


async def _run_exists(db: Connection, run_id: int) -> bool:
    return bool(
        await db.fetchval("SELECT EXISTS (SELECT 1 FROM run WHERE run_id = $1)", to_db(run_id))
    )


async def _drop_orphans(
    db: Connection, details: Callable[[str], str], stamp: str, only: str | None = None
) -> tuple[list[rules.HeldRun], list[rules.HeldRun]]:
    """Fail the held runs and release the reservations of replicas holding no lease.

    With ``only``, just those of that replica. Returns (failed, released). The rows are
    locked in creation order before they change; one that changed meanwhile (another
    reaper's, a claim's) is judged again as it is now.
    """
    if only is None:
        orphaned = "NOT EXISTS (SELECT 1 FROM replica WHERE replica.replica_id = run.{})"
    else:
        orphaned = "run.{} = $2"
    holder = () if only is None else (only,)
    failed_rows = await db.fetch(
        f"SELECT {HELD_RUN_FIELDS}, owner AS holder FROM run "
        f"WHERE status = ANY($1::text[]) AND {orphaned.format('owner')} "
        "ORDER BY seq FOR UPDATE OF run",
        list(rules.HELD_STATUSES),
        *holder,
    )
    failed = [held_run_from_row(row) for row in failed_rows]
    if failed:
        await db.executemany(
            "UPDATE run SET status = $1, sub_status = $2, details = $3, finished_at = $4 "
            "WHERE run_id = $5",
            lost_run_params(failed, details, stamp),
        )
    released_rows = await db.fetch(
        f"SELECT {HELD_RUN_FIELDS}, reserved_by AS holder FROM run "
        f"WHERE status = $1 AND reserved_by <> '' AND {orphaned.format('reserved_by')} "
        "ORDER BY seq FOR UPDATE OF run",
        PENDING,
        *holder,
    )
    released = [held_run_from_row(row) for row in released_rows]
    if released:
        await db.execute(
            "UPDATE run SET reserved_by = '' WHERE run_id = ANY($1::bigint[])",
            [to_db(run.run_id) for run in released],
        )
    if failed or released:
        await notify(db, RUNS)
    return failed, released


class PostgresLinkState(BackendBase):
    """``LinkState`` on PostgreSQL; create it with ``await PostgresLinkState.open(url)``."""

    def __init__(
        self, pool: asyncpg.Pool, clock: Callable[[], float], where: str, url: str
    ) -> None:
        super().__init__(clock)
        self._pool = pool
        #: The database as messages name it (``connect.PostgresTarget.describe``).
        self._where = where
        #: Where ``listen`` opens its own connection.
        self._url = url
        self._running: set[asyncio.Task[Any]] = set()
        self._closed = False
        #: Connections handed out, and the seconds operations waited for them in all.
        self._acquisitions = 0
        self._waited_seconds = 0.0
        #: Read from the database and kept while ``listen`` hears the notices (``kept``):
        #: (key, the node it is bound to); the nodes nothing deliverable waits for.
        self._bindings: Kept[tuple[bytes, int]] = Kept()
        self._nothing_waiting: Kept[int] = Kept()

    @classmethod
    async def open(
        cls,
        url: str,
        clock: Callable[[], float] = time.time,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> PostgresLinkState:
        """Connect to ``url`` and create or migrate the schema; the entry point of the backend.

        ``url`` is ``postgresql://`` or ``postgres://`` as libpq reads it (libpq's
        environment variables fill in what it leaves out). ``StateError`` (one line naming
        host, port and database, never the password) if it cannot connect or the database
        is not ours; ``SchemaVersionError`` for a schema written by a newer superlink-async.
        """
        where = PostgresTarget.parse(url).describe()
        pool = await create_pool(
            url, max_size=pool_size, max_inactive_connection_lifetime=IDLE_CONNECTION_LIFETIME
        )
        try:
            async with pool.acquire() as connection:
                await prepare_schema(connection, where)
        except StateError:
            await pool.close()
            raise
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, Exception) and (
                unavailable(exc) or isinstance(exc, asyncpg.PostgresError)
            ):
                raise StateError(f"Cannot prepare the schema of the {where}: {exc}") from exc
            raise
        return cls(pool, clock, where, url)

    @property
    def pool(self) -> asyncpg.Pool:
        """The connections this state uses, for stores beside it in the same database."""
        return self._pool

    async def aclose(self) -> None:
        """Wait for the operations still running, then close the pool's connections.

        Later calls raise ``RuntimeError``; closing again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*self._running, return_exceptions=True)
        await self._pool.close()

    # --- Plumbing -------------------------------------------------------------------------
    async def _call(self, work: Work[T]) -> T:
        """``work`` on one connection of the pool, shielded from the caller's cancellation."""
        return await self._shielded(work, transaction=False)

    async def _transaction(self, work: Work[T]) -> T:
        """``work`` in one transaction: all of it commits, or none (also if the caller leaves)."""
        return await self._shielded(work, transaction=True)

    async def _shielded(self, work: Work[T], *, transaction: bool) -> T:
        if self._closed:
            raise RuntimeError("The PostgreSQL LinkState is closed")
        outcome: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._settle(outcome, work, transaction=transaction))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await outcome

    async def _settle(
        self, outcome: asyncio.Future[T], work: Work[T], *, transaction: bool
    ) -> None:
        """Run ``work`` and settle ``outcome`` with its result as soon as it is committed.

        The caller awaits ``outcome``, not this task: its cancellation cancels only the
        future, and the operation goes on whole. The result is handed over before the
        connection goes back to the pool, so the caller resumes one loop iteration after
        the database answered rather than after asyncpg's release (itself shielded, two
        more iterations) and the shield's own hand-offs.
        """
        try:
            await self._on_connection(work, transaction=transaction, done=outcome)
        except Exception as exc:
            if not outcome.done():
                outcome.set_exception(exc)
            else:
                # Settled already: the caller is gone, or the work was done and only the
                # connection's way back failed (``borrow_connection`` closed it).
                logger.debug("An operation failed after its caller was answered: %r", exc)
        except BaseException:
            # This task cancelled (the loop closing) or the process stopping: the caller
            # is not left waiting, and the exception goes on as from any task.
            outcome.cancel()
            raise

    async def _on_connection(
        self, work: Work[T], *, transaction: bool, done: asyncio.Future[T]
    ) -> None:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self._attempt(work, transaction=transaction, done=done)
            except _RETRIED as exc:
                if attempt == _ATTEMPTS or done.done():
                    raise
                logger.debug("Retrying an operation PostgreSQL rolled back: %s", exc)
            except StateError:
                raise
            except Exception as exc:
                failure = translated(exc)
                if failure is exc:
                    raise
                raise failure from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(self, work: Work[T], *, transaction: bool, done: asyncio.Future[T]) -> None:
        asked = time.perf_counter()
        async with borrow_connection(self._pool) as db:
            self._acquisitions += 1
            self._waited_seconds += time.perf_counter() - asked
            if transaction:
                async with db.transaction():
                    result = await work(db)
            else:
                result = await work(db)
            if not done.done():
                done.set_result(result)

    @property
    def connection_pool(self) -> PoolUsage:
        """The pool's connections now, and the time operations waited for one so far.

        The wait includes opening a connection when none was open to spare.
        """
        open_connections = self._pool.get_size()
        return PoolUsage(
            max_size=self._pool.get_max_size(),
            open=open_connections,
            busy=open_connections - self._pool.get_idle_size(),
            acquisitions=self._acquisitions,
            waited_seconds=self._waited_seconds,
        )

    async def probe(self) -> None:
        """A read of one row: raises ``StateUnavailableError`` while the database cannot serve."""
        await self._call(lambda db: db.fetchval("SELECT 1 FROM run LIMIT 1"))

    # --- Nodes ----------------------------------------------------------------------------
    async def create_node(self, ping_interval: float) -> int:
        """Register a node, online for ``ping_interval`` seconds; return its id (not 0 or 1)."""
        online_until = rules.online_until_on_creation(self._clock(), ping_interval)
        return await self._call(
            lambda db: _insert_with_fresh_id(
                db, _INSERT_NODE, rules.new_node_id, online_until, ping_interval, None
            )
        )

    async def delete_node(self, node_id: int) -> None:
        """Forget a node and its key binding; its messages stay. ``NodeNotFoundError``."""
        status = await self._call(
            lambda db: db.execute("DELETE FROM node WHERE node_id = $1", to_db(node_id))
        )
        self._bindings.forget()  # at once here; other processes hear the trigger's notice
        if not row_count(status):
            raise NodeNotFoundError(node_id)

    async def acknowledge_ping(self, node_id: int, ping_interval: float) -> bool:
        """Keep a node online for ``2 * ping_interval`` more seconds; False if it is unknown."""
        online_until = rules.online_until_after_ping(self._clock(), ping_interval)
        status = await self._call(
            lambda db: db.execute(
                "UPDATE node SET online_until = $1, ping_interval = $2 WHERE node_id = $3",
                online_until,
                ping_interval,
                to_db(node_id),
            )
        )
        return row_count(status) > 0

    async def get_online_nodes(self) -> list[int]:
        """Ids of the nodes whose liveness has not lapsed, in ascending (unsigned) order."""
        now = self._clock()
        rows = await self._call(
            lambda db: db.fetch(
                f"SELECT node_id FROM node WHERE {is_online('online_until', '$1')}", now
            )
        )
        return sorted(from_db(row["node_id"]) for row in rows)

    async def node_exists(self, node_id: int) -> bool:
        """Whether the node id is registered (online or not)."""
        return bool(
            await self._call(
                lambda db: db.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM node WHERE node_id = $1)", to_db(node_id)
                )
            )
        )

    # --- Node authentication --------------------------------------------------------------
    async def create_keyed_node(
        self, ping_interval: float, public_key: bytes
    ) -> tuple[int, int | None]:
        """Register a node bound to ``public_key`` in one transaction; an offline holder goes.

        A node bound to the key by another process meanwhile (the key's unique constraint)
        is an online holder: ``PublicKeyInUseError``.
        """
        now = self._clock()

        async def create(db: Connection) -> tuple[int, int | None]:
            owner = await db.fetchrow(
                "SELECT node_id, online_until FROM node WHERE public_key = $1 FOR UPDATE",
                public_key,
            )
            displaced = rules.displaced_key_holder(key_holder_from_row(owner), now)
            if displaced is not None:
                await db.execute("DELETE FROM node WHERE node_id = $1", to_db(displaced))
            online_until = rules.online_until_on_creation(now, ping_interval)
            node_id = await _insert_with_fresh_id(
                db, _INSERT_NODE, rules.new_node_id, online_until, ping_interval, public_key
            )
            return node_id, displaced

        try:
            node_id, displaced = await self._transaction(create)
        except asyncpg.UniqueViolationError as exc:
            raise PublicKeyInUseError from exc
        if displaced is not None:
            self._bindings.forget()
        return node_id, displaced

    async def get_node_id(self, public_key: bytes) -> int | None:
        """The node a key is bound to, if any."""
        node_id = await self._call(
            lambda db: db.fetchval("SELECT node_id FROM node WHERE public_key = $1", public_key)
        )
        return None if node_id is None else from_db(node_id)

    async def is_key_bound(self, public_key: bytes, node_id: int) -> bool:
        """Whether the key is bound to the node: from memory if read before (``kept``)."""
        if self._bindings.holds((public_key, node_id)):
            return True
        read_at = self._bindings.generation
        bound = bool(
            await self._call(
                lambda db: db.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM node WHERE node_id = $1 AND public_key = $2)",
                    to_db(node_id),
                    public_key,
                )
            )
        )
        if bound:
            self._bindings.keep((public_key, node_id), read_at)
        return bound

    async def replace_known_public_keys(self, public_keys: Sequence[bytes]) -> None:
        """Make ``public_keys`` the complete list of keys allowed to authenticate."""

        async def replace(db: Connection) -> None:
            await db.execute("DELETE FROM known_public_key")
            await db.execute(
                "INSERT INTO known_public_key (public_key) SELECT unnest($1::bytea[]) "
                "ON CONFLICT DO NOTHING",
                list(public_keys),
            )

        await self._transaction(replace)

    async def get_known_public_keys(self) -> set[bytes]:
        """The keys allowed to authenticate."""
        rows = await self._call(lambda db: db.fetch("SELECT public_key FROM known_public_key"))
        return {bytes(row["public_key"]) for row in rows}

    # --- Runs -----------------------------------------------------------------------------
    async def _store_new_run(self, run: NewRun) -> int:
        """Store a pending run and its initial ServerApp context in one transaction."""
        columns = new_run_params(run)

        async def create(db: Connection) -> int:
            run_id = await _insert_with_fresh_id(db, _INSERT_RUN, rules.new_run_id, *columns)
            await db.execute(
                "INSERT INTO context (run_id, context) VALUES ($1, $2)",
                to_db(run_id),
                rules.context_at_creation(run_id).SerializeToString(),
            )
            await notify(db, RUN, to_db(run_id))
            return run_id

        return await self._transaction(create)

    async def get_run(self, run_id: int) -> RunRecord | None:
        """One run, or None."""
        row = await self._call(
            lambda db: db.fetchrow(f"SELECT {RUN_FIELDS} FROM run WHERE run_id = $1", to_db(run_id))
        )
        return None if row is None else run_from_row(row)

    async def get_runs(self) -> list[RunRecord]:
        """Every run, oldest first (by ``pending_at``, then creation order)."""
        rows = await self._call(
            lambda db: db.fetch(f"SELECT {RUN_FIELDS} FROM run ORDER BY pending_at, seq")
        )
        return [run_from_row(row) for row in rows]

    async def get_run_statuses(self, run_ids: Sequence[int]) -> dict[int, RunStatus]:
        """Statuses of the known runs among ``run_ids``; unknown ids are left out."""
        ids = [to_db(run_id) for run_id in run_ids]
        rows = await self._call(
            lambda db: db.fetch(
                "SELECT run_id, status, sub_status, details FROM run "
                "WHERE run_id = ANY($1::bigint[])",
                ids,
            )
        )
        return {from_db(row["run_id"]): run_status_from_row(row) for row in rows}

    async def _transition_run(self, run_id: int, new_status: RunStatus) -> str | None:
        """Apply a valid transition (``rules``), stamped; return why an invalid one is refused.

        The run's row is locked from the check to the update, so transitions asked for by
        two processes at once are judged one after the other.
        """
        stamp = rules.iso_timestamp(self._clock())

        async def update(db: Connection) -> str | None:
            row = await db.fetchrow(
                "SELECT status, sub_status, details FROM run WHERE run_id = $1 FOR UPDATE",
                to_db(run_id),
            )
            error = transition_error_from_row(row, run_id, new_status)
            if error is not None:
                return error
            stamp_column, params = transition_params(run_id, new_status, stamp)
            await db.execute(
                # A run leaving pending leaves its reservation: only pending runs have one.
                f"UPDATE run SET status = $1, sub_status = $2, details = $3, {stamp_column} = $4, "
                "reserved_by = '' WHERE run_id = $5",
                *params,
            )
            await notify(db, RUN, to_db(run_id))
            return None

        return await self._transaction(update)

    async def get_pending_run_id(self) -> int | None:
        """The oldest pending run, if any."""
        run_id = await self._call(
            lambda db: db.fetchval(
                "SELECT run_id FROM run WHERE status = $1 ORDER BY pending_at, seq LIMIT 1",
                PENDING,
            )
        )
        return None if run_id is None else from_db(run_id)

    async def reserve_pending_run(self, replica_id: str) -> int | None:
        """Reserve the oldest unreserved pending run for ``replica_id``, in one statement.

        A run another reservation or claim holds is skipped, so two replicas never reserve
        the same run.
        """
        run_id = await self._call(
            lambda db: db.fetchval(
                "WITH picked AS MATERIALIZED (SELECT seq FROM run "
                "WHERE status = $2 AND reserved_by = '' ORDER BY pending_at, seq LIMIT 1 "
                "FOR UPDATE SKIP LOCKED), "
                "reserved AS (UPDATE run SET reserved_by = $1 FROM picked "
                "WHERE run.seq = picked.seq AND run.status = $2 AND run.reserved_by = '' "
                "RETURNING run.run_id) "
                "SELECT run_id, pg_notify($3, $4 || ' ' || run_id) FROM reserved",
                replica_id,
                PENDING,
                CHANNEL,
                RUN,
            )
        )
        return None if run_id is None else from_db(run_id)

    async def claim_pending_run(self, replica_id: str) -> RunRecord | None:
        """Start the run ``rules.claim_rank`` puts first, owned by ``replica_id``.

        One statement picks (skipping a run another claim holds) and updates the run, so two
        claims, from any processes, never get the same run.
        """
        stamp = rules.iso_timestamp(self._clock())
        rank = claim_rank("reserved_by", "$4")
        row = await self._call(
            lambda db: db.fetchrow(
                "WITH picked AS MATERIALIZED (SELECT seq FROM run "
                f"WHERE status = $3 AND {rank} IS NOT NULL ORDER BY {rank}, pending_at, seq "
                "LIMIT 1 FOR UPDATE SKIP LOCKED), "
                "claimed AS (UPDATE run SET status = $1, starting_at = $2, owner = $4, "
                "reserved_by = '' FROM picked WHERE run.seq = picked.seq AND run.status = $3 "
                f"RETURNING {RUN_FIELDS}) "
                f"SELECT {RUN_FIELDS}, pg_notify($5, $6 || ' ' || run_id) FROM claimed",
                STARTING,
                stamp,
                PENDING,
                replica_id,
                CHANNEL,
                RUN,
            )
        )
        return None if row is None else run_from_row(row)

    # --- Replicas -------------------------------------------------------------------------
    async def register_replica(
        self, replica_id: str, lease_seconds: float, details: str
    ) -> list[int]:
        """Take (or take back) the lease, in one transaction with failing what nobody holds.

        The lease is dropped first, so that what this id held before counts as held by no
        replica. Other replicas' leases stay: they may be alive.
        """
        now = self._clock()
        stamp = rules.iso_timestamp(now)

        async def register(db: Connection) -> list[rules.HeldRun]:
            await db.execute("DELETE FROM replica WHERE replica_id = $1", replica_id)
            failed, _ = await _drop_orphans(db, lambda _: details, stamp)
            await db.execute(
                "INSERT INTO replica (replica_id, lease_until, started_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (replica_id) DO UPDATE SET lease_until = excluded.lease_until, "
                "started_at = excluded.started_at",
                replica_id,
                rules.lease_until(now, lease_seconds),
                now,
            )
            return failed

        return rules.oldest_first(await self._transaction(register))

    async def renew_replica_lease(self, replica_id: str, lease_seconds: float) -> bool:
        """Extend a lease still held, in one statement (a reaped one is gone: False).

        The new term counts from when the statement runs, not from a wait for a connection.
        """
        status = await self._call(
            lambda db: db.execute(
                "UPDATE replica SET lease_until = $2 WHERE replica_id = $1",
                replica_id,
                rules.lease_until(self._clock(), lease_seconds),
            )
        )
        return row_count(status) > 0

    async def reap_lost_replicas(
        self, details: Callable[[str], str], *, reaper: str | None = None
    ) -> list[LostReplica]:
        """Drop the lapsed leases but the reaper's and what no lease holds, in one transaction.

        A lease another reaper (or a renewal) holds is skipped, so each lapsed lease is
        dropped, and its runs failed, by one reaper only; a run another reaper finished
        meanwhile no longer matches. "Now" is when the transaction starts.
        """

        async def reap(db: Connection) -> list[LostReplica]:
            now = self._clock()
            stamp = rules.iso_timestamp(now)
            rows = await db.fetch(
                "DELETE FROM replica WHERE replica_id IN (SELECT replica_id FROM replica "
                f"WHERE {reapable('replica_id', 'lease_until', '$1', '$2')} "
                "FOR UPDATE SKIP LOCKED) "
                "RETURNING replica_id",
                now,
                reaper,
            )
            orphans = await _drop_orphans(db, details, stamp)
            return rules.lost_replicas((row["replica_id"] for row in rows), *orphans)

        return await self._transaction(reap)

    async def release_replica(self, replica_id: str, details: str) -> list[int]:
        """Drop the lease and what it held, in one transaction."""
        stamp = rules.iso_timestamp(self._clock())

        async def release(db: Connection) -> list[rules.HeldRun]:
            await db.execute("DELETE FROM replica WHERE replica_id = $1", replica_id)
            failed, _ = await _drop_orphans(db, lambda _: details, stamp, only=replica_id)
            return failed

        return rules.oldest_first(await self._transaction(release))

    async def get_replica_leases(self) -> dict[str, float]:
        """Every lease held: replica id to the Unix time it lapses."""
        rows = await self._call(lambda db: db.fetch("SELECT replica_id, lease_until FROM replica"))
        return {row["replica_id"]: row["lease_until"] for row in rows}

    async def listen(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` for every change notice (``notices``), on a connection of its own.

        Notices of this process's own changes come too. ``on_change`` runs on the event
        loop, called by asyncpg; it is also called once whenever listening (re)starts.
        ``node`` and ``ins`` notices only make what was kept of their kind be read again;
        while this runs and listens, what is read is kept (``kept``).
        """
        kinds: dict[str, Kept[Any]] = {
            NODE: self._bindings,
            INSTRUCTIONS: self._nothing_waiting,
        }

        def heard(notice: str) -> None:
            if (kept := kinds.get(kind_of(notice))) is not None:
                kept.forget()
            else:
                on_change()

        def listening(now: bool) -> None:
            for kept in kinds.values():
                kept.listening(now)
            if now:
                on_change()  # for what changed while nobody listened

        await listen_for_changes(self._url, self._where, heard, listening)

    async def get_federation_options(self, run_id: int) -> ConfigRecord | None:
        """The run's federation options, or None for an unknown run."""
        blob = await self._call(
            lambda db: db.fetchval(
                "SELECT federation_options FROM run WHERE run_id = $1", to_db(run_id)
            )
        )
        return None if blob is None else ConfigRecord.FromString(blob)

    # --- ServerApp context and logs -------------------------------------------------------
    async def set_serverapp_context(self, run_id: int, context: Context) -> None:
        """Replace the run's ServerApp context, in one statement. ``RunNotFoundError``."""
        serialized = context.SerializeToString()
        stored = await self._call(
            lambda db: db.fetchval(
                "INSERT INTO context (run_id, context) SELECT run_id, $2 FROM run "
                "WHERE run_id = $1 ON CONFLICT (run_id) DO UPDATE SET context = excluded.context "
                "RETURNING run_id",
                to_db(run_id),
                serialized,
            )
        )
        if stored is None:
            raise RunNotFoundError(run_id)

    async def get_serverapp_context(self, run_id: int) -> Context | None:
        """The run's ServerApp context, or None."""
        blob = await self._call(
            lambda db: db.fetchval("SELECT context FROM context WHERE run_id = $1", to_db(run_id))
        )
        return None if blob is None else Context.FromString(blob)

    async def add_serverapp_log(self, run_id: int, log_output: str) -> None:
        """Append a chunk of ServerApp output, stamped with the clock. ``RunNotFoundError``."""
        now = self._clock()
        added = await self._call(
            lambda db: db.fetch(
                "WITH added AS (INSERT INTO log (run_id, timestamp, text) "
                "SELECT run_id, $2, $3 FROM run WHERE run_id = $1 RETURNING run_id) "
                "SELECT pg_notify($4, $5 || ' ' || run_id) FROM added",
                to_db(run_id),
                now,
                log_output,
                CHANNEL,
                LOG,
            )
        )
        if not added:
            raise RunNotFoundError(run_id)

    async def get_serverapp_log(self, run_id: int, after_timestamp: float) -> tuple[str, float]:
        """Chunks stamped after ``after_timestamp``, joined, and the latest stamp (0.0 if none).

        ``RunNotFoundError``.
        """

        async def read(db: Connection) -> list[asyncpg.Record]:
            rows = await db.fetch(
                "SELECT text, timestamp FROM log WHERE run_id = $1 AND timestamp > $2 "
                "ORDER BY timestamp, id",
                to_db(run_id),
                after_timestamp,
            )
            if not rows and not await _run_exists(db, run_id):
                raise RunNotFoundError(run_id)
            return rows

        return joined_log(await self._call(read))

    # --- Messages -------------------------------------------------------------------------
    async def store_messages_ins(
        self, messages: Sequence[Message]
    ) -> list[str | MessageRejectedError]:
        """Store each instruction, in one transaction: each id, or why it was refused.

        The destination nodes are locked (``FOR KEY SHARE``) until the commit, so none is
        deleted between its check and its instruction's storing.
        """
        rows = [message_params(message, rules.new_message_id()) for message in messages]
        run_ids = list({to_db(message.metadata.run_id) for message in messages})
        node_ids = list({to_db(message.metadata.dst_node_id) for message in messages})

        async def store(db: Connection) -> list[str | MessageRejectedError]:
            runs = await db.fetch(
                "SELECT run_id FROM run WHERE run_id = ANY($1::bigint[])", run_ids
            )
            nodes = await db.fetch(
                "SELECT node_id FROM node WHERE node_id = ANY($1::bigint[]) FOR KEY SHARE",
                node_ids,
            )
            known_runs = {from_db(row["run_id"]) for row in runs}
            known_nodes = {from_db(row["node_id"]) for row in nodes}
            results: list[str | MessageRejectedError] = []
            accepted = []
            for message, params in zip(messages, rows, strict=True):
                meta = message.metadata
                rejection = rules.instruction_rejection(
                    meta, meta.run_id in known_runs, meta.dst_node_id in known_nodes
                )
                if rejection is not None:
                    results.append(rejection)
                    continue
                accepted.append(params)
                results.append(params[0])
            if accepted:
                await db.executemany(
                    f"INSERT INTO message_ins ({MESSAGE_FIELDS}) VALUES ({MESSAGE_PLACEHOLDERS})",
                    accepted,
                )
            return results

        try:
            return await self._transaction(store)
        finally:
            self._nothing_waiting.forget()  # at once here; others hear the trigger's notice

    async def store_message_res(self, message: Message) -> str:
        """Store a node's reply (already validated); assign and return its id.

        ``MessageRejectedError`` if the instruction is unknown or expired, was sent to another
        node or run, already has a reply, or the reply's TTL outlives the instruction's. A
        reply stored, or the instruction taken, by another process meanwhile (the
        constraints) is refused as the rule refuses it: no transaction is needed.
        """
        message_id = rules.new_message_id()
        params = message_params(message, message_id)
        now = self._clock()

        async def store(db: Connection) -> None:
            row = await db.fetchrow(
                f"SELECT {MESSAGE_METADATA_FIELDS}, EXISTS (SELECT 1 FROM message_res "
                "WHERE reply_to_message_id = ins.message_id) AS answered "
                "FROM message_ins AS ins WHERE message_id = $1",
                message.metadata.reply_to_message_id,
            )
            instruction = None if row is None else message_from_row(row).metadata
            rejection = rules.reply_rejection(
                instruction, row is not None and row["answered"], message.metadata, now
            )
            if rejection is not None:
                raise rejection
            try:
                await db.execute(
                    f"INSERT INTO message_res ({MESSAGE_FIELDS}) VALUES ({MESSAGE_PLACEHOLDERS})",
                    *params,
                )
            except asyncpg.UniqueViolationError:  # another reply came first
                rejection = rules.reply_rejection(instruction, True, message.metadata, now)
            except asyncpg.ForeignKeyViolationError:  # the instruction was taken meanwhile
                rejection = rules.reply_rejection(None, False, message.metadata, now)
            if rejection is not None:
                raise rejection

        await self._call(store)
        return message_id

    async def has_instructions_waiting(self, node_id: int) -> bool:
        """Whether an undelivered instruction (maybe expired) waits for the node: one read."""
        return bool(
            await self._call(
                lambda db: db.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM message_ins WHERE dst_node_id = $1 "
                    "AND delivered_at IS NULL)",
                    to_db(node_id),
                )
            )
        )

    async def is_idle_node(self, public_key: bytes, node_id: int) -> bool:
        """Whether the key is bound to the node and nothing undelivered waits for it.

        From memory when both were read before (``kept``), else one read, which keeps each.
        """
        if self._bindings.holds((public_key, node_id)) and self._nothing_waiting.holds(node_id):
            return True
        bindings_at, waiting_at = self._bindings.generation, self._nothing_waiting.generation
        row = await self._call(
            lambda db: db.fetchrow(
                "SELECT EXISTS (SELECT 1 FROM node WHERE node_id = $1 AND public_key = $2) "
                "AS bound, NOT EXISTS (SELECT 1 FROM message_ins WHERE dst_node_id = $1 "
                "AND delivered_at IS NULL) AS idle",
                to_db(node_id),
                public_key,
            )
        )
        assert row is not None  # a SELECT with no FROM has one row
        if row["bound"]:
            self._bindings.keep((public_key, node_id), bindings_at)
        if row["idle"]:
            self._nothing_waiting.keep(node_id, waiting_at)
        return bool(row["bound"] and row["idle"])

    async def pull_message_ins(self, node_id: int, limit: int = 1) -> list[Message]:
        """Hand out up to ``limit`` undelivered, unexpired instructions for a node, oldest first.

        Choosing and marking happen in one statement; rows another pull holds are skipped,
        so no instruction is handed out twice. A node found with nothing deliverable is
        answered from memory until instructions are stored (``kept``).
        """
        if self._nothing_waiting.holds(node_id):
            return []
        now = self._clock()
        read_at = self._nothing_waiting.generation
        rows = await self._call(
            lambda db: db.fetch(
                # A materialised CTE picks once: a subquery under IN may be run again
                # per row, and pick (and lock) more rows than the limit.
                "WITH picked AS MATERIALIZED (SELECT seq FROM message_ins "
                "WHERE dst_node_id = $2 AND delivered_at IS NULL "
                f"AND NOT {ttl_lapsed('created_at', 'ttl', '$1')} ORDER BY seq LIMIT $3 "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE message_ins AS ins SET delivered_at = $1 FROM picked "
                "WHERE ins.seq = picked.seq AND ins.delivered_at IS NULL "
                f"RETURNING ins.seq, {MESSAGE_FIELDS}",
                now,
                to_db(node_id),
                max(limit, 0),
            )
        )
        # None picked, but SKIP LOCKED may have passed over rows that a pull or a purge
        # holds and may give back: only a read that waits for no lock says none are there.
        if (
            not rows
            and self._nothing_waiting.trusted
            and await self._nothing_deliverable(node_id, now)
        ):
            self._nothing_waiting.keep(node_id, read_at)
        return [message_from_row(row) for row in sorted(rows, key=lambda row: row["seq"])]

    async def _nothing_deliverable(self, node_id: int, now: float) -> bool:
        """Whether no undelivered, unexpired instruction for the node exists, locked or not."""
        return bool(
            await self._call(
                lambda db: db.fetchval(
                    "SELECT NOT EXISTS (SELECT 1 FROM message_ins WHERE dst_node_id = $2 "
                    f"AND delivered_at IS NULL AND NOT {ttl_lapsed('created_at', 'ttl', '$1')})",
                    now,
                    to_db(node_id),
                )
            )
        )

    async def take_replies(self, run_id: int, message_ids: Sequence[str]) -> list[Message]:
        """Replies for the given instruction ids of ``run_id``, then forget those exchanges.

        Ids with no reply yet (and a live destination) are skipped. Missing or expired
        instructions, offline or deleted destinations and expired replies produce synthetic
        error replies (``rules.result_for``). Every instruction and reply returned is deleted.
        Raises ``RunMismatchError`` (and changes nothing) if an id belongs to another run.

        Only the instructions answered are locked, by their DELETE; a take hands out no
        result for an instruction another take deleted first, so two takes never both hand
        out one reply. The others are read unlocked: a node's pull skips locked
        instructions, and a take locking the whole round 4 times a second (the ServerApp's
        pull period) made nodes miss theirs and wait 3 s for the next poll, so a 1,000-node
        round ran out of time with most replies stored but not handed out.
        """
        wanted = list(dict.fromkeys(message_ids))
        now = self._clock()

        async def take(db: Connection) -> list[Message]:
            ins_rows = await db.fetch(
                f"SELECT {MESSAGE_METADATA_FIELDS}, node.online_until FROM message_ins "
                "LEFT JOIN node ON node.node_id = message_ins.dst_node_id "
                "WHERE message_id = ANY($1::text[])",
                wanted,
            )
            instructions, online_until = instructions_of_run(run_id, ins_rows)
            res_rows = await db.fetch(
                f"SELECT {MESSAGE_FIELDS} FROM message_res "
                "WHERE reply_to_message_id = ANY($1::text[])",
                list(instructions),
            )
            results = take_results(wanted, instructions, online_until, res_rows, now)
            deleted = await db.fetch(
                # In storage order: two takes of overlapping ids lock them in one order.
                "DELETE FROM message_ins WHERE seq IN (SELECT seq FROM message_ins "
                "WHERE message_id = ANY($1::text[]) ORDER BY seq FOR UPDATE) "
                "RETURNING message_id",
                [reply.metadata.reply_to_message_id for reply in results],
            )
            # An instruction another take deleted meanwhile is that take's to answer; one
            # that was absent already gets its error reply each time, as on every backend.
            lost = set(instructions) - {row["message_id"] for row in deleted}
            return [reply for reply in results if reply.metadata.reply_to_message_id not in lost]

        return await self._transaction(take)

    async def delete_run_messages(self, run_id: int) -> int:
        """Delete all instructions of a run and their replies; return how many instructions."""
        # The replies go with their instructions (ON DELETE CASCADE).
        status = await self._call(
            lambda db: db.execute("DELETE FROM message_ins WHERE run_id = $1", to_db(run_id))
        )
        return row_count(status)

    async def get_stats(self) -> StateStats:
        """Node and message counts, for metrics, read in one statement (one snapshot)."""
        now = self._clock()
        row = await self._call(
            lambda db: db.fetchrow(
                "SELECT (SELECT count(*) FROM node),"
                f" (SELECT count(*) FROM node WHERE {is_online('online_until', '$1')}),"
                " (SELECT count(*) FROM message_ins WHERE delivered_at IS NULL),"
                " (SELECT count(*) FROM message_ins WHERE delivered_at IS NOT NULL),"
                " (SELECT count(*) FROM message_res),"
                " (SELECT count(*) FROM message_ins WHERE "
                f"{ttl_lapsed('created_at', 'ttl', '$1')})",
                now,
            )
        )
        assert row is not None
        return StateStats(*(int(value) for value in row.values()))

    async def purge_expired_messages(self) -> int:
        """Delete instructions and replies whose TTL has lapsed; return how many rows went."""
        now = self._clock()
        lapsed = ttl_lapsed("created_at", "ttl", "$1")

        async def purge(db: Connection) -> int:
            # Replies are counted explicitly: rows removed by a cascade are not reported.
            replies = await db.execute(
                f"DELETE FROM message_res WHERE {lapsed} OR reply_to_message_id IN "
                f"(SELECT message_id FROM message_ins WHERE {lapsed})",
                now,
            )
            instructions = await db.execute(f"DELETE FROM message_ins WHERE {lapsed}", now)
            return row_count(replies) + row_count(instructions)

        return await self._transaction(purge)
