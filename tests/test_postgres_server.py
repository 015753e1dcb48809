"""The tests' throwaway PostgreSQL server: loopback only, password auth, restartable."""

from __future__ import annotations

import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from superlink_async.testing import postgres
from superlink_async.testing.postgres import PostgresServer, PostgresUnavailableError, find_bindir

pytestmark = pytest.mark.anyio


async def test_each_test_gets_its_own_empty_database(postgres_url: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
        assert await connection.fetchval("SELECT current_database()") in postgres_url
    finally:
        await connection.close()


async def test_a_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres_server.url(password="wrong"))


def test_it_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    listening = postgres_server.psql("SHOW listen_addresses").strip()
    assert listening == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", postgres_server.port), timeout=5):
        pass


def test_a_stopped_server_starts_again_on_its_port_with_its_data() -> None:
    server = PostgresServer.create()
    try:
        server.start()
        port = server.port
        server.psql("CREATE TABLE kept (value int); INSERT INTO kept VALUES (7)")
        server.stop()
        assert not server.running
        server.start()
        assert server.port == port
        assert server.psql("SELECT value FROM kept").strip() == "7"
    finally:
        server.destroy()
    assert not server.root.exists()


def test_no_server_binaries_is_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(postgres, "DEBIAN_SERVERS", tmp_path)
    with pytest.raises(PostgresUnavailableError) as missing:
        find_bindir()
    message = str(missing.value)
    assert "\n" not in message
    assert "apt-get install postgresql" in message


def test_the_newest_debian_server_is_found_when_nothing_is_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for version in ("9", "15", "16"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        for name in ("initdb", "postgres", "psql"):
            (bindir / name).touch()
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(postgres, "DEBIAN_SERVERS", tmp_path)
    assert find_bindir() == tmp_path / "16" / "bin"


def test_root_without_a_postgres_user_is_one_line_and_creates_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_such_user(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("pwd.getpwnam", no_such_user)
    made: list[str] = []
    monkeypatch.setattr("tempfile.mkdtemp", lambda **_: made.append("dir"))
    with pytest.raises(PostgresUnavailableError, match="no `postgres` user") as refused:
        PostgresServer.create()
    assert "\n" not in str(refused.value)
    assert made == []


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_killed_test_run_leaves_no_server_running(tmp_path: Path) -> None:
    script = (
        "import time\n"
        "from superlink_async.testing.postgres import PostgresServer\n"
        "server = PostgresServer.create()\n"
        "server.start()\n"
        "assert server._process is not None\n"
        "print(server._process.pid, server.root, flush=True)\n"
        "time.sleep(120)\n"
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert runner.stdout is not None
    pid_text, root = runner.stdout.readline().split()
    try:
        runner.kill()
        runner.wait()
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid_text}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid_text}").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
