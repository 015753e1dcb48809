"""The tables, their version, and how an older schema of ours becomes the current version.

The database carries our schema version in the one-row table ``superlink_schema``. Creating
or migrating runs in one transaction that first takes a transaction-level advisory lock
(``pg_advisory_xact_lock``), so two processes starting at once on an empty database do not
both create the tables: the second waits, then finds the first's version. A database whose
version is newer than this code's is refused with ``SchemaVersionError``; one holding our
table names without a version is refused too, rather than guessed at.

Column types: uint64 ids are ``bigint`` holding the signed int64 with the same bits
(``state.columns``); times are ``double precision`` Unix seconds, the very floats the rules
compare; payloads and serialized protobufs are ``bytea`` stored out of line uncompressed
(``STORAGE EXTERNAL``): they are protobufs of mostly float arrays, which pglz would spend
CPU on for little, and an update of another column of the row does not copy them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from superlink_async.logs import logger
from superlink_async.state.base import SchemaVersionError, StateError
from superlink_async.state.postgres.notices import CHANNEL, INSTRUCTIONS, NODE

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    #: A connection, on its own or lent by a pool (generic only in asyncpg-stubs).
    Connection: TypeAlias = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

#: The schema this module writes. Bump it (and add the step from the previous version to
#: ``MIGRATIONS``) whenever a table changes shape.
SCHEMA_VERSION = 3

#: The key of the advisory lock that serialises schema changes (any fixed bigint; this one
#: spells "superlnk" in ASCII), so other applications on the database are unlikely to share it.
SCHEMA_LOCK_KEY = 0x73757065726C6E6B

#: Our table names: a database holding one of them without ``superlink_schema`` is not ours.
TABLES = (
    "run",
    "context",
    "log",
    "node",
    "known_public_key",
    "message_ins",
    "message_res",
    "fab",
    "replica",
)

_METADATA_COLUMNS = """
    message_id          text NOT NULL,
    run_id              bigint NOT NULL,
    src_node_id         bigint NOT NULL,
    dst_node_id         bigint NOT NULL,
    reply_to_message_id text NOT NULL,
    group_id            text NOT NULL,
    message_type        text NOT NULL,
    created_at          double precision NOT NULL,
    ttl                 double precision NOT NULL
"""
_PAYLOAD_COLUMNS = """
    content             bytea,  -- serialized RecordDict, NULL if the message carries an error
    error               bytea   -- serialized Error, NULL if the message carries content
