"""The SQLite backend: every ``LinkState`` method on one aiosqlite connection.

``--database :memory:`` is one private in-memory database for the life of the process (the
reference opened a fresh, empty one per call); any other value is a file, created or reopened.
The file carries our schema version in ``PRAGMA user_version``; a file of another version is
refused with ``SchemaVersionError`` rather than guessed at.

Concurrency: one connection, one writer. Each method runs whole, as one function, on
aiosqlite's thread, which runs them one at a time: no statements of two methods ever
interleave, no lock is needed, and each method costs one hop between the event loop and that
thread. A method that writes more than once runs in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` and
is rolled back on any error; once queued it runs to its end even if its caller is cancelled.
The node pull is a single ``UPDATE ... RETURNING``, so no instruction is handed out twice.

Durability: files use ``journal_mode=WAL`` with ``synchronous=NORMAL``. A committed change
survives a crash of this process; after a power loss or OS crash the last few commits may be
lost, but the database stays consistent. That trade is acceptable here: every client of the
SuperLink retries or re-registers, and a run's outcome is reported again by its ServerApp.

Storage: uint64 ids (runs, nodes) are stored as the signed int64 with the same bits. Messages
keep their metadata in columns and their content or error as the serialized protobuf (an
instruction's in a table of its own, so that marking it delivered rewrites a small row); contexts,
federation options and override configs are serialized protobufs too, so nothing is lost
(bytes values, bool versus int).
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiosqlite
import anyio.to_thread

from superlink_async.codec import fill_user_config, user_config_from_proto
from superlink_async.logs import logger
from superlink_async.state import rules
from superlink_async.state.base import (
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    STARTING,
    DatabaseCorruptError,
    MessageRejectedError,
    NodeNotFoundError,
    PublicKeyInUseError,
    RunMismatchError,
    RunNotFoundError,
    RunRecord,
    RunStatus,
    SchemaVersionError,
    StateError,
    StateStats,
    StorageFullError,
    UserConfig,
)
from superlink_async.wire import run_pb2
from superlink_async.wire.error_pb2 import Error
from superlink_async.wire.message_pb2 import Context, Message, Metadata
from superlink_async.wire.recorddict_pb2 import ConfigRecord, RecordDict

#: The schema this module writes. Bump it (and add the step from the previous version to
#: ``_MIGRATIONS``) whenever a table changes shape.
SCHEMA_VERSION = 2

IN_MEMORY = ":memory:"

T = TypeVar("T")

_UINT64_SIGN_BIT = 1 << 63
_UINT64_RANGE = 1 << 64

# The same message columns in both message tables, so one row decoder serves both. An
# instruction keeps its payload in a table of its own: SQLite rewrites a whole row when one
# of its columns changes size, and marking a 100 KB instruction delivered rewrote 100 KB.
_METADATA_COLUMNS = """
    message_id          TEXT NOT NULL,
    run_id              INTEGER NOT NULL,
    src_node_id         INTEGER NOT NULL,
    dst_node_id         INTEGER NOT NULL,
    reply_to_message_id TEXT NOT NULL,
    group_id            TEXT NOT NULL,
    message_type        TEXT NOT NULL,
    created_at          REAL NOT NULL,
    ttl                 REAL NOT NULL
"""
_PAYLOAD_COLUMNS = """
    content             BLOB,  -- serialized RecordDict, NULL if the message carries an error
    error               BLOB   -- serialized Error, NULL if the message carries content
"""
_METADATA_FIELDS = (
    "message_id, run_id, src_node_id, dst_node_id, reply_to_message_id, group_id, "
    "message_type, created_at, ttl"
)
_MESSAGE_FIELDS = f"{_METADATA_FIELDS}, content, error"
_METADATA_PLACEHOLDERS = ", ".join("?" * len(_METADATA_FIELDS.split(", ")))
_MESSAGE_PLACEHOLDERS = f"{_METADATA_PLACEHOLDERS}, ?, ?"
#: An instruction's columns without its payload: to judge an instruction, not to deliver it.
#: (A ServerApp polling 1,000 replies of a round read 100 MB of instructions each time.)
_MESSAGE_METADATA_FIELDS = f"{_METADATA_FIELDS}, NULL AS content, NULL AS error"
#: An instruction's columns with its payload, from within a statement on ``message_ins``.
_INSTRUCTION_FIELDS = (
    f"{_METADATA_FIELDS}, "
    "(SELECT content FROM message_ins_payload AS p WHERE p.seq = message_ins.seq) AS content, "
    "(SELECT error FROM message_ins_payload AS p WHERE p.seq = message_ins.seq) AS error"
)

_RUN_FIELDS = (
    "run_id, fab_id, fab_version, fab_hash, override_config, federation_options, pending_at, "
    "starting_at, running_at, finished_at, status, sub_status, details"
)

_INSTRUCTION_PAYLOAD_TABLE = f"""
    CREATE TABLE message_ins_payload (
        seq                 INTEGER PRIMARY KEY REFERENCES message_ins (seq) ON DELETE CASCADE,
        {_PAYLOAD_COLUMNS}
    )
