"""Change notices between the processes sharing one database: NOTIFY when writing, LISTEN.

Every transaction that changes a run (created, its status, claimed, reserved, given back,
failed with a lost replica) or appends a ServerApp log sends a notice on ``CHANNEL`` inside
the same transaction: PostgreSQL delivers it at the commit, to every listening connection,
its sender's included, and never for a transaction that rolled back. The payload is tiny
(``run <id>``, ``log <id>``, ``runs``); listeners only learn that something changed and read
what they wait for again. Triggers of the schema (``schema``, version 3) send ``node``
whenever a statement may have ended key bindings and ``ins`` whenever one stored
instructions, whoever ran it (``kept``).

``listen_for_changes`` holds one connection of its own (not from the pool: a listening
connection must stay open, and a pool hands its connections around). Notices sent while it
is not connected are lost; it says when listening starts and when it stops, so that what
was read meanwhile is read again, and waiters poll as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg

from superlink_async.logs import logger
from superlink_async.state.postgres.connect import connection_options, error_text, unavailable

if TYPE_CHECKING:
    from superlink_async.state.postgres.schema import Connection

#: The channel every notice goes to (LISTEN/NOTIFY channels are per database).
CHANNEL = "superlink_async_changes"
#: Payload kinds: one run changed, a log line appended to one run, several runs changed;
#: sent by the schema's triggers: key bindings may have ended, instructions were stored.
RUN = "run"
LOG = "log"
RUNS = "runs"
NODE = "node"
INSTRUCTIONS = "ins"

#: Seconds before reconnecting after the listening connection failed, doubled after each
#: failure up to ``RETRY_MAX``.
RETRY_FIRST = 0.25
RETRY_MAX = 5.0
#: Seconds between checks that a quiet listening connection still reaches the server: a
#: server that vanished without closing the socket (its machine lost) is noticed within
#: this, plus as long again for the check's answer.
KEEPALIVE = 15.0


def payload(kind: str, run_id: int | None = None) -> str:
    """A notice's payload: its kind, and the run (as stored) it is about."""
    return kind if run_id is None else f"{kind} {run_id}"


async def notify(db: Connection, kind: str, run_id: int | None = None) -> None:
    """Send a notice from within ``db``'s transaction (delivered if and when it commits)."""
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, payload(kind, run_id))


def _retryable(exc: Exception) -> bool:
    """Whether listening may work again later: the server unreachable or refusing for now."""
    return unavailable(exc) or isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError)


def kind_of(notice: str) -> str:
    """A notice's kind (``RUN``, ``LOG``, ``NODE`` ...), without the run it names."""
    return notice.partition(" ")[0]


async def listen_for_changes(
    url: str,
    where: str,
    on_notice: Callable[[str], None],
    on_listening: Callable[[bool], None],
) -> None:
    """Call ``on_notice`` with every notice's payload on ``CHANNEL``, until cancelled.

    ``on_listening(True)`` once each connection listens (notices sent before were missed),
    ``on_listening(False)`` once it is lost or listening ends. A lost or refused connection
    is retried (``RETRY_FIRST`` .. ``RETRY_MAX``), with one warning per outage and a line
    when notices are heard again. Cancelling closes the connection.
    """
    outage = _Outage(where)
    while True:
        try:
            await _listen_until_lost(url, on_notice, on_listening, outage.over)
            reason = "the connection closed"
        except Exception as exc:
            if not _retryable(exc):
                raise
            reason = error_text(exc)
        await anyio.sleep(outage.began(reason))


class _Outage:
    """Whether notices are heard now, what was logged about it, and the retry delay."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._ongoing = False
        self._delay = RETRY_FIRST

    def began(self, reason: str) -> float:
        """The connection failed: warn once per outage; the seconds to wait before retrying."""
        if not self._ongoing:
            self._ongoing = True
            logger.warning(
                "Cannot hear other replicas' changes to the %s (%s): retrying; their "
                "changes are seen by polling meanwhile",
                self._where,
                reason,
            )
        delay, self._delay = self._delay, min(2 * self._delay, RETRY_MAX)
        return delay

    def over(self) -> None:
        """Listening again."""
        if self._ongoing:
            self._ongoing = False
            logger.info("Hearing other replicas' changes to the %s again", self._where)
        self._delay = RETRY_FIRST


async def _listen_until_lost(
    url: str,
    on_notice: Callable[[str], None],
    on_listening: Callable[[bool], None],
    heard_again: Callable[[], None],
) -> None:
    """Listen on one connection; return when the server closes it, raise if it fails."""
    connection: asyncpg.Connection[Any] = await asyncpg.connect(**connection_options(url))
    try:
        closed = anyio.Event()
        connection.add_termination_listener(lambda _connection: closed.set())
        await connection.add_listener(
            CHANNEL, lambda _connection, _pid, _channel, notice: on_notice(notice)
        )
        heard_again()
        on_listening(True)
        try:
            while not closed.is_set():
                with anyio.move_on_after(KEEPALIVE):
                    await closed.wait()
                if not closed.is_set():
                    await connection.execute("SELECT 1", timeout=KEEPALIVE)
        finally:
            on_listening(False)
    finally:
        connection.terminate()
