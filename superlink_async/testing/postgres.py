"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temp dir, loopback only.

The server binaries come from PATH, ``pg_config --bindir`` or ``/usr/lib/postgresql/*/bin``
(newest first). PostgreSQL refuses to run as root, so when we are root the data directory
belongs to, and the server runs as, the ``postgres`` system user (Debian's package creates it);
without one, or without a server at all, :class:`PostgresUnavailableError` says in one line
what to install or create. For tests durability is traded for speed (``fsync=off``): the data
lives as long as the test session; a benchmark asks for a ``durable`` server, one with
PostgreSQL's own defaults, so that its commits cost what they cost in production.

pytest-postgresql was considered: it starts ``pg_ctl`` as the current user, which root cannot
do, and brings psycopg along; this module is small and needs neither.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import IO
from urllib.parse import quote

from superlink_async.testing.processes import LOOPBACK, free_port

INSTALL_HINT = "install a PostgreSQL server, e.g. `apt-get install postgresql`"
SUPERUSER = "superlink"
PASSWORD = "test-password"  # a throwaway server on 127.0.0.1 only
_SERVER_BINARIES = ("initdb", "postgres", "psql")
_START_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1  # prctl(2)
#: Where Debian and Ubuntu install each PostgreSQL major version's server.
DEBIAN_SERVERS = Path("/usr/lib/postgresql")


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server can be started here; the message says why, in one line."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``psql``."""
    candidates: list[Path] = []
    on_path = shutil.which("postgres") or shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(bindir))
    debian = sorted(
        DEBIAN_SERVERS.glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    for candidate in candidates:
        if all((candidate / name).is_file() for name in _SERVER_BINARIES):
            return candidate
    raise PostgresUnavailableError(
        "no PostgreSQL server (initdb, postgres, psql) on PATH, in `pg_config --bindir` or "
        f"in /usr/lib/postgresql/*/bin: {INSTALL_HINT}"
    )


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailableError(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it as: "
            f"{INSTALL_HINT} (it creates the user) or run the tests as a non-root user"
        ) from None


def _terminate_with_parent() -> None:
    """In the child, after it took the server user's ids: SIGTERM it when its parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class PostgresServer:
    """One server process over one data directory; stop and start it again at will."""

    bindir: Path
    root: Path
    #: PostgreSQL's defaults (fsync on) instead of the tests' fast, crash-unsafe settings.
    durable: bool = False
    port: int = 0
    _user: pwd.struct_passwd | None = None
    _process: Popen[bytes] | None = None
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def create(cls, *, durable: bool = False) -> PostgresServer:
        """Initdb into a fresh temp dir (owned by the server's user); not started yet."""
        bindir = find_bindir()
        user = _server_user()
        # Under /tmp, not pytest's tmp_path: the server's user must be able to reach it.
        root = Path(tempfile.mkdtemp(prefix="superlink-pg-"))
        server = cls(bindir=bindir, root=root, durable=durable, _user=user)
        (root / "data").mkdir()
        (root / "password").write_text(PASSWORD + "\n")
        if user is not None:
            for path in (root, root / "data", root / "password"):
                os.chown(path, user.pw_uid, user.pw_gid)
        server._run_as_server_user(
            [
                str(bindir / "initdb"),
                "--pgdata",
                str(root / "data"),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(root / "password"),
                "--auth-host",
                "scram-sha-256",
                "--auth-local",
                "trust",
                "--encoding",
                "UTF8",
                "--no-sync",
            ]
        )
        return server

    @property
    def data_directory(self) -> Path:
        """The cluster's files (``PGDATA``), owned by the server's user."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server's combined stdout and stderr, kept for failures that need reading."""
        return self.root / "server.log"

    def url(self, database: str = "postgres", *, password: str | None = PASSWORD) -> str:
        """A ``postgresql://`` URL for ``database`` as the test superuser."""
        secret = "" if password is None else ":" + quote(password, safe="")
        return f"postgresql://{SUPERUSER}{secret}@{LOOPBACK}:{self.port}/{database}"

    @property
    def pid(self) -> int:
        """The postmaster's process id (its children are the connections' backends)."""
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def version(self) -> str:
        """The server's version, e.g. ``15.14``."""
        return self.psql("SHOW server_version").strip().split()[0]

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (on a fresh port the first time, the same one after) and wait."""
        if self.running:
            return
        if not self.port:
            self.port = free_port()
        log = self.log_file.open("ab")
        if self._user is not None:
            os.chown(self.log_file, self._user.pw_uid, self._user.pw_gid)
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.data_directory),
            "max_connections": "200",
        }
        if not self.durable:
            settings.update(fsync="off", full_page_writes="off", shared_buffers="16MB")
        command = [str(self.bindir / "postgres"), "-D", str(self.data_directory)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        self._process = self._spawn(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_until_ready()

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, disconnect, checkpoint)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=_START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` through psql as the superuser; its output, or an error naming the SQL."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set",
                "ON_ERROR_STOP=1",
                "--command",
                sql,
                self.url(database),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever is still connected to it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with {self._process.returncode} at start-up: "
                    f"{self.log_file.read_text(errors='replace').strip()[-2000:]}"
                )
            with contextlib.suppress(RuntimeError):
                self.psql("SELECT 1")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL not ready after {_START_TIMEOUT}s: see {self.log_file}"
                )
            time.sleep(0.05)

    def _spawn(self, command: list[str], stdout: IO[bytes] | int, stderr: int) -> Popen[bytes]:
        """Start ``command`` as the server's user (ourselves when we are not root).

        On Linux it gets SIGTERM when we die, so a killed test run leaves no server behind.
        """
        user = self._user
        return Popen(
            command,
            stdout=stdout,
            stderr=stderr,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
            env=None if user is None else {**os.environ, "HOME": user.pw_dir, "USER": user.pw_name},
            cwd=self.root,
            preexec_fn=_terminate_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )

    def _run_as_server_user(self, command: list[str]) -> None:
        process = self._spawn(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {output.decode(errors='replace').strip()}")


@contextlib.contextmanager
def running_postgres_server(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A fresh, started server (its own data directory and port), destroyed afterwards."""
    server = PostgresServer.create(durable=durable)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