"""

_SCHEMA = (
    """
    CREATE TABLE run (
        seq                 INTEGER PRIMARY KEY,  -- creation order: FIFO tie-break
        run_id              INTEGER NOT NULL UNIQUE,
        fab_id              TEXT NOT NULL,
        fab_version         TEXT NOT NULL,
        fab_hash            TEXT NOT NULL,
        override_config     BLOB NOT NULL,  -- serialized Run holding only override_config
        federation_options  BLOB NOT NULL,  -- serialized ConfigRecord
        pending_at          TEXT NOT NULL,
        starting_at         TEXT NOT NULL,
        running_at          TEXT NOT NULL,
        finished_at         TEXT NOT NULL,
        status              TEXT NOT NULL,
        sub_status          TEXT NOT NULL,
        details             TEXT NOT NULL
    )
    """,
    "CREATE INDEX run_by_status ON run (status, pending_at, seq)",
    """
    CREATE TABLE context (
        run_id              INTEGER PRIMARY KEY REFERENCES run (run_id),
        context             BLOB NOT NULL  -- serialized Context
    )
    """,
    """
    CREATE TABLE log (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id              INTEGER NOT NULL REFERENCES run (run_id),
        timestamp           REAL NOT NULL,
        text                TEXT NOT NULL
    )
    """,
    "CREATE INDEX log_by_run ON log (run_id, timestamp)",
    """
    CREATE TABLE node (
        node_id             INTEGER PRIMARY KEY,
        online_until        REAL NOT NULL,
        ping_interval       REAL NOT NULL,
        public_key          BLOB UNIQUE  -- NULL while no key is bound
    )
    """,
    "CREATE TABLE known_public_key (public_key BLOB PRIMARY KEY) WITHOUT ROWID",
    f"""
    CREATE TABLE message_ins (
        seq                 INTEGER PRIMARY KEY,  -- storage order: oldest-first pulls
        {_METADATA_COLUMNS},
        delivered_at        REAL,  -- NULL until a node pulled it
        UNIQUE (message_id),
        FOREIGN KEY (run_id) REFERENCES run (run_id)
    )
    """,
    "CREATE INDEX message_ins_by_dst ON message_ins (dst_node_id, seq) WHERE delivered_at IS NULL",
    "CREATE INDEX message_ins_by_run ON message_ins (run_id)",
    _INSTRUCTION_PAYLOAD_TABLE,
    f"""
    CREATE TABLE message_res (
        {_METADATA_COLUMNS},
        {_PAYLOAD_COLUMNS},
        PRIMARY KEY (message_id),
        UNIQUE (reply_to_message_id),  -- one reply per instruction
        FOREIGN KEY (reply_to_message_id) REFERENCES message_ins (message_id) ON DELETE CASCADE
    )
    """,
)


#: How each older schema version becomes the next one: statements run in one transaction.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        _INSTRUCTION_PAYLOAD_TABLE,
        "INSERT INTO message_ins_payload (seq, content, error) "
        "SELECT seq, content, error FROM message_ins",
        "ALTER TABLE message_ins DROP COLUMN content",
        "ALTER TABLE message_ins DROP COLUMN error",
    ),
}

#: Run rows the state keeps at most before it forgets them all (runs are read by id).
_RUN_ROWS_KEPT = 1024

#: Page size of new files. A message's payload lives in a chain of overflow pages, read and
#: freed one page at a time; 16 KiB pages make a 100 KB payload 7 pages instead of 25.
_PAGE_SIZE = 16384

#: The WAL is copied into the database file once it holds this many pages (4 MiB)...
_WAL_CHECKPOINT_PAGES = 256
#: ...and cut back to this size when it starts over, so it stays about this small.
WAL_SIZE_LIMIT = _WAL_CHECKPOINT_PAGES * _PAGE_SIZE


def _to_db(value: int) -> int:
    """A uint64 as the signed int64 with the same bits (SQLite integers are signed)."""
    return value - _UINT64_RANGE if value >= _UINT64_SIGN_BIT else value


def _from_db(value: int) -> int:
    """The uint64 a stored signed int64 stands for."""
    return value + _UINT64_RANGE if value < 0 else value


def _json_ids(values: Iterable[object]) -> str:
    """A JSON array for ``json_each(?)``: any number of ids in one fixed statement."""
    return json.dumps(list(values))


def _encode_user_config(config: UserConfig) -> bytes:
    """Serialize through the wire's ``map<string, Scalar>``, which keeps every value type."""
    holder = run_pb2.Run()
    fill_user_config(holder.override_config, config)
    return holder.SerializeToString()


def _decode_user_config(blob: bytes) -> UserConfig:
    return user_config_from_proto(run_pb2.Run.FromString(blob).override_config)


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=_from_db(row["run_id"]),
        fab_id=row["fab_id"],
        fab_version=row["fab_version"],
        fab_hash=row["fab_hash"],
        override_config=_decode_user_config(row["override_config"]),
        pending_at=row["pending_at"],
        starting_at=row["starting_at"],
        running_at=row["running_at"],
        finished_at=row["finished_at"],
        status=RunStatus(row["status"], row["sub_status"], row["details"]),
        federation_options=ConfigRecord.FromString(row["federation_options"]),
    )


