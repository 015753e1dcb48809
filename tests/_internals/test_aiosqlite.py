"""The fence around aiosqlite's private names: it checks them, and the backend works through it."""

from __future__ import annotations

import importlib.metadata
import sqlite3
import threading

import aiosqlite
import pytest

from superlink_async._internals import aiosqlite as fence

pytestmark = pytest.mark.anyio


def test_check_passes_on_the_installed_aiosqlite() -> None:
    fence.check()


@pytest.mark.parametrize("name", ["_conn", "_execute"])
def test_check_names_the_library_its_version_and_a_missing_method(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A release that renamed one fails at start-up, by name, not on the first call."""
    monkeypatch.delattr(aiosqlite.Connection, name)
    version = importlib.metadata.version("aiosqlite")
    with pytest.raises(RuntimeError, match=rf"^aiosqlite {version} has no Connection\.{name} "):
        fence.check()


def test_check_names_a_missing_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiosqlite before 0.22 was itself the thread and had no ``_thread``."""
    connect = aiosqlite.connect

    def connect_without_thread(database: str) -> aiosqlite.Connection:
        connection = connect(database)
        del connection._thread
        return connection

    monkeypatch.setattr(aiosqlite, "connect", connect_without_thread)
    with pytest.raises(RuntimeError, match=r"has no Connection\._thread \(a threading\.Thread\)"):
        fence.check()


async def test_work_runs_whole_on_the_connections_own_thread() -> None:
    async with aiosqlite.connect(":memory:") as connection:
        raw = fence.sqlite_connection(connection)

        def work(db: sqlite3.Connection) -> tuple[int, bool]:
            value = db.execute("SELECT 41 + 1").fetchone()[0]
            return value, threading.current_thread() is threading.main_thread()

        assert await fence.run_on_connection_thread(connection, work, raw) == (42, False)


async def test_a_failed_open_leaves_no_worker_thread_behind() -> None:
    connecting = aiosqlite.connect("/nonexistent-directory/state.db")
    with pytest.raises(sqlite3.OperationalError):
        await connecting
    await fence.wait_for_worker_thread(connecting)
    assert not connecting._thread.is_alive()
