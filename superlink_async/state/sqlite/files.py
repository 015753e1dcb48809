"""The database file: whether a path can hold it, whether it is intact, how it is journaled.

Durability: files use ``journal_mode=WAL`` with ``synchronous=NORMAL``. A committed change
survives a crash of this process; after a power loss or OS crash the last few commits may be
lost, but the database stays consistent. That trade is acceptable here: every client of the
SuperLink retries or re-registers, and a run's outcome is reported again by its ServerApp.
"""

from __future__ import annotations

import os
import time

import aiosqlite

from superlink_async.logs import logger
from superlink_async.state.base import DatabaseCorruptError, StateError
from superlink_async.state.sqlite.schema import PAGE_SIZE, single_value

#: The WAL is copied into the database file once it holds this many pages (4 MiB)...
_WAL_CHECKPOINT_PAGES = 256
#: ...and cut back to this size when it starts over, so it stays about this small.
WAL_SIZE_LIMIT = _WAL_CHECKPOINT_PAGES * PAGE_SIZE


def check_path(database: str) -> None:
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


def corrupt_message(database: str, finding: str) -> str:
    """One line: SQLite's findings span several."""
    finding = " ".join(finding.replace("*** in database main ***", "").split())
    return (
        f"Database {database!r} is corrupted ({finding}); refusing to serve from it. "
        'Restore it from a backup (docs/persistence.md, "Backups"), or move it aside to '
        "start with an empty database"
    )


async def verify_integrity(db: aiosqlite.Connection, database: str) -> None:
    """SQLite's ``quick_check`` over the whole file: every page read once (docs/persistence.md).

    A malformed page makes it report (or raise) "database disk image is malformed"; a
    server that served such a file would fail or answer wrongly later, far from the cause.
    """
    started = time.monotonic()
    findings = [str(row[0]) for row in await db.execute_fetchall("PRAGMA quick_check")]
    if findings != ["ok"]:
        raise DatabaseCorruptError(corrupt_message(database, "; ".join(findings[:3])))
    logger.debug(
        "Database %r passed its integrity check in %.2f s", database, time.monotonic() - started
    )


async def enable_wal(db: aiosqlite.Connection, database: str) -> None:
    """WAL lets readers of the file run beside the writer; NORMAL sync is safe under WAL.

    The WAL is checkpointed into the file every ``_WAL_CHECKPOINT_PAGES`` pages and cut
    back to ``WAL_SIZE_LIMIT`` bytes when it restarts (docs/persistence.md, "Disk
    space"). SQLite's default, 1,000 pages, let it grow to 16 MB with 16 KiB pages and
    never shrink: on a small volume that is the space a full disk needs back to recover.
    """
    mode = await single_value(db, "PRAGMA journal_mode = WAL")
    if str(mode).lower() != "wal":
        logger.warning("Database %r could not switch to WAL (journal mode %s)", database, mode)
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute(f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}")
    await db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