def _message_params(message: Message, message_id: str) -> tuple[Any, ...]:
    """Column values (in ``_MESSAGE_FIELDS`` order) for storing ``message`` as ``message_id``."""
    meta = message.metadata
    return (
        message_id,
        _to_db(meta.run_id),
        _to_db(meta.src_node_id),
        _to_db(meta.dst_node_id),
        meta.reply_to_message_id,
        meta.group_id,
        meta.message_type,
        meta.created_at,
        meta.ttl,
        message.content.SerializeToString() if message.HasField("content") else None,
        message.error.SerializeToString() if message.HasField("error") else None,
    )


def _message_from_row(row: sqlite3.Row) -> Message:
    message = Message(
        metadata=Metadata(
            message_id=row["message_id"],
            run_id=_from_db(row["run_id"]),
            src_node_id=_from_db(row["src_node_id"]),
            dst_node_id=_from_db(row["dst_node_id"]),
            reply_to_message_id=row["reply_to_message_id"],
            group_id=row["group_id"],
            message_type=row["message_type"],
            created_at=row["created_at"],
            ttl=row["ttl"],
        )
    )
    if row["content"] is not None:
        message.content.CopyFrom(RecordDict.FromString(row["content"]))
    if row["error"] is not None:
        message.error.CopyFrom(Error.FromString(row["error"]))
    return message


class _Session:
    """The connection as seen from aiosqlite's thread: plain, synchronous SQLite calls."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self.connection.execute(sql, params).fetchall()

    def row(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a write statement; return how many rows it touched."""
        return self.connection.execute(sql, params).rowcount

    def insert_with_fresh_id(
        self, sql: str, new_id: Callable[[], int], params: Sequence[Any]
    ) -> int:
        """Insert with a random id (first parameter), drawing again on the rare collision.

        ``sql`` must end in ``ON CONFLICT [(id)] DO NOTHING`` so a collision inserts nothing.
        """
        while True:
            candidate = new_id()
            if self.change(sql, (_to_db(candidate), *params)):
                return candidate

    def insert_node(self, online_until: float, ping_interval: float, key: bytes | None) -> int:
        """A new node under a fresh random id, bound to ``key`` if one is given."""
        return self.insert_with_fresh_id(
            "INSERT INTO node (node_id, online_until, ping_interval, public_key) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (node_id) DO NOTHING",
            rules.new_node_id,
            (online_until, ping_interval, key),
        )

    def run_exists(self, run_id: int) -> bool:
        return self.row("SELECT 1 FROM run WHERE run_id = ?", (_to_db(run_id),)) is not None

    def require_run(self, run_id: int) -> None:
        if not self.run_exists(run_id):
            raise RunNotFoundError(run_id)

    def node_exists(self, node_id: int) -> bool:
        return self.row("SELECT 1 FROM node WHERE node_id = ?", (_to_db(node_id),)) is not None


def _atomically(work: Callable[[_Session], T], db: _Session) -> T:
    """``work`` in one ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if it raises."""
    db.connection.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        db.connection.rollback()
        raise
    db.connection.commit()
    return result


