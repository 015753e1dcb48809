"""Reaching PostgreSQL: where a URL points, the pool's defaults, what a failure is told as.

asyncpg reads the URL and libpq's environment variables itself (``PGHOST``, ``PGPORT``,
``PGUSER``, ``PGPASSWORD``, ``PGPASSFILE``, ``PGDATABASE``, ``PGSSLMODE``, ``PGSSLROOTCERT``,
``PGSSLCERT``, ``PGSSLKEY``, ``PGSERVICE``, ...). The one gap filled here is libpq's connect
timeout (``connect_timeout`` in the URL, ``PGCONNECT_TIMEOUT``): asyncpg would send the
parameter to the server as a setting, which refuses it.

Every failure to connect becomes one ``StateError`` line naming the host, port and database
(never the password); ``unavailable`` tells the failures that mean "the database cannot be
reached right now" from the others, so callers can be answered UNAVAILABLE and retry.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from superlink_async.state.base import StateError, StateUnavailableError

#: Seconds to establish one connection (libpq's ``connect_timeout`` overrides it).
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds one statement may take before the call fails (asyncpg's ``command_timeout``).
DEFAULT_COMMAND_TIMEOUT = 60.0
#: libpq's defaults for what the URL and the environment leave out.
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 5432


@dataclass(frozen=True)
class PostgresTarget:
    """The server and database a URL names, as libpq would pick them; no password."""

    host: str
    port: int
    database: str
    user: str

    @classmethod
    def parse(cls, url: str, environ: Mapping[str, str] = os.environ) -> PostgresTarget:
        """The URL's values, else ``PGHOST``/``PGPORT``/``PGUSER``/``PGDATABASE``, else libpq's.

        With several hosts (``h1,h2``) the first is named.
        """
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        auth, _, hosts = parts.netloc.rpartition("@")
        first = hosts.split(",")[0]
        url_host, port_text = _host_and_port(first)
        host = urllib.parse.unquote(url_host) or query.get("host") or environ.get("PGHOST")
        port_text = port_text or query.get("port") or environ.get("PGPORT", "")
        user = (
            urllib.parse.unquote(auth.partition(":")[0])
            or query.get("user")
            or environ.get("PGUSER")
            or _login_name()
        )
        database = (
            urllib.parse.unquote(parts.path.lstrip("/"))
            or query.get("dbname")
            or query.get("database")
            or environ.get("PGDATABASE")
            or user
        )
        port = int(port_text.split(",")[0]) if port_text.split(",")[0].isdigit() else DEFAULT_PORT
        return cls(host or DEFAULT_HOST, port, database, user)

    def describe(self) -> str:
        """``database 'flwr' on db.example:5432``: what every message about it names."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"database {self.database!r} on {host}:{self.port}"


def _host_and_port(spec: str) -> tuple[str, str]:
    """``host[:port]`` or ``[v6]:port`` split in two; either may be empty."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = spec.partition(":")
    return host, port


def _login_name() -> str:
    """The default user, as libpq's: the operating system's name for whoever runs us."""
    try:
        import getpass  # noqa: PLC0415 (only needed when nothing names a user)

        return getpass.getuser()
    except (OSError, KeyError):
        return "postgres"


def connect_timeout(url: str, environ: Mapping[str, str] = os.environ) -> float:
    """Seconds to connect: libpq's ``connect_timeout`` (URL, ``PGCONNECT_TIMEOUT``), else ours.

    libpq treats 0 (or no value) as "wait forever" and values below 2 as 2; so do we, except
    that "forever" is our default instead, so a start-up never hangs.
    """
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    text = query.get("connect_timeout") or environ.get("PGCONNECT_TIMEOUT") or ""
    try:
        seconds = int(text)
    except ValueError:
        return DEFAULT_CONNECT_TIMEOUT
    return DEFAULT_CONNECT_TIMEOUT if seconds <= 0 else float(max(seconds, 2))


def without_connect_timeout(url: str) -> str:
    """The URL without libpq's ``connect_timeout``, which asyncpg would pass to the server."""
    parts = urllib.parse.urlsplit(url)
    if "connect_timeout" not in parts.query:
        return url
    kept = [pair for pair in parts.query.split("&") if pair.partition("=")[0] != "connect_timeout"]
    return urllib.parse.urlunsplit(parts._replace(query="&".join(kept)))


def connection_options(url: str) -> dict[str, Any]:
    """What ``asyncpg.connect`` and ``asyncpg.create_pool`` take for ``url``: our defaults."""
    return {
        "dsn": without_connect_timeout(url),
        "timeout": connect_timeout(url),
        "command_timeout": DEFAULT_COMMAND_TIMEOUT,
    }


