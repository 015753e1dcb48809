"""An unusable or corrupted ``--database``: one ERROR line naming the file and why, status 1.

For PostgreSQL: a port nobody listens on, a refused password, a missing database and a
schema of a newer superlink-async, each one ERROR line naming host, port and database
(never the password), before any port is bound.

Each case starts the real command (``python -m superlink_async``) and reads its whole
stderr: after the usual start-up lines (the warning, the descriptor limit) comes exactly
one ERROR line and nothing else (no traceback, none from aiosqlite's thread), and the file
is left byte for byte as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from superlink_async.state.factory import open_state
from superlink_async.state.postgres import SCHEMA_VERSION
from superlink_async.state.sqlite import SqliteLinkState
from superlink_async.testing.postgres import PASSWORD, PostgresServer
from tests.ports import free_port, loopback
from tests.state.conftest import corrupt_a_page

ANSI = re.compile(r"\x1b\[[0-9;]*m")
START_UP = [
    "INFO :      Starting Flower SuperLink",
    "WARNING :   Option `--insecure` was set. Starting insecure HTTP server with unencrypted "
    "communication (TLS disabled). Proceed only if you understand the risks.",
]


def start(
    database: Path | str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "superlink_async", "--insecure", "--database", str(database)]
    for flag in ("--fleet-api-address", "--exec-api-address", "--serverappio-api-address"):
        command += [flag, loopback()]
    return subprocess.run(
        [*command, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Status 1, the usual start-up lines (no listener started), then one ERROR line: its text."""
    lines = ANSI.sub("", result.stderr).splitlines()
    assert result.returncode == 1, result.stderr
    assert lines[:2] == START_UP, result.stderr
    assert re.fullmatch(r"INFO :      File descriptors: at most \d+.*", lines[2]), result.stderr
    assert len(lines) == 4, result.stderr
    assert lines[-1].startswith("ERROR :     "), result.stderr
    assert result.stdout == ""
    return lines[-1].removeprefix("ERROR :     ")


def fingerprint(path: Path) -> tuple[str, list[str]]:
    """The file's bytes (hashed) and what its directory holds."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return digest, sorted(os.listdir(path.parent))


def refusal(database: Path) -> str:
    """Start on ``database``; assert status 1, one ERROR line and the file untouched."""
    before = fingerprint(database)
    line = the_error_line(start(database))
    assert fingerprint(database) == before
    return line


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "notes.txt"
    database.write_text("not a database, just notes\n" * 100)
    assert refusal(database) == (
        f"Cannot use {str(database)!r} as a SQLite database: file is not a database"
    )


def test_a_directory_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    database.mkdir()
    assert refusal(database) == (
        f"Cannot open database {str(database)!r}: it is a directory, not a file"
    )


def make_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
        connection.execute("PRAGMA user_version = 7")
    connection.close()


def test_a_database_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "other.db"
    make_database(database)
    assert refusal(database) == (
        f"Database {str(database)!r} has schema version 7, but this superlink-async "
        "expects version 3; refusing to open it"
    )


@pytest.fixture
def read_only_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory holding a SQLite file that this process cannot write to.

    Root writes through any mode bits, so as root it is a tmpfs mounted read-only (a real
    read-only mount); otherwise a directory with mode 0555.
    """
    directory = tmp_path / "read-only"
    directory.mkdir()
    if os.geteuid() != 0:
        make_database(directory / "state.db")
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", directory], check=True)
    try:
        make_database(directory / "state.db")
        subprocess.run(["mount", "-o", "remount,ro", directory], check=True)
        yield directory
    finally:
        subprocess.run(["umount", directory], check=True)


def test_a_read_only_directory_is_refused(read_only_directory: Path) -> None:
    database = read_only_directory / "state.db"
    assert refusal(database) == (
        f"Cannot open database {str(database)!r}: its directory "
        f"{str(read_only_directory)!r} is read-only"
    )


async def fill(database: Path) -> None:
    """A state file of ours holding 2,000 nodes (about 20 pages)."""
    state = await SqliteLinkState.open(str(database))
    try:
        for _ in range(2000):
            await state.create_node(30.0)
    finally:
        await state.aclose()


@pytest.fixture
def corrupted(tmp_path: Path) -> Path:
    database = tmp_path / "state.db"
    asyncio.run(fill(database))
    corrupt_a_page(database)
    return database


def test_a_corrupted_database_is_refused_with_the_way_to_recover(corrupted: Path) -> None:
    message = refusal(corrupted)
    assert message.startswith(f"Database {str(corrupted)!r} is corrupted (")
    assert 'Restore it from a backup (docs/persistence.md, "Backups")' in message


# --- PostgreSQL: the real server of superlink_async/testing/postgres.py ---------------------


def postgres_refusal(url: str, **environ: str) -> str:
    """Start on ``url``: the one ERROR line, which (like all output) holds no password."""
    result = start(url, env=environ)
    assert PASSWORD not in result.stderr
    return the_error_line(result)


def test_postgresql_nobody_listens_on_the_port(postgres_server: PostgresServer) -> None:
    port = free_port()
    url = f"postgresql://superlink:{PASSWORD}@127.0.0.1:{port}/flwr"
    assert postgres_refusal(url) == (
        f"Cannot connect to PostgreSQL database 'flwr' on 127.0.0.1:{port}: connection refused "
        "(is PostgreSQL running and listening there?)"
    )


def test_postgresql_refuses_the_password(postgres_server: PostgresServer) -> None:
    """The password from PGPASSWORD (libpq's variable) is the wrong one."""
    url = postgres_server.url(password=None)
    assert postgres_refusal(url, PGPASSWORD="wrong-" + PASSWORD) == (
        f"Cannot connect to PostgreSQL database 'postgres' on 127.0.0.1:{postgres_server.port}: "
        "authentication refused for user 'superlink': password authentication failed for "
        'user "superlink"'
    )


def test_postgresql_database_is_missing(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("no_such_database")
    assert postgres_refusal(url) == (
        "Cannot connect to PostgreSQL database 'no_such_database' on "
        f"127.0.0.1:{postgres_server.port}: the database 'no_such_database' does not exist "
        "(create it, or fix the URL)"
    )


def test_postgresql_schema_of_a_newer_superlink_is_refused_and_kept(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    async def create_schema() -> None:
        async with open_state(postgres_url):
            pass

    asyncio.run(create_schema())
    database = postgres_url.rpartition("/")[2]
    postgres_server.psql(f"UPDATE superlink_schema SET version = {SCHEMA_VERSION + 1}", database)
    line = postgres_refusal(postgres_url)
    assert f"database {database!r} on 127.0.0.1:{postgres_server.port}" in line, line
    assert str(SCHEMA_VERSION + 1) in line, line
    stored = postgres_server.psql("SELECT version FROM superlink_schema", database)
    assert stored.strip() == str(SCHEMA_VERSION + 1)