class SqliteLinkState:
    """``LinkState`` on SQLite; create it with ``await SqliteLinkState.open(database)``."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        clock: Callable[[], float],
        waiting: set[int],
        database: str = IN_MEMORY,
    ) -> None:
        self._db = db
        self._database = database
        #: Set when a write found the disk full; cleared by the first ``probe`` write that
        #: succeeds. Only health reads it: every call still tries its own writes.
        self._storage_full = False
        self._session = _Session(db._conn)
        self._clock = clock
        self._closed = False
        #: Every node with an undelivered instruction, and maybe some without: a node not in
        #: it has nothing to pull, and its pull (most pulls, every 3 s from every idle node)
        #: needs no trip to the database. Only operations on the database's thread change
        #: it - a stored instruction adds its node, a pull that found fewer than it could
        #: take removes it - so it follows the database's own order of events.
        self._waiting = waiting
        #: Rows of runs read so far. Every node's GetRun, GetFab and PushMessages reads its
        #: run (3,000 reads in a 1,000-node round). Like ``_waiting`` it changes only on the
        #: database's thread: a read stores its row, a change of a run drops it.
        self._run_rows: dict[int, sqlite3.Row] = {}
        #: Key -> node bindings read so far (bound keys only, so unknown keys cannot grow
        #: it). Every Fleet call of a signed node looks its key up. Like the two above it
        #: changes only on the database's thread: a read stores its binding, a change of
        #: any binding (a bind, a deleted node) clears it all.
        self._node_ids: dict[bytes, int] = {}

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
            _check_path(database)
        connecting = aiosqlite.connect(database, isolation_level=None)
        try:
            db = await connecting
        except sqlite3.Error as exc:
            # aiosqlite's thread is still closing: let it end while this loop can hear it.
            await anyio.to_thread.run_sync(connecting._thread.join)
            raise StateError(f"Cannot open database {database!r}: {exc}") from exc
        db.row_factory = sqlite3.Row
        try:
            await db.execute("PRAGMA foreign_keys = ON")
            if database != IN_MEMORY and check_integrity:
                await _check_integrity(db, database)
            await _prepare_schema(db, database)
            if database != IN_MEMORY:
                await _enable_wal(db, database)
            rows = await db.execute_fetchall(
                "SELECT DISTINCT dst_node_id FROM message_ins WHERE delivered_at IS NULL"
            )
        except sqlite3.DatabaseError as exc:
            await db.close()
            if exc.sqlite_errorcode == sqlite3.SQLITE_CORRUPT:
                raise DatabaseCorruptError(_corrupt_message(database, str(exc))) from exc
            raise StateError(f"Cannot use {database!r} as a SQLite database: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return cls(db, clock, {_from_db(row[0]) for row in rows}, database)

    async def aclose(self) -> None:
        """Close after the operations already queued; every change is already committed.

        Later calls raise ``RuntimeError``; closing again does nothing.
        """
        if not self._closed:
            self._closed = True
            await self._db.close()

    # --- Plumbing -------------------------------------------------------------------------
    async def _call(self, work: Callable[[_Session], T]) -> T:
        """Run ``work`` whole on the connection's thread: one hop, whatever it does.

        aiosqlite runs what it is given one at a time, so operations never interleave and
        need no lock; and a busy event loop delays each operation once, not once per
        statement while holding up every other operation (that capped SQLite at a few
        hundred operations per second under load). ``aiosqlite.Connection._execute`` is
        the only way to hand it a function; tests/state pins it.

        A queued operation runs to its end even if its caller is cancelled meanwhile, so
        an operation has happened entirely or not at all. Clocks are read on the event
        loop, before the hop.
        """
        if self._closed:
            raise RuntimeError("The SQLite LinkState is closed")
        try:
            result: T = await self._db._execute(work, self._session)  # type: ignore[no-untyped-call]
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
        return result

    async def _transaction(self, work: Callable[[_Session], T]) -> T:
        """``_call`` for work that writes more than once: all of it commits, or none."""
        return await self._call(functools.partial(_atomically, work))

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
        online_until = self._clock() + ping_interval
        return await self._call(lambda db: db.insert_node(online_until, ping_interval, None))

    async def delete_node(self, node_id: int) -> None:
        """Forget a node and its key binding; its messages stay. ``NodeNotFoundError``."""

        def delete(db: _Session) -> int:
            self._node_ids.clear()
            return db.change("DELETE FROM node WHERE node_id = ?", (_to_db(node_id),))

        if not await self._call(delete):
            raise NodeNotFoundError(node_id)

    async def acknowledge_ping(self, node_id: int, ping_interval: float) -> bool:
        """Keep a node online for ``2 * ping_interval`` more seconds; False if it is unknown."""
        online_until = self._clock() + rules.PING_PATIENCE * ping_interval
        changed = await self._call(
            lambda db: db.change(
                "UPDATE node SET online_until = ?, ping_interval = ? WHERE node_id = ?",
                (online_until, ping_interval, _to_db(node_id)),
            )
        )
        return changed > 0

    async def get_online_nodes(self) -> list[int]:
        """Ids of the nodes whose liveness has not lapsed, in ascending (unsigned) order."""
        now = self._clock()
        rows = await self._call(
            lambda db: db.rows("SELECT node_id FROM node WHERE online_until > ?", (now,))
        )
        return sorted(_from_db(row["node_id"]) for row in rows)

    async def node_exists(self, node_id: int) -> bool:
        """Whether the node id is registered (online or not)."""
        return await self._call(lambda db: db.node_exists(node_id))

    # --- Node authentication --------------------------------------------------------------
    async def create_keyed_node(
        self, ping_interval: float, public_key: bytes
    ) -> tuple[int, int | None]:
        """Register a node bound to ``public_key`` in one transaction; an offline holder goes."""
        now = self._clock()

        def create(db: _Session) -> tuple[int, int | None]:
            self._node_ids.clear()
            owner = db.row(
                "SELECT node_id, online_until FROM node WHERE public_key = ?", (public_key,)
            )
            holder = None
            if owner is not None:
                if owner["online_until"] > now:
                    raise PublicKeyInUseError
                holder = _from_db(owner["node_id"])
                db.change("DELETE FROM node WHERE node_id = ?", (owner["node_id"],))
            return db.insert_node(now + ping_interval, ping_interval, public_key), holder

        return await self._transaction(create)

    async def get_node_id(self, public_key: bytes) -> int | None:
        """The node a key is bound to, if any."""
        if (cached := self._node_ids.get(public_key)) is not None:
            return cached

        def read(db: _Session) -> int | None:
            row = db.row("SELECT node_id FROM node WHERE public_key = ?", (public_key,))
            if row is None:
                return None
            node_id = self._node_ids[public_key] = _from_db(row["node_id"])
            return node_id

        return await self._call(read)

    async def replace_known_public_keys(self, public_keys: Sequence[bytes]) -> None:
        """Make ``public_keys`` the complete list of keys allowed to authenticate."""

        def replace(db: _Session) -> None:
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
    async def create_run(
        self,
        fab_id: str,
        fab_version: str,
        fab_hash: str,
        override_config: UserConfig,
        federation_options: ConfigRecord,
    ) -> int:
        """Store a pending run and its initial ``Context(run_id, node_id=0)`` in one step."""
        columns = (
            fab_id,
            fab_version,
            fab_hash,
            _encode_user_config(override_config),
            federation_options.SerializeToString(),
            rules.iso_timestamp(self._clock()),
            PENDING,
        )

        def create(db: _Session) -> int:
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
                (_to_db(run_id), Context(run_id=run_id, node_id=0).SerializeToString()),
            )
            return run_id

        return await self._transaction(create)

    async def get_run(self, run_id: int) -> RunRecord | None:
        """One run, or None."""
        row = self._run_rows.get(run_id)
        if row is None:

            def read(db: _Session) -> sqlite3.Row | None:
                found = db.row(f"SELECT {_RUN_FIELDS} FROM run WHERE run_id = ?", (_to_db(run_id),))
                if found is not None:
                    if len(self._run_rows) >= _RUN_ROWS_KEPT:
                        self._run_rows.clear()
                    self._run_rows[run_id] = found
                return found

            row = await self._call(read)
        return None if row is None else _run_from_row(row)

    async def get_runs(self) -> list[RunRecord]:
        """Every run, oldest first (by ``pending_at``, then creation order)."""
        rows = await self._call(
            lambda db: db.rows(f"SELECT {_RUN_FIELDS} FROM run ORDER BY pending_at, seq")
        )
        return [_run_from_row(row) for row in rows]

    async def get_run_statuses(self, run_ids: Sequence[int]) -> dict[int, RunStatus]:
        """Statuses of the known runs among ``run_ids``; unknown ids are left out."""
        ids_json = _json_ids(_to_db(run_id) for run_id in run_ids)
        rows = await self._call(
            lambda db: db.rows(
                "SELECT run_id, status, sub_status, details FROM run "
                "WHERE run_id IN (SELECT value FROM json_each(?))",
                (ids_json,),
            )
        )
        return {
            _from_db(row["run_id"]): RunStatus(row["status"], row["sub_status"], row["details"])
            for row in rows
        }

    async def update_run_status(self, run_id: int, new_status: RunStatus) -> bool:
        """Apply a valid transition (``rules``) and stamp its time. ``RunNotFoundError``."""
        stamp = rules.iso_timestamp(self._clock())

        def update(db: _Session) -> str | None:
            row = db.row(
                "SELECT status, sub_status, details FROM run WHERE run_id = ?", (_to_db(run_id),)
            )
            if row is None:
                raise RunNotFoundError(run_id)
            current = RunStatus(row["status"], row["sub_status"], row["details"])
            if (error := rules.transition_error(current, new_status)) is not None:
                return error
            # The column name comes from a fixed mapping, never from the caller.
            stamp_column = rules.timestamp_field_for(new_status.status)
            self._run_rows.pop(run_id, None)
            db.change(
                f"UPDATE run SET status = ?, sub_status = ?, details = ?, {stamp_column} = ? "
                "WHERE run_id = ?",
                (
                    new_status.status,
                    new_status.sub_status,
                    new_status.details,
                    stamp,
                    _to_db(run_id),
                ),
            )
            return None

        if (error := await self._transaction(update)) is not None:
            logger.error("%s", error)
            return False
        return True

    async def get_pending_run_id(self) -> int | None:
        """The oldest pending run, if any."""
        row = await self._call(
            lambda db: db.row(
                "SELECT run_id FROM run WHERE status = ? ORDER BY pending_at, seq LIMIT 1",
                (PENDING,),
            )
        )
        return None if row is None else _from_db(row["run_id"])

    async def claim_pending_run(self) -> RunRecord | None:
        """Move the oldest pending run to ``starting`` and return it as it is now.

        One statement picks and updates the run, so two claims can never get the same run.
        """
        stamp = rules.iso_timestamp(self._clock())

        def claim(db: _Session) -> sqlite3.Row | None:
            self._run_rows.clear()
            return db.row(
                "UPDATE run SET status = ?, starting_at = ? WHERE seq = "
                "(SELECT seq FROM run WHERE status = ? ORDER BY pending_at, seq LIMIT 1) "
                f"RETURNING {_RUN_FIELDS}",
                (STARTING, stamp, PENDING),
            )

        row = await self._call(claim)
        return None if row is None else _run_from_row(row)

    async def fail_interrupted_runs(self, details: str) -> list[int]:
        """Finish every ``starting``/``running`` run as ``failed`` with ``details``.

        Returned oldest first.
        """
        stamp = rules.iso_timestamp(self._clock())

        def fail(db: _Session) -> list[sqlite3.Row]:
            self._run_rows.clear()
            return db.rows(
                "UPDATE run SET status = ?, sub_status = ?, details = ?, finished_at = ? "
                "WHERE status IN (?, ?) RETURNING run_id, pending_at, seq",
                (FINISHED, FAILED, details, stamp, STARTING, RUNNING),
            )

        rows = await self._call(fail)
        rows.sort(key=lambda row: (row["pending_at"], row["seq"]))
        return [_from_db(row["run_id"]) for row in rows]

    async def get_federation_options(self, run_id: int) -> ConfigRecord | None:
        """The run's federation options, or None for an unknown run."""
        row = await self._call(
            lambda db: db.row(
                "SELECT federation_options FROM run WHERE run_id = ?", (_to_db(run_id),)
            )
        )
        return None if row is None else ConfigRecord.FromString(row["federation_options"])

    # --- ServerApp context and logs -------------------------------------------------------
    async def set_serverapp_context(self, run_id: int, context: Context) -> None:
        """Replace the run's ServerApp context. ``RunNotFoundError``."""
        serialized = context.SerializeToString()

        def store(db: _Session) -> None:
            db.require_run(run_id)
            db.change(
                "INSERT INTO context (run_id, context) VALUES (?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET context = excluded.context",
                (_to_db(run_id), serialized),
            )

        await self._transaction(store)

    async def get_serverapp_context(self, run_id: int) -> Context | None:
        """The run's ServerApp context, or None."""
        row = await self._call(
            lambda db: db.row("SELECT context FROM context WHERE run_id = ?", (_to_db(run_id),))
        )
        return None if row is None else Context.FromString(row["context"])

    async def add_serverapp_log(self, run_id: int, log_output: str) -> None:
        """Append a chunk of ServerApp output, stamped with the clock. ``RunNotFoundError``."""
        now = self._clock()

        def append(db: _Session) -> None:
            db.require_run(run_id)
            db.change(
                "INSERT INTO log (run_id, timestamp, text) VALUES (?, ?, ?)",
                (_to_db(run_id), now, log_output),
            )

        await self._transaction(append)

    async def get_serverapp_log(self, run_id: int, after_timestamp: float) -> tuple[str, float]:
        """Chunks stamped after ``after_timestamp``, joined, and the latest stamp (0.0 if none).

        ``RunNotFoundError``.
        """

        def read(db: _Session) -> list[sqlite3.Row]:
            db.require_run(run_id)
            return db.rows(
                "SELECT text, timestamp FROM log WHERE run_id = ? AND timestamp > ? "
                "ORDER BY timestamp, id",
                (_to_db(run_id), after_timestamp),
            )

        rows = await self._call(read)
        latest = float(rows[-1]["timestamp"]) if rows else 0.0
        return "".join(row["text"] for row in rows), latest

    # --- Messages -------------------------------------------------------------------------
    async def store_message_ins(self, message: Message) -> str:
        """Store an instruction (already validated); assign and return its id.

        ``MessageRejectedError`` if its run or destination node is unknown.
        """
        (result,) = await self.store_messages_ins([message])
        if isinstance(result, MessageRejectedError):
            raise result
        return result

    async def store_messages_ins(
        self, messages: Sequence[Message]
    ) -> list[str | MessageRejectedError]:
        """``store_message_ins`` for each, in one transaction: each id, or why it was refused."""
        rows = [_message_params(message, rules.new_message_id()) for message in messages]

        def store(db: _Session) -> list[str | MessageRejectedError]:
            results: list[str | MessageRejectedError] = []
            for message, params in zip(messages, rows, strict=True):
                meta = message.metadata
                if not db.run_exists(meta.run_id):
                    results.append(
                        MessageRejectedError(f"Invalid run ID for Message: {meta.run_id}")
                    )
                elif not db.node_exists(meta.dst_node_id):
                    results.append(
                        MessageRejectedError(
                            f"Invalid destination node ID for Message: {meta.dst_node_id}"
                        )
                    )
                else:
                    metadata, payload = params[:-2], params[-2:]
                    db.change(
                        f"INSERT INTO message_ins ({_METADATA_FIELDS}) "
                        f"VALUES ({_METADATA_PLACEHOLDERS})",
                        metadata,
                    )
                    db.change(
                        "INSERT INTO message_ins_payload (seq, content, error) "
                        "VALUES (last_insert_rowid(), ?, ?)",
                        payload,
                    )
                    self._waiting.add(meta.dst_node_id)  # before a rollback: harmless
                    results.append(params[0])
            return results

        return await self._transaction(store)

    async def store_message_res(self, message: Message) -> str:
        """Store a node's reply (already validated); assign and return its id.

        ``MessageRejectedError`` if the instruction is unknown or expired, was sent to another
        node or run, already has a reply, or the reply's TTL outlives the instruction's.
        """
        meta = message.metadata
        ins_id = meta.reply_to_message_id
        message_id = rules.new_message_id()
        params = _message_params(message, message_id)
        now = self._clock()

        def store(db: _Session) -> None:
            row = db.row(
                f"SELECT {_MESSAGE_METADATA_FIELDS}, EXISTS (SELECT 1 FROM message_res "
                "WHERE reply_to_message_id = ins.message_id) AS answered "
                "FROM message_ins AS ins WHERE message_id = ?",
                (ins_id,),
            )
            if row is None:
                raise MessageRejectedError(f"Message with ID {ins_id} does not exist.")
            instruction = _message_from_row(row).metadata
            if rules.is_expired(instruction, now):
                raise MessageRejectedError(
                    "Failed to store Message: the message it is replying to "
                    f"(with ID {ins_id}) has expired"
                )
            if instruction.dst_node_id != meta.src_node_id:
                raise MessageRejectedError(
                    f"Message with ID {ins_id} was not sent to node {meta.src_node_id}"
                )
            if instruction.run_id != meta.run_id:
                raise MessageRejectedError("`metadata.run_id` is invalid")
            if row["answered"]:
                raise MessageRejectedError(f"Message with ID {ins_id} already has a reply")
            if (error := rules.reply_ttl_error(instruction, meta)) is not None:
                raise MessageRejectedError(error)
            db.change(
                f"INSERT INTO message_res ({_MESSAGE_FIELDS}) VALUES ({_MESSAGE_PLACEHOLDERS})",
                params,
            )

        await self._transaction(store)
        return message_id

    async def has_instructions_waiting(self, node_id: int) -> bool:
        """From the set of nodes with instructions waiting (kept on the database's thread)."""
        return node_id in self._waiting

    async def pull_message_ins(self, node_id: int, limit: int = 1) -> list[Message]:
        """Hand out up to ``limit`` undelivered, unexpired instructions for a node, oldest first.

        Choosing and marking happen in one statement, so no instruction is handed out twice.
        """
        if node_id not in self._waiting:
            return []
        now = self._clock()

        def pull(db: _Session) -> list[sqlite3.Row]:
            rows = db.rows(
                "UPDATE message_ins SET delivered_at = ? WHERE seq IN ("
                "SELECT seq FROM message_ins WHERE dst_node_id = ? AND delivered_at IS NULL "
                "AND created_at + ttl > ? ORDER BY seq LIMIT ?) "
                f"RETURNING seq, {_INSTRUCTION_FIELDS}",
                (now, _to_db(node_id), now, max(limit, 0)),  # SQLite reads LIMIT -1 as "all"
            )
            if len(rows) < limit:
                self._waiting.discard(node_id)
            return rows

        rows = await self._call(pull)
        rows.sort(key=lambda row: int(row["seq"]))
        return [_message_from_row(row) for row in rows]

    async def take_replies(self, run_id: int, message_ids: Sequence[str]) -> list[Message]:
        """Replies for the given instruction ids of ``run_id``, then forget those exchanges.

        Ids with no reply yet (and a live destination) are skipped. Missing or expired
        instructions, offline or deleted destinations and expired replies produce synthetic
        error replies (``rules``). Every instruction and reply returned is deleted. Raises
        ``RunMismatchError`` (and changes nothing) if an id belongs to another run.
        """
        wanted = list(dict.fromkeys(message_ids))
        ids_json = _json_ids(wanted)
        now = self._clock()

        def take(db: _Session) -> list[Message]:
            ins_rows = db.rows(
                f"SELECT {_MESSAGE_METADATA_FIELDS}, node.online_until FROM message_ins "
                "LEFT JOIN node ON node.node_id = message_ins.dst_node_id "
                "WHERE message_id IN (SELECT value FROM json_each(?))",
                (ids_json,),
            )
            for row in ins_rows:
                if _from_db(row["run_id"]) != run_id:
                    raise RunMismatchError(
                        f"Message {row['message_id']} does not belong to run {run_id}"
                    )
            res_rows = db.rows(
                f"SELECT {_MESSAGE_FIELDS} FROM message_res "
                "WHERE reply_to_message_id IN (SELECT value FROM json_each(?))",
                (ids_json,),
            )
            instructions = {row["message_id"]: row for row in ins_rows}
            replies = {row["reply_to_message_id"]: row for row in res_rows}
            results: list[Message] = []
            for ins_id in wanted:
                result = _reply_for(instructions.get(ins_id), replies.get(ins_id), ins_id, now)
                if result is not None:
                    results.append(result)
            db.change(
                "DELETE FROM message_ins WHERE message_id IN (SELECT value FROM json_each(?))",
                (_json_ids(reply.metadata.reply_to_message_id for reply in results),),
            )
            return results

        return await self._transaction(take)

    async def delete_run_messages(self, run_id: int) -> int:
        """Delete all instructions of a run and their replies; return how many instructions."""
        # The replies go with their instructions (ON DELETE CASCADE).
        return await self._call(
            lambda db: db.change("DELETE FROM message_ins WHERE run_id = ?", (_to_db(run_id),))
        )

    async def get_stats(self) -> StateStats:
        """Node and message counts, for metrics, read in one statement."""
        now = self._clock()
        row = await self._call(
            lambda db: db.row(
                "SELECT (SELECT count(*) FROM node),"
                " (SELECT count(*) FROM node WHERE online_until > ?),"
                " (SELECT count(*) FROM message_ins WHERE delivered_at IS NULL),"
                " (SELECT count(*) FROM message_ins WHERE delivered_at IS NOT NULL),"
                " (SELECT count(*) FROM message_res),"
                " (SELECT count(*) FROM message_ins WHERE created_at + ttl <= ?)",
                (now, now),
            )
        )
        assert row is not None
        return StateStats(*(int(value) for value in row))

    async def purge_expired_messages(self) -> int:
        """Delete instructions and replies whose TTL has lapsed; return how many rows went."""
        now = self._clock()

        def purge(db: _Session) -> int:
            # Replies are counted explicitly: rows removed by a cascade are not reported.
            replies = db.change(
                "DELETE FROM message_res WHERE created_at + ttl <= ? OR reply_to_message_id IN "
                "(SELECT message_id FROM message_ins WHERE created_at + ttl <= ?)",
                (now, now),
            )
            instructions = db.change("DELETE FROM message_ins WHERE created_at + ttl <= ?", (now,))
            return replies + instructions

        return await self._transaction(purge)


