"""The tables, their version, and how an older file of ours becomes the current version.

The file carries our schema version in ``PRAGMA user_version``; a file of another version is
refused with ``SchemaVersionError`` rather than guessed at. ``tests/state/schema_v3.sql``
holds the tables as files on disk have them: change them only together with a new version
and its migration (``schema_v2.sql``: files of the previous version, which must migrate).

A new file is created at version 2 and migrated like any file of that version, so that new
and migrated files are alike to the byte in ``sqlite_master``.
"""

from __future__ import annotations

from typing import Any

import aiosqlite

from superlink_async.logs import logger
from superlink_async.state.base import SchemaVersionError

#: The schema this module writes. Bump it (and add the step from the previous version to
#: ``_MIGRATIONS``) whenever a table changes shape.
SCHEMA_VERSION = 3

#: Page size of new files. A message's payload lives in a chain of overflow pages, read and
#: freed one page at a time; 16 KiB pages make a 100 KB payload 7 pages instead of 25.
PAGE_SIZE = 16384

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

_INSTRUCTION_PAYLOAD_TABLE = f"""
    CREATE TABLE message_ins_payload (
        seq                 INTEGER PRIMARY KEY REFERENCES message_ins (seq) ON DELETE CASCADE,
        {_PAYLOAD_COLUMNS}
    )
"""

_VERSION_2_TABLES = (
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


#: Version 3: a claimed run's owner and a pending run's reservation (replica ids, '' for
#: none), and the replicas' leases.
_TO_VERSION_3 = (
    "ALTER TABLE run ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE run ADD COLUMN reserved_by TEXT NOT NULL DEFAULT ''",
    """
    CREATE TABLE replica (
        replica_id          TEXT PRIMARY KEY,
        lease_until         REAL NOT NULL,
        started_at          REAL NOT NULL
    )
    """,
)

_SCHEMA = (*_VERSION_2_TABLES, *_TO_VERSION_3)

#: How each older schema version becomes the next one: statements run in one transaction.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        _INSTRUCTION_PAYLOAD_TABLE,
        "INSERT INTO message_ins_payload (seq, content, error) "
        "SELECT seq, content, error FROM message_ins",
        "ALTER TABLE message_ins DROP COLUMN content",
        "ALTER TABLE message_ins DROP COLUMN error",
    ),
    2: _TO_VERSION_3,
}


async def prepare_schema(db: aiosqlite.Connection, database: str) -> None:
    """Create the schema in a fresh database, or bring an older one of ours up to date.

    A file of a newer version, or one not created by us, is refused. Creating or migrating
    is one transaction: a failure leaves the file as it was.
    """
    # Takes effect only while the file is empty, and only outside a transaction.
    await db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    await db.execute("BEGIN IMMEDIATE")
    try:
        version = await single_int(db, "PRAGMA user_version")
        objects = await single_int(db, "SELECT count(*) FROM sqlite_master")
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


async def single_value(db: aiosqlite.Connection, sql: str) -> Any:
    """The first column of the first row ``sql`` returns."""
    rows = list(await db.execute_fetchall(sql))
    return rows[0][0]


async def single_int(db: aiosqlite.Connection, sql: str) -> int:
    """``single_value`` as an int."""
    return int(await single_value(db, sql))
