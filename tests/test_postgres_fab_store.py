"""FABs in the PostgreSQL database: content-addressed, checked as on disk, shared by processes.

With a PostgreSQL ``--database`` the FAB store is the ``fab`` table beside the state, so
SuperLinks on several machines need no shared filesystem: what one stores, another (its
own pool) reads at once, and a reopened database still has it; ``--storage-dir`` stays
empty. Keys are checked before any query, as the directory store checks them before any
file access.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from superlink_async.state.base import StateUnavailableError
from superlink_async.state.fab_store import InvalidFabHashError
from superlink_async.state.factory import fab_store_for, open_state
from superlink_async.state.postgres.fab_store import PostgresFabStore
from superlink_async.testing.postgres import PostgresServer, running_postgres_server
from tests.fabs import make_fab

pytestmark = pytest.mark.anyio


async def test_a_fab_is_kept_under_its_sha256_and_stored_once(
    postgres_url: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    fab = make_fab()
    async with open_state(postgres_url) as state:
        store = fab_store_for(postgres_url, state, tmp_path / "ffs")
        assert isinstance(store, PostgresFabStore)
        fab_hash = await store.put(fab)
        assert fab_hash == hashlib.sha256(fab).hexdigest()
        assert await store.put(fab) == fab_hash
        assert await store.get(fab_hash) == fab
        assert await store.get("0" * 64) is None
    database = postgres_url.rpartition("/")[2]
    assert postgres_server.psql("SELECT count(*) FROM fab", database).strip() == "1"
    assert not (tmp_path / "ffs").exists()


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 64, "0" * 63, "", "0" * 64 + "\n"])
async def test_a_malformed_key_is_refused_before_any_query(postgres_url: str, key: str) -> None:
    async with open_state(postgres_url) as state:
        store = fab_store_for(postgres_url, state, Path("unused"))
        with pytest.raises(InvalidFabHashError):
            await store.get(key)


async def test_another_process_reads_a_fab_at_once_and_a_reopen_keeps_it(
    postgres_url: str,
) -> None:
    """Two states on one database stand for two SuperLink processes (two pools)."""
    fab = make_fab("shared")
    async with open_state(postgres_url) as one, open_state(postgres_url) as other:
        fab_hash = await fab_store_for(postgres_url, one, Path("unused")).put(fab)
        assert await fab_store_for(postgres_url, other, Path("unused")).get(fab_hash) == fab
    async with open_state(postgres_url) as reopened:
        assert await fab_store_for(postgres_url, reopened, Path("unused")).get(fab_hash) == fab


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with running_postgres_server() as server:
        yield server


async def test_a_stopped_server_is_unavailable_and_the_store_recovers(
    own_server: PostgresServer,
) -> None:
    server, url = own_server, own_server.url()
    async with open_state(url) as state:
        store = fab_store_for(url, state, Path("unused"))
        fab_hash = await store.put(make_fab("before"))
        server.stop()
        with pytest.raises(StateUnavailableError, match="PostgreSQL"):
            await store.put(make_fab("during"))
        with pytest.raises(StateUnavailableError):
            await fab_store_for(url, state, Path("unused")).get(fab_hash)
        server.start()
        assert await store.get(fab_hash) == make_fab("before")