"""

#: The tables of version 1, the first: a new database is created at version 1 and migrated
#: like any database of that version, so that new and migrated databases are alike.
VERSION_1_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE superlink_schema (version integer NOT NULL)",
    """
    CREATE TABLE run (
        seq                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- FIFO tie-break
        run_id              bigint NOT NULL UNIQUE,
        fab_id              text NOT NULL,
        fab_version         text NOT NULL,
        fab_hash            text NOT NULL,
        override_config     bytea NOT NULL,  -- serialized Run holding only override_config
        federation_options  bytea NOT NULL,  -- serialized ConfigRecord
        pending_at          text NOT NULL,
        starting_at         text NOT NULL,
        running_at          text NOT NULL,
        finished_at         text NOT NULL,
        status              text NOT NULL,
        sub_status          text NOT NULL,
        details             text NOT NULL
    )
    """,
    "CREATE INDEX run_by_status ON run (status, pending_at, seq)",
    """
    CREATE TABLE context (
        run_id              bigint PRIMARY KEY REFERENCES run (run_id),
        context             bytea NOT NULL  -- serialized Context
    )
    """,
    """
    CREATE TABLE log (
        id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id              bigint NOT NULL REFERENCES run (run_id),
        timestamp           double precision NOT NULL,
        text                text NOT NULL
    )
    """,
    "CREATE INDEX log_by_run ON log (run_id, timestamp)",
    """
    CREATE TABLE node (
        node_id             bigint PRIMARY KEY,
        online_until        double precision NOT NULL,
        ping_interval       double precision NOT NULL,
        public_key          bytea UNIQUE  -- NULL while no key is bound
    )
    """,
    "CREATE TABLE known_public_key (public_key bytea PRIMARY KEY)",
    f"""
    CREATE TABLE message_ins (
        seq                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- oldest first
        {_METADATA_COLUMNS},
        delivered_at        double precision,  -- NULL until a node pulled it
        {_PAYLOAD_COLUMNS},
        UNIQUE (message_id),
        FOREIGN KEY (run_id) REFERENCES run (run_id)
    )
    """,
    "CREATE INDEX message_ins_by_dst ON message_ins (dst_node_id, seq) WHERE delivered_at IS NULL",
    "CREATE INDEX message_ins_by_run ON message_ins (run_id)",
    f"""
    CREATE TABLE message_res (
        {_METADATA_COLUMNS},
        {_PAYLOAD_COLUMNS},
        PRIMARY KEY (message_id),
        UNIQUE (reply_to_message_id),  -- one reply per instruction
        FOREIGN KEY (reply_to_message_id) REFERENCES message_ins (message_id) ON DELETE CASCADE
    )
    """,
    *(
        f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL"
        for table in ("message_ins", "message_res")
        for column in ("content", "error")
    ),
    "ALTER TABLE context ALTER COLUMN context SET STORAGE EXTERNAL",
    # FABs (``postgres.fab_store``), content-addressed: several SuperLinks share them.
    """
    CREATE TABLE fab (
        hash                text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),  -- SHA-256
        content             bytea NOT NULL
    )
    """,
    "ALTER TABLE fab ALTER COLUMN content SET STORAGE EXTERNAL",
)

#: Version 2: several replicas on one database. A claimed run's owner and a pending run's
#: reservation (replica ids, '' for none), and each replica's lease, in the clock's Unix
#: seconds as node liveness.
_TO_VERSION_2 = (
    "ALTER TABLE run ADD COLUMN owner text NOT NULL DEFAULT ''",
    "ALTER TABLE run ADD COLUMN reserved_by text NOT NULL DEFAULT ''",
    """
    CREATE TABLE replica (
        replica_id          text PRIMARY KEY,
        lease_until         double precision NOT NULL,
        started_at          double precision NOT NULL
    )
    """,
)

#: Version 3: the database itself announces, however it happened, every change that may
#: end a fact a process keeps (``kept``): key bindings ended (a node deleted, a key
#: rewritten, the table truncated: a ``node`` notice) and instructions stored (``ins``).
_TO_VERSION_3 = (
    f"""
    CREATE FUNCTION superlink_async_notify_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{CHANNEL}', TG_ARGV[0]);
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE TRIGGER bindings_changed AFTER DELETE OR UPDATE OF public_key OR TRUNCATE ON node
    FOR EACH STATEMENT EXECUTE FUNCTION superlink_async_notify_change('{NODE}')
    """,
    f"""
    CREATE TRIGGER instructions_stored AFTER INSERT ON message_ins
    FOR EACH STATEMENT EXECUTE FUNCTION superlink_async_notify_change('{INSTRUCTIONS}')
    """,
)

#: How each older schema version becomes the next one: statements run in the one transaction.
MIGRATIONS: dict[int, tuple[str, ...]] = {1: _TO_VERSION_2, 2: _TO_VERSION_3}

#: A new database: version 1, then every migration in turn.
SCHEMA: tuple[str, ...] = (
    *VERSION_1_SCHEMA,
    *(statement for step in sorted(MIGRATIONS) for statement in MIGRATIONS[step]),
)


async def prepare_schema(
    connection: Connection,
    where: str,
    *,
    version: int = SCHEMA_VERSION,
    migrations: Mapping[int, Sequence[str]] = MIGRATIONS,
) -> None:
    """Create the schema in an empty database, or bring an older one of ours up to ``version``.

    One transaction under the schema's advisory lock: a failure leaves the database as it
    was, and concurrent callers take turns. ``where`` names the database in errors (never
    with a password). ``version`` and ``migrations`` are this module's own except in tests of
    the migration path.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        found = await _stored_version(connection, where)
        if found is None:
            for statement in SCHEMA:
                await connection.execute(statement)
            await connection.execute("INSERT INTO superlink_schema (version) VALUES ($1)", version)
            return
        if found > version:
            raise SchemaVersionError(
                f"The {where} has schema version {found}, written by a newer superlink-async; "
                f"this one knows versions up to {version}: upgrade superlink-async"
            )
        if found < version:
            logger.info("Migrating the %s from schema version %d to %d", where, found, version)
            for step in range(found, version):
                for statement in migrations[step]:
                    await connection.execute(statement)
            await connection.execute("UPDATE superlink_schema SET version = $1", version)


async def _stored_version(connection: Connection, where: str) -> int | None:
    """Our schema version in the database, None if it holds none of our tables."""
    if await connection.fetchval("SELECT to_regclass('superlink_schema')") is None:
        present = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename = ANY($1::text[])",
            list(TABLES),
        )
        if present:
            names = ", ".join(sorted(row["tablename"] for row in present))
            raise StateError(
                f"The {where} has tables named like ours ({names}) but no superlink-async "
                "schema version: it was not created by superlink-async; refusing to use it"
            )
        return None
    versions = await connection.fetch("SELECT version FROM superlink_schema")
    if len(versions) != 1:
        raise StateError(
            f"The {where} has {len(versions)} rows in superlink_schema (one expected); "
            "refusing to use it"
        )
    return int(versions[0]["version"])
