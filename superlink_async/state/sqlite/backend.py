"""The SQLite backend: every ``LinkState`` method on one aiosqlite connection.

``--database :memory:`` is one private in-memory database for the life of the process (the
reference opened a fresh, empty one per call); any other value is a file, created or reopened
(``files``), of our schema version (``schema``).

Concurrency: one connection, one writer. Each method runs whole, as one function, on
aiosqlite's thread, which runs them one at a time: no statements of two methods ever
interleave, no lock is needed, and each method costs one hop between the event loop and that
thread. A method that writes more than once runs in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` and
is rolled back on any error; once queued it runs to its end even if its caller is cancelled.
The node pull is a single ``UPDATE ... RETURNING``, so no instruction is handed out twice.

Decisions are ``rules``': a method reads what a rule needs, asks it, and writes the outcome
(statements call ``is_online`` and ``ttl_lapsed`` by name). Rows are encoded by
``state.columns``; hot reads are answered from ``caches``, at whose named invalidation points
every change passes.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import aiosqlite

from superlink_async._internals.aiosqlite import (
    run_on_connection_thread,
    sqlite_connection,
    wait_for_worker_thread,
)
from superlink_async.logs import logger
from superlink_async.state import rules
from superlink_async.state.base import (
    PENDING,
    STARTING,
    DatabaseCorruptError,
    LostReplica,
    MessageRejectedError,
    NodeNotFoundError,
    RunRecord,
    RunStatus,
    StateError,
    StateStats,
    StorageFullError,
)
from superlink_async.state.columns import (
    HELD_RUN_FIELDS,
    MESSAGE_FIELDS,
    METADATA_FIELDS,
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
from superlink_async.state.sqlite.caches import ReadCaches
from superlink_async.state.sqlite.files import (
    check_path,
    corrupt_message,
    enable_wal,
    verify_integrity,
)
from superlink_async.state.sqlite.rows import (
    INSTRUCTION_FIELDS,
    MESSAGE_METADATA_FIELDS,
    MESSAGE_PLACEHOLDERS,
    METADATA_PLACEHOLDERS,
    json_ids,
)
from superlink_async.state.sqlite.schema import SCHEMA_VERSION, prepare_schema
from superlink_async.state.sqlite.session import Session, atomically, register_rules
from superlink_async.wire.message_pb2 import Context, Message
from superlink_async.wire.recorddict_pb2 import ConfigRecord

IN_MEMORY = ":memory:"

T = TypeVar("T")


class SqliteLinkState(BackendBase):
    """``LinkState`` on SQLite; create it with ``await SqliteLinkState.open(database)``."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        clock: Callable[[], float],
        caches: ReadCaches,
        database: str = IN_MEMORY,
    ) -> None:
        super().__init__(clock)
        self._db = db
        self._database = database
        #: Set when a write found the disk full; cleared by the first ``probe`` write that
        #: succeeds. Only health reads it: every call still tries its own writes.
        self._storage_full = False
        self._session = Session(sqlite_connection(db))
        self._closed = False
        self._caches = caches

    @classmethod
    async def open(
        cls,
        database: str,
        clock: Callable[[], float] = time.time,
        *,
        check_integrity: bool = True,
    ) -> SqliteLinkState:
        """Open (creating if needed) ``database``, or a private in-memory DB for ``:memory:``.

        An existing file first passes SQLite's ``quick_check`` unless ``check_integrity``
        is False (``DatabaseCorruptError``). ``SchemaVersionError`` for a file of another
        schema version; ``StateError`` for a path that cannot be a usable SQLite database.
        Every refusal leaves the file as it was.
        """
        if database != IN_MEMORY:
            check_path(database)
        connecting = aiosqlite.connect(database, isolation_level=None)
        try:
            db = await connecting
        except sqlite3.Error as exc:
            await wait_for_worker_thread(connecting)
            raise StateError(f"Cannot open database {database!r}: {exc}") from exc
        db.row_factory = sqlite3.Row
        try:
            await db.execute("PRAGMA foreign_keys = ON")
            await register_rules(db)
            if database != IN_MEMORY and check_integrity:
                await verify_integrity(db, database)
            await prepare_schema(db, database)
            if database != IN_MEMORY:
                await enable_wal(db, database)
            rows = await db.execute_fetchall(
                "SELECT DISTINCT dst_node_id FROM message_ins WHERE delivered_at IS NULL"
            )
        except sqlite3.DatabaseError as exc:
            await db.close()
            if exc.sqlite_errorcode == sqlite3.SQLITE_CORRUPT:
                raise DatabaseCorruptError(corrupt_message(database, str(exc))) from exc
            raise StateError(f"Cannot use {database!r} as a SQLite database: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return cls(db, clock, ReadCaches(from_db(row[0]) for row in rows), database)

    async def aclose(self) -> None:
        """Close after the operations already queued; every change is already committed.

        Later calls raise ``RuntimeError``; closing again does nothing.
        """
        if not self._closed:
            self._closed = True
            await self._db.close()

    # --- Plumbing -------------------------------------------------------------------------
    async def _call(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` whole on the connection's thread: one hop, whatever it does.

        aiosqlite runs what it is given one at a time, so operations never interleave and
        need no lock; and a busy event loop delays each operation once, not once per
        statement while holding up every other operation (that capped SQLite at a few
        hundred operations per second under load). Handing aiosqlite a function takes its
        private names (``superlink_async._internals.aiosqlite``, checked at start-up).

        A queued operation runs to its end even if its caller is cancelled meanwhile, so
        an operation has happened entirely or not at all. Clocks are read on the event
        loop, before the hop.
        """
        if self._closed:
            raise RuntimeError("The SQLite LinkState is closed")
        try:
            return await run_on_connection_thread(self._db, work, self._session)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            if not self._storage_full:
                self._storage_full = True
                logger.error(
                    "Database %r cannot take writes (%s): calls that write are answered "
                    "UNAVAILABLE and health is NOT_SERVING until space returns",
                    self._database,
                    exc,
                )
            raise StorageFullError from exc

    async def _transaction(self, work: Callable[[Session], T]) -> T:
        """``_call`` for work that writes more than once: all of it commits, or none."""
        return await self._call(functools.partial(atomically, work))

    async def probe(self) -> None:
        """A read; while writes failed lately, a one-page write that ends that state if it works.

        The write rewrites the schema version with its own value: nothing changes, but the
        disk must take the page.
        """
        if not self._storage_full:
            await self._call(lambda db: db.row("SELECT 1 FROM run LIMIT 1"))
            return
        await self._call(lambda db: db.change(f"PRAGMA user_version = {SCHEMA_VERSION}"))
        self._storage_full = False
        logger.info("Database %r takes writes again", self._database)

    # --- Nodes ----------------------------------------------------------------------------
    async def create_node(self, ping_interval: float) -> int:
        """Register a node, online for ``ping_interval`` seconds; return its id (not 0 or 1)."""
        online_until = rules.online_until_on_creation(self._clock(), ping_interval)
        return await self._call(lambda db: db.insert_node(online_until, ping_interval, None))

    async def delete_node(self, node_id: int) -> None:
        """Forget a node and its key binding; its messages stay. ``NodeNotFoundError``."""

        def delete(db: Session) -> int:
            self._caches.bindings_changed()
            return db.change("DELETE FROM node WHERE node_id = ?", (to_db(node_id),))

        if not await self._call(delete):
            raise NodeNotFoundError(node_id)

    async def acknowledge_ping(self, node_id: int, ping_interval: float) -> bool:
        """Keep a node online for ``2 * ping_interval`` more seconds; False if it is unknown."""
        online_until = rules.online_until_after_ping(self._clock(), ping_interval)
        changed = await self._call(
            lambda db: db.change(
                "UPDATE node SET online_until = ?, ping_interval = ? WHERE node_id = ?",
                (online_until, ping_interval, to_db(node_id)),
            )
        )
        return changed > 0

    async def get_online_nodes(self) -> list[int]:
        """Ids of the nodes whose liveness has not lapsed, in ascending (unsigned) order."""
        now = self._clock()
        rows = await self._call(
            lambda db: db.rows("SELECT node_id FROM node WHERE is_online(online_until, ?)", (now,))
        )
        return sorted(from_db(row["node_id"]) for row in rows)

    async def node_exists(self, node_id: int) -> bool:
        """Whether the node id is registered (online or not)."""
        return await self._call(lambda db: db.node_exists(node_id))

    # --- Node authentication --------------------------------------------------------------
    async def create_keyed_node(
        self, ping_interval: float, public_key: bytes
    ) -> tuple[int, int | None]:
        """Register a node bound to ``public_key`` in one transaction; an offline holder goes."""
        now = self._clock()

        def create(db: Session) -> tuple[int, int | None]:
            self._caches.bindings_changed()
            owner = db.row(
                "SELECT node_id, online_until FROM node WHERE public_key = ?", (public_key,)
            )
            displaced = rules.displaced_key_holder(key_holder_from_row(owner), now)
            if displaced is not None:
                db.change("DELETE FROM node WHERE node_id = ?", (to_db(displaced),))
            online_until = rules.online_until_on_creation(now, ping_interval)
            return db.insert_node(online_until, ping_interval, public_key), displaced

        return await self._transaction(create)

    async def get_node_id(self, public_key: bytes) -> int | None:
        """The node a key is bound to, if any."""
        if (cached := self._caches.node_of_key(public_key)) is not None:
            return cached

        def read(db: Session) -> int | None:
            row = db.row("SELECT node_id FROM node WHERE public_key = ?", (public_key,))
            if row is None:
                return None
            node_id = from_db(row["node_id"])
            self._caches.binding_read(public_key, node_id)
            return node_id

        return await self._call(read)

    async def replace_known_public_keys(self, public_keys: Sequence[bytes]) -> None:
        """Make ``public_keys`` the complete list of keys allowed to authenticate."""

        def replace(db: Session) -> None:
            db.change("DELETE FROM known_public_key")
            db.connection.executemany(
                "INSERT INTO known_public_key (public_key) VALUES (?) ON CONFLICT DO NOTHING",
                [(key,) for key in public_keys],
            )

        await self._transaction(replace)

    async def get_known_public_keys(self) -> set[bytes]:
        """The keys allowed to authenticate."""
        rows = await self._call(lambda db: db.rows("SELECT public_key FROM known_public_key"))
        return {bytes(row["public_key"]) for row in rows}

    # --- Runs -----------------------------------------------------------------------------
    async def _store_new_run(self, run: NewRun) -> int:
        """Store a pending run and its initial ServerApp context in one transaction."""
        columns = new_run_params(run)

        def create(db: Session) -> int:
            run_id = db.insert_with_fresh_id(
                "INSERT INTO run (run_id, fab_id, fab_version, fab_hash, override_config, "
                "federation_options, pending_at, starting_at, running_at, finished_at, status, "
                "sub_status, details) VALUES (?, ?, ?, ?, ?, ?, ?, '', '', '', ?, '', '') "
                "ON CONFLICT DO NOTHING",
                rules.new_run_id,
                columns,
            )
            db.change(
                "INSERT INTO context (run_id, context) VALUES (?, ?)",
                (to_db(run_id), rules.context_at_creation(run_id).SerializeToString()),
            )
            return run_id

        return await self._transaction(create)

    async def get_run(self, run_id: int) -> RunRecord | None:
        """One run, or None."""
        row = self._caches.run_row(run_id)
        if row is None:

            def read(db: Session) -> sqlite3.Row | None:
                found = db.row(f"SELECT {RUN_FIELDS} FROM run WHERE run_id = ?", (to_db(run_id),))
                if found is not None:
                    self._caches.run_read(run_id, found)
                return found

            row = await self._call(read)
        return None if row is None else run_from_row(row)

    async def get_runs(self) -> list[RunRecord]:
        """Every run, oldest first (by ``pending_at``, then creation order)."""
        rows = await self._call(
            lambda db: db.rows(f"SELECT {RUN_FIELDS} FROM run ORDER BY pending_at, seq")
        )
        return [run_from_row(row) for row in rows]

    async def get_run_statuses(self, run_ids: Sequence[int]) -> dict[int, RunStatus]:
        """Statuses of the known runs among ``run_ids``; unknown ids are left out."""
        ids_json = json_ids(to_db(run_id) for run_id in run_ids)
        rows = await self._call(
            lambda db: db.rows(
                "SELECT run_id, status, sub_status, details FROM run "
                "WHERE run_id IN (SELECT value FROM json_each(?))",
                (ids_json,),
            )
        )
        return {from_db(row["run_id"]): run_status_from_row(row) for row in rows}

    async def _transition_run(self, run_id: int, new_status: RunStatus) -> str | None:
        """Apply a valid transition (``rules``), stamped; return why an invalid one is refused."""
        stamp = rules.iso_timestamp(self._clock())

        def update(db: Session) -> str | None:
            row = db.row(
                "SELECT status, sub_status, details FROM run WHERE run_id = ?", (to_db(run_id),)
            )
            error = transition_error_from_row(row, run_id, new_status)
            if error is not None:
                return error
            stamp_column, params = transition_params(run_id, new_status, stamp)
            self._caches.run_changed(run_id)
            db.change(
                # A run leaving pending leaves its reservation: only pending runs have one.
                f"UPDATE run SET status = ?, sub_status = ?, details = ?, {stamp_column} = ?, "
                "reserved_by = '' WHERE run_id = ?",
                params,
            )
            return None

        return await self._transaction(update)

    async def get_pending_run_id(self) -> int | None:
        """The oldest pending run, if any."""
        row = await self._call(
            lambda db: db.row(
                "SELECT run_id FROM run WHERE status = ? ORDER BY pending_at, seq LIMIT 1",
                (PENDING,),
            )
        )
        return None if row is None else from_db(row["run_id"])

    async def reserve_pending_run(self, replica_id: str) -> int | None:
        """Reserve the oldest unreserved pending run for ``replica_id``, in one statement.

        No cache holds ``reserved_by``: nothing to invalidate.
        """
        row = await self._call(
            lambda db: db.row(
                "UPDATE run SET reserved_by = ? WHERE seq = (SELECT seq FROM run "
                "WHERE status = ? AND reserved_by = '' ORDER BY pending_at, seq LIMIT 1) "
                "RETURNING run_id",
                (replica_id, PENDING),
            )
        )
        return None if row is None else from_db(row["run_id"])

    async def claim_pending_run(self, replica_id: str) -> RunRecord | None:
        """Start the run ``rules.claim_rank`` puts first, owned by ``replica_id``.

        One statement picks and updates the run, so two claims can never get the same run.
        """
        stamp = rules.iso_timestamp(self._clock())

        def claim(db: Session) -> sqlite3.Row | None:
            self._caches.runs_changed()
            return db.row(
                "UPDATE run SET status = ?, starting_at = ?, owner = ?, reserved_by = '' "
                "WHERE seq = (SELECT seq FROM run WHERE status = ? "
                "AND claim_rank(reserved_by, ?) IS NOT NULL "
                "ORDER BY claim_rank(reserved_by, ?), pending_at, seq LIMIT 1) "
                f"RETURNING {RUN_FIELDS}",
                (STARTING, stamp, replica_id, PENDING, replica_id, replica_id),
            )

        row = await self._call(claim)
        return None if row is None else run_from_row(row)

    # --- Replicas -------------------------------------------------------------------------
    async def register_replica(
        self, replica_id: str, lease_seconds: float, details: str
    ) -> list[int]:
        """Take the lease in one transaction, after every other lease and what it held.

        One process owns the file, so every other lease is stale.
        """
        now = self._clock()
        stamp = rules.iso_timestamp(now)

        def register(db: Session) -> list[rules.HeldRun]:
            db.change("DELETE FROM replica")
            failed, _ = self._drop_orphans(db, lambda _: details, stamp)
            db.change(
                "INSERT INTO replica (replica_id, lease_until, started_at) VALUES (?, ?, ?)",
                (replica_id, rules.lease_until(now, lease_seconds), now),
            )
            return failed

        return rules.oldest_first(await self._transaction(register))

    async def renew_replica_lease(self, replica_id: str, lease_seconds: float) -> bool:
        """Extend a lease still held, in one statement, from when that statement runs."""
        changed = await self._call(
            lambda db: db.change(
                "UPDATE replica SET lease_until = ? WHERE replica_id = ?",
                (rules.lease_until(self._clock(), lease_seconds), replica_id),
            )
        )
        return changed > 0

    async def reap_lost_replicas(
        self, details: Callable[[str], str], *, reaper: str | None = None
    ) -> list[LostReplica]:
        """Drop the lapsed leases but the reaper's and what no lease holds, in one transaction."""

        def reap(db: Session) -> list[LostReplica]:
            now = self._clock()
            stamp = rules.iso_timestamp(now)
            rows = db.rows(
                "DELETE FROM replica WHERE reapable(replica_id, lease_until, ?, ?) "
                "RETURNING replica_id",
                (now, reaper),
            )
            orphans = self._drop_orphans(db, details, stamp)
            return rules.lost_replicas((row["replica_id"] for row in rows), *orphans)

        return await self._transaction(reap)

    async def release_replica(self, replica_id: str, details: str) -> list[int]:
        """Drop the lease and what it held, in one transaction."""
        stamp = rules.iso_timestamp(self._clock())

        def release(db: Session) -> list[rules.HeldRun]:
            db.change("DELETE FROM replica WHERE replica_id = ?", (replica_id,))
            failed, _ = self._drop_orphans(db, lambda _: details, stamp, only=replica_id)
            return failed

        return rules.oldest_first(await self._transaction(release))

    async def get_replica_leases(self) -> dict[str, float]:
        """Every lease held: replica id to the Unix time it lapses."""
        rows = await self._call(lambda db: db.rows("SELECT replica_id, lease_until FROM replica"))
        return {row["replica_id"]: row["lease_until"] for row in rows}

    def _drop_orphans(
        self, db: Session, details: Callable[[str], str], stamp: str, only: str | None = None
    ) -> tuple[list[rules.HeldRun], list[rules.HeldRun]]:
        """Fail the held runs and release the reservations of replicas holding no lease.

        With ``only``, just those of that replica. Returns (failed, released).
        """
        self._caches.runs_changed()
        orphaned = "{} NOT IN (SELECT replica_id FROM replica)" if only is None else "{} = ?"
        holder = () if only is None else (only,)
        failed = [
            held_run_from_row(row)
            for row in db.rows(
                f"SELECT {HELD_RUN_FIELDS}, owner AS holder FROM run "
                f"WHERE status IN (?, ?) AND {orphaned.format('owner')}",
                (*rules.HELD_STATUSES, *holder),
            )
        ]
        db.connection.executemany(
            "UPDATE run SET status = ?, sub_status = ?, details = ?, finished_at = ? "
            "WHERE run_id = ?",
            lost_run_params(failed, details, stamp),
        )
        released = [
            held_run_from_row(row)
            for row in db.rows(
                f"SELECT {HELD_RUN_FIELDS}, reserved_by AS holder FROM run "
                f"WHERE status = ? AND reserved_by <> '' AND {orphaned.format('reserved_by')}",
                (PENDING, *holder),
            )
        ]
        db.connection.executemany(
            "UPDATE run SET reserved_by = '' WHERE run_id = ?",
            [(to_db(run.run_id),) for run in released],
        )
        return failed, released

    async def get_federation_options(self, run_id: int) -> ConfigRecord | None:
        """The run's federation options, or None for an unknown run."""
        row = await self._call(
            lambda db: db.row(
                "SELECT federation_options FROM run WHERE run_id = ?", (to_db(run_id),)
            )
        )
        return None if row is None else ConfigRecord.FromString(row["federation_options"])

    # --- ServerApp context and logs -------------------------------------------------------
    async def set_serverapp_context(self, run_id: int, context: Context) -> None:
        """Replace the run's ServerApp context. ``RunNotFoundError``."""
        serialized = context.SerializeToString()

        def store(db: Session) -> None:
            db.require_run(run_id)
            db.change(
                "INSERT INTO context (run_id, context) VALUES (?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET context = excluded.context",
                (to_db(run_id), serialized),
            )

        await self._transaction(store)

    async def get_serverapp_context(self, run_id: int) -> Context | None:
        """The run's ServerApp context, or None."""
        row = await self._call(
            lambda db: db.row("SELECT context FROM context WHERE run_id = ?", (to_db(run_id),))
        )
        return None if row is None else Context.FromString(row["context"])

    async def add_serverapp_log(self, run_id: int, log_output: str) -> None:
        """Append a chunk of ServerApp output, stamped with the clock. ``RunNotFoundError``."""
        now = self._clock()

        def append(db: Session) -> None:
            db.require_run(run_id)
            db.change(
                "INSERT INTO log (run_id, timestamp, text) VALUES (?, ?, ?)",
                (to_db(run_id), now, log_output),
            )

        await self._transaction(append)

    async def get_serverapp_log(self, run_id: int, after_timestamp: float) -> tuple[str, float]:
        """Chunks stamped after ``after_timestamp``, joined, and the latest stamp (0.0 if none).

        ``RunNotFoundError``.
        """

        def read(db: Session) -> list[sqlite3.Row]:
            db.require_run(run_id)
            return db.rows(
                "SELECT text, timestamp FROM log WHERE run_id = ? AND timestamp > ? "
                "ORDER BY timestamp, id",
                (to_db(run_id), after_timestamp),
            )

        return joined_log(await self._call(read))

    # --- Messages -------------------------------------------------------------------------
    async def store_messages_ins(
        self, messages: Sequence[Message]
    ) -> list[str | MessageRejectedError]:
        """Store each instruction, in one transaction: each id, or why it was refused."""
        rows = [message_params(message, rules.new_message_id()) for message in messages]

        def store(db: Session) -> list[str | MessageRejectedError]:
            results: list[str | MessageRejectedError] = []
            for message, params in zip(messages, rows, strict=True):
                meta = message.metadata
                rejection = rules.instruction_rejection(
                    meta, db.run_exists(meta.run_id), db.node_exists(meta.dst_node_id)
                )
                if rejection is not None:
                    results.append(rejection)
                    continue
                metadata, payload = params[:-2], params[-2:]
                db.change(
                    f"INSERT INTO message_ins ({METADATA_FIELDS}) VALUES ({METADATA_PLACEHOLDERS})",
                    metadata,
                )
                db.change(
                    "INSERT INTO message_ins_payload (seq, content, error) "
                    "VALUES (last_insert_rowid(), ?, ?)",
                    payload,
                )
                self._caches.instruction_stored(meta.dst_node_id)
                results.append(params[0])
            return results

        return await self._transaction(store)

    async def store_message_res(self, message: Message) -> str:
        """Store a node's reply (already validated); assign and return its id.

        ``MessageRejectedError`` if the instruction is unknown or expired, was sent to another
        node or run, already has a reply, or the reply's TTL outlives the instruction's.
        """
        message_id = rules.new_message_id()
        params = message_params(message, message_id)
        now = self._clock()

        def store(db: Session) -> None:
            row = db.row(
                f"SELECT {MESSAGE_METADATA_FIELDS}, EXISTS (SELECT 1 FROM message_res "
                "WHERE reply_to_message_id = ins.message_id) AS answered "
                "FROM message_ins AS ins WHERE message_id = ?",
                (message.metadata.reply_to_message_id,),
            )
            rejection = rules.reply_rejection(
                None if row is None else message_from_row(row).metadata,
                row is not None and bool(row["answered"]),
                message.metadata,
                now,
            )
            if rejection is not None:
                raise rejection
            db.change(
                f"INSERT INTO message_res ({MESSAGE_FIELDS}) VALUES ({MESSAGE_PLACEHOLDERS})",
                params,
            )

        await self._transaction(store)
        return message_id

    async def has_instructions_waiting(self, node_id: int) -> bool:
        """From the read cache of nodes with instructions waiting."""
        return self._caches.may_have_instructions(node_id)

    async def pull_message_ins(self, node_id: int, limit: int = 1) -> list[Message]:
        """Hand out up to ``limit`` undelivered, unexpired instructions for a node, oldest first.

        Choosing and marking happen in one statement, so no instruction is handed out twice.
        """
        if not self._caches.may_have_instructions(node_id):
            return []
        now = self._clock()

        def pull(db: Session) -> list[sqlite3.Row]:
            rows = db.rows(
                "UPDATE message_ins SET delivered_at = ? WHERE seq IN ("
                "SELECT seq FROM message_ins WHERE dst_node_id = ? AND delivered_at IS NULL "
                "AND NOT ttl_lapsed(created_at, ttl, ?) ORDER BY seq LIMIT ?) "
                f"RETURNING seq, {INSTRUCTION_FIELDS}",
                (now, to_db(node_id), now, max(limit, 0)),  # SQLite reads LIMIT -1 as "all"
            )
            if len(rows) < limit:
                self._caches.node_drained(node_id)
            return rows

        rows = await self._call(pull)
        rows.sort(key=lambda row: int(row["seq"]))
        return [message_from_row(row) for row in rows]

    async def take_replies(self, run_id: int, message_ids: Sequence[str]) -> list[Message]:
        """Replies for the given instruction ids of ``run_id``, then forget those exchanges.

        Ids with no reply yet (and a live destination) are skipped. Missing or expired
        instructions, offline or deleted destinations and expired replies produce synthetic
        error replies (``rules.result_for``). Every instruction and reply returned is deleted.
        Raises ``RunMismatchError`` (and changes nothing) if an id belongs to another run.
        """
        wanted = list(dict.fromkeys(message_ids))
        ids_json = json_ids(wanted)
        now = self._clock()

        def take(db: Session) -> list[Message]:
            ins_rows = db.rows(
                f"SELECT {MESSAGE_METADATA_FIELDS}, node.online_until FROM message_ins "
                "LEFT JOIN node ON node.node_id = message_ins.dst_node_id "
                "WHERE message_id IN (SELECT value FROM json_each(?))",
                (ids_json,),
            )
            instructions, online_until = instructions_of_run(run_id, ins_rows)
            res_rows = db.rows(
                f"SELECT {MESSAGE_FIELDS} FROM message_res "
                "WHERE reply_to_message_id IN (SELECT value FROM json_each(?))",
                (ids_json,),
            )
            results = take_results(wanted, instructions, online_until, res_rows, now)
            db.change(
                "DELETE FROM message_ins WHERE message_id IN (SELECT value FROM json_each(?))",
                (json_ids(reply.metadata.reply_to_message_id for reply in results),),
            )
            return results

        return await self._transaction(take)

    async def delete_run_messages(self, run_id: int) -> int:
        """Delete all instructions of a run and their replies; return how many instructions."""
        # The replies go with their instructions (ON DELETE CASCADE).
        return await self._call(
            lambda db: db.change("DELETE FROM message_ins WHERE run_id = ?", (to_db(run_id),))
        )

    async def get_stats(self) -> StateStats:
        """Node and message counts, for metrics, read in one statement."""
        now = self._clock()
        row = await self._call(
            lambda db: db.row(
                "SELECT (SELECT count(*) FROM node),"
                " (SELECT count(*) FROM node WHERE is_online(online_until, ?)),"
                " (SELECT count(*) FROM message_ins WHERE delivered_at IS NULL),"
                " (SELECT count(*) FROM message_ins WHERE delivered_at IS NOT NULL),"
                " (SELECT count(*) FROM message_res),"
                " (SELECT count(*) FROM message_ins WHERE ttl_lapsed(created_at, ttl, ?))",
                (now, now),
            )
        )
        assert row is not None
        return StateStats(*(int(value) for value in row))

    async def purge_expired_messages(self) -> int:
        """Delete instructions and replies whose TTL has lapsed; return how many rows went."""
        now = self._clock()

        def purge(db: Session) -> int:
            # Replies are counted explicitly: rows removed by a cascade are not reported.
            replies = db.change(
                "DELETE FROM message_res WHERE ttl_lapsed(created_at, ttl, ?) OR "
                "reply_to_message_id IN "
                "(SELECT message_id FROM message_ins WHERE ttl_lapsed(created_at, ttl, ?))",
                (now, now),
            )
            instructions = db.change(
                "DELETE FROM message_ins WHERE ttl_lapsed(created_at, ttl, ?)", (now,)
            )
            return replies + instructions

        return await self._transaction(purge)
