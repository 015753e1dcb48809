"""The one place that reaches into aiosqlite's private names (pinned in pyproject.toml).

aiosqlite runs each call on one worker thread per connection, but its public API hands that
thread single statements only. The SQLite backend runs a whole operation (many statements,
one transaction) in one hop instead, which needs three private names:

- ``Connection._execute(fn, *args)``: queue a function for the worker thread, await its result;
- ``Connection._conn``: the ``sqlite3.Connection`` that the function then uses on that thread;
- ``Connection._thread``: the worker thread, to wait for its end after a connect that failed
  (aiosqlite stops it but does not wait for it), while the event loop can still hear it.

``check`` verifies at start-up that the installed aiosqlite still has them, so that a release
that moved one fails at once and by name rather than on the first call.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

import aiosqlite
import anyio.to_thread

T = TypeVar("T")
A = TypeVar("A")

_LIBRARY = "aiosqlite"


def check() -> None:
    """Raise ``RuntimeError`` naming the library, its version and the first private name missing.

    Builds a connection object without starting it (no thread, no file), so it costs nothing.
    """
    require_private_names(aiosqlite.connect(":memory:"))


def require_private_names(connection: aiosqlite.Connection) -> None:
    """What ``check`` verifies, on a given (unstarted) connection object."""
    kind = type(connection)
    if not isinstance(inspect.getattr_static(kind, "_conn", None), property):
        _missing("Connection._conn (a property)")
    if not inspect.iscoroutinefunction(inspect.getattr_static(kind, "_execute", None)):
        _missing("Connection._execute (a coroutine function)")
    if not isinstance(vars(connection).get("_thread"), threading.Thread):
        _missing("Connection._thread (a threading.Thread)")


def _missing(name: str) -> None:
    version = importlib.metadata.version(_LIBRARY)
    raise RuntimeError(
        f"{_LIBRARY} {version} has no {name}, which superlink_async/_internals/aiosqlite.py "
        f"relies on: install the {_LIBRARY} version that pyproject.toml names"
    )


def sqlite_connection(connection: aiosqlite.Connection) -> sqlite3.Connection:
    """The ``sqlite3.Connection`` behind an open aiosqlite connection; use it on its thread only."""
    raw: sqlite3.Connection = connection._conn
    return raw


async def run_on_connection_thread(
    connection: aiosqlite.Connection, work: Callable[[A], T], argument: A
) -> T:
    """``work(argument)`` on the connection's worker thread, queued behind what is already there.

    Once queued it runs to its end even if the awaiting task is cancelled meanwhile.
    """
    result: T = await connection._execute(work, argument)  # type: ignore[no-untyped-call]
    return result


async def wait_for_worker_thread(connection: aiosqlite.Connection) -> None:
    """Wait, off the event loop, for the worker thread of a connection that failed to open."""
    await anyio.to_thread.run_sync(connection._thread.join)