async def create_pool(url: str, *, max_size: int, **options: Any) -> asyncpg.Pool:
    """A pool on ``url`` with our defaults, one connection made and kept (so the URL works).

    ``StateError`` (one line: the target and why) if it cannot connect; ``options`` go to
    ``asyncpg.create_pool`` as they are. The pool keeps no floor of connections
    (``min_size=0``): asyncpg would otherwise try to restore it in the background while the
    database is down, logging a traceback each time; calls open what they need.

    A connection goes back as it is, with no reset round trip (``_keep_session``): take
    connections through ``borrow_connection``, which closes one an outage broke.
    """
    target = PostgresTarget.parse(url)
    pool = asyncpg.create_pool(
        min_size=0,
        max_size=max_size,
        reset=_keep_session,
        **connection_options(url),
        **options,
    )
    try:
        await pool
        async with pool.acquire():
            pass
    except Exception as exc:
        pool.terminate()
        raise connection_error(target, exc) from exc
    return pool


async def _keep_session(connection: asyncpg.Connection[Any]) -> None:
    """Give a connection back to the pool as it is, with no reset round trip.

    asyncpg rolls back an open transaction before it calls this either way. Its default
    reset also drops session state (settings, LISTEN, session advisory locks, cursors),
    one more round trip per call; our pool connections never create any (``listen`` has a
    connection of its own; the schema's advisory lock is a transaction's), so that trip is
    pure cost.
    """


@asynccontextmanager
async def borrow_connection(pool: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy[Any]]:
    """One of ``pool``'s connections, closed instead of reused if a failure broke it.

    A connection can be left out of step with its server: by an outage mid-call (the
    server's error read, the end of that exchange never), or by the server's farewell
    error reaching it while it sat idle in the pool (``unavailable`` tells how). Its next
    call then fails "another operation is in progress". ``_keep_session`` skips the reset
    round trip that would have caught the first kind, so a connection whose call raised a
    ``broken`` error is closed here instead of going back.
    """
    async with pool.acquire() as db:
        try:
            yield db
        except BaseException as exc:
            if broken(exc):
                # A connection that saw its socket end has closed itself already and left
                # the pool: its proxy then refuses every call, and the failure that ended it
                # is the one to raise, not that refusal.
                with suppress(asyncpg.InterfaceError):
                    db.terminate()
            raise


def broken(exc: BaseException) -> bool:
    """Whether ``exc`` may have left its connection unfit for the next call.

    An outage or asyncpg out of step (``unavailable``), or asyncpg's own view that the
    connection is closed (``InterfaceError``). A statement's own error (a constraint, a
    serialization failure) leaves the connection ready.
    """
    return unavailable(exc) or isinstance(exc, asyncpg.InterfaceError)


def connection_error(target: PostgresTarget, exc: BaseException) -> StateError:
    """One line for a failed connection: the target, the user where it matters, and why."""
    return StateError(f"Cannot connect to PostgreSQL {target.describe()}: {_reason(target, exc)}")


def _reason(target: PostgresTarget, exc: BaseException) -> str:
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"the database {target.database!r} does not exist (create it, or fix the URL)"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"authentication refused for user {target.user!r}: {error_text(exc)}"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "no answer within the connect timeout (is the host reachable?)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is PostgreSQL running and listening there?)"
    if isinstance(exc, OSError):
        return exc.strerror or error_text(exc)
    return error_text(exc)


def error_text(exc: BaseException) -> str:
    """The exception's own words on one line (asyncpg's never hold the password)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot serve right now, so a retry may succeed.

    The connection refused, lost or timed out; the server shutting down, starting up or out
    of resources (SQLSTATE classes 08, 57 and 53); or asyncpg out of step with the server
    (``InternalClientError``). The last is what a pooled connection raises when the server
    that is shutting down sent it its farewell error while it sat idle, and the end of the
    socket has not been read yet: asyncpg still counts it open, and its next call fails
    "another operation is in progress" before sending anything. ``borrow_connection`` then
    closes it, so the client's retry gets a fresh one.
    """
    return isinstance(
        exc,
        OSError
        | asyncio.TimeoutError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.exceptions.InsufficientResourcesError
        | asyncpg.InternalClientError,
    )


def translated(exc: Exception) -> Exception:
    """``StateUnavailableError`` (clients retry) if ``exc`` is ``unavailable``; else ``exc``."""
    if unavailable(exc):
        return StateUnavailableError(
            f"The PostgreSQL database cannot be reached now: {error_text(exc)}"
        )
    return exc