def _reply_for(
    ins_row: sqlite3.Row | None, res_row: sqlite3.Row | None, ins_id: str, now: float
) -> Message | None:
    """What ``take_replies`` hands out for one instruction id (``rules.result_for``)."""
    instruction = _message_from_row(ins_row) if ins_row is not None else None
    reply = _message_from_row(res_row) if res_row is not None else None
    online_until = ins_row["online_until"] if ins_row is not None else None
    online = online_until is not None and online_until >= now
    return rules.result_for(ins_id, instruction, reply, online, now)


def _check_path(database: str) -> None:
    """Refuse, with its cause, a path SQLite could not use (one stat each, once, at start-up).

    SQLite itself reports most of these as "unable to open database file".
    """
    directory = os.path.dirname(database) or "."
    if not os.path.isdir(directory):
        raise StateError(f"Cannot open database {database!r}: its directory does not exist")
    if os.path.isdir(database):
        raise StateError(f"Cannot open database {database!r}: it is a directory, not a file")
    if not os.access(directory, os.W_OK):
        # WAL needs <file>-wal and <file>-shm beside the file, even to read it.
        raise StateError(
            f"Cannot open database {database!r}: its directory {directory!r} is read-only"
        )
    if os.path.exists(database) and not os.access(database, os.W_OK):
        raise StateError(f"Cannot open database {database!r}: the file is read-only")


def _corrupt_message(database: str, finding: str) -> str:
    """One line: SQLite's findings span several."""
    finding = " ".join(finding.replace("*** in database main ***", "").split())
    return (
        f"Database {database!r} is corrupted ({finding}); refusing to serve from it. "
        'Restore it from a backup (docs/persistence.md, "Backups"), or move it aside to '
        "start with an empty database"
    )


async def _check_integrity(db: aiosqlite.Connection, database: str) -> None:
    """SQLite's ``quick_check`` over the whole file: every page read once (docs/persistence.md).

    A malformed page makes it report (or raise) "database disk image is malformed"; a
    server that served such a file would fail or answer wrongly later, far from the cause.
    """
    started = time.monotonic()
    findings = [str(row[0]) for row in await db.execute_fetchall("PRAGMA quick_check")]
    if findings != ["ok"]:
        raise DatabaseCorruptError(_corrupt_message(database, "; ".join(findings[:3])))
    logger.debug(
        "Database %r passed its integrity check in %.2f s", database, time.monotonic() - started
    )


async def _prepare_schema(db: aiosqlite.Connection, database: str) -> None:
    """Create the schema in a fresh database, or bring an older one of ours up to date.

    A file of a newer version, or one not created by us, is refused. Creating or migrating
    is one transaction: a failure leaves the file as it was.
    """
    # Takes effect only while the file is empty, and only outside a transaction.
    await db.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
    await db.execute("BEGIN IMMEDIATE")
    try:
        version = await _single_int(db, "PRAGMA user_version")
        objects = await _single_int(db, "SELECT count(*) FROM sqlite_master")
        if version == 0 and objects == 0:
            for statement in _SCHEMA:
                await db.execute(statement)
        elif version in _MIGRATIONS:
            logger.info("Migrating database %r from schema version %d", database, version)
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    await db.execute(statement)
        elif version != SCHEMA_VERSION:
            origin = " (not created by superlink-async)" if version == 0 else ""
            raise SchemaVersionError(
                f"Database {database!r} has schema version {version}{origin}, but this "
                f"superlink-async expects version {SCHEMA_VERSION}; refusing to open it"
            )
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await db.commit()
    except BaseException:
        await db.rollback()
        raise


async def _enable_wal(db: aiosqlite.Connection, database: str) -> None:
    """WAL lets readers of the file run beside the writer; NORMAL sync is safe under WAL.

    The WAL is checkpointed into the file every ``_WAL_CHECKPOINT_PAGES`` pages and cut
    back to ``WAL_SIZE_LIMIT`` bytes when it restarts (docs/persistence.md, "Disk
    space"). SQLite's default, 1,000 pages, let it grow to 16 MB with 16 KiB pages and
    never shrink: on a small volume that is the space a full disk needs back to recover.
    """
    mode = await _single_value(db, "PRAGMA journal_mode = WAL")
    if str(mode).lower() != "wal":
        logger.warning("Database %r could not switch to WAL (journal mode %s)", database, mode)
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute(f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}")
    await db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")


async def _single_value(db: aiosqlite.Connection, sql: str) -> Any:
    rows = list(await db.execute_fetchall(sql))
    return rows[0][0]


async def _single_int(db: aiosqlite.Connection, sql: str) -> int:
    return int(await _single_value(db, sql))
