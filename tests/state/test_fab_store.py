"""DirectoryFabStore: content-addressed, atomic, off the event loop, closed to path traversal;
LastFab: one read of a round's FAB serves every node."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path

import anyio
import pytest

from superlink_async.state import fab_store
from superlink_async.state.fab_store import (
    DirectoryFabStore,
    InvalidFabHashError,
    LastFab,
    validate_hash,
)

FAB = b"PK\x03\x04 pretend this is a FAB" * 100

INVALID_HASHES = {
    "empty": "",
    "uppercase": hashlib.sha256(FAB).hexdigest().upper(),
    "63-chars": "a" * 63,
    "65-chars": "a" * 65,
    "non-hex": "g" * 64,
    "parent-dir": "../etc/passwd",
    "64-chars-with-slash": "../" + "a" * 61,
    "trailing-newline": "a" * 64 + "\n",
    "meta-suffix": "a" * 64 + ".META",
    "non-ascii-digits": "\u0661" * 64,  # ARABIC-INDIC DIGIT ONE: \d would accept it
}


@pytest.fixture
def store(tmp_path: Path) -> DirectoryFabStore:
    return DirectoryFabStore(tmp_path / "ffs")


@pytest.mark.anyio
async def test_put_returns_lowercase_sha256_and_writes_content_and_meta(
    store: DirectoryFabStore,
) -> None:
    fab_hash = await store.put(FAB)
    assert fab_hash == hashlib.sha256(FAB).hexdigest()
    assert (store.root / fab_hash).read_bytes() == FAB
    assert json.loads((store.root / f"{fab_hash}.META").read_text()) == {}


@pytest.mark.anyio
async def test_put_creates_missing_parent_directories(tmp_path: Path) -> None:
    store = DirectoryFabStore(tmp_path / "a" / "b" / "ffs")
    fab_hash = await store.put(FAB)
    assert (tmp_path / "a" / "b" / "ffs" / fab_hash).is_file()


@pytest.mark.anyio
async def test_get_returns_what_put_stored(store: DirectoryFabStore) -> None:
    fab_hash = await store.put(FAB)
    assert await store.get(fab_hash) == FAB


@pytest.mark.anyio
async def test_a_store_opened_later_reads_what_an_earlier_one_stored(tmp_path: Path) -> None:
    fab_hash = await DirectoryFabStore(tmp_path / "ffs").put(FAB)
    assert await DirectoryFabStore(tmp_path / "ffs").get(fab_hash) == FAB


@pytest.mark.anyio
async def test_the_fab_read_last_is_served_again_without_the_disk(tmp_path: Path) -> None:
    """Every node of a run fetches the same FAB: one file read serves them all."""
    fab_hash = await DirectoryFabStore(tmp_path / "ffs").put(FAB)
    other_hash = await DirectoryFabStore(tmp_path / "ffs").put(b"another FAB")
    store = DirectoryFabStore(tmp_path / "ffs")
    assert await store.get(fab_hash) == FAB
    (tmp_path / "ffs" / fab_hash).unlink()
    (tmp_path / "ffs" / other_hash).unlink()
    assert await store.get(fab_hash) == FAB
    assert await store.get(other_hash) is None  # only the last one is kept


@pytest.mark.anyio
async def test_get_of_unknown_hash_is_none_even_without_a_storage_dir(
    store: DirectoryFabStore,
) -> None:
    assert await store.get(hashlib.sha256(b"never stored").hexdigest()) is None
    assert not store.root.exists()


@pytest.mark.anyio
async def test_empty_content_is_stored_under_the_hash_of_nothing(store: DirectoryFabStore) -> None:
    fab_hash = await store.put(b"")
    assert fab_hash == hashlib.sha256(b"").hexdigest()
    assert await store.get(fab_hash) == b""


@pytest.mark.anyio
async def test_putting_the_same_content_again_does_not_rewrite_the_file(
    store: DirectoryFabStore,
) -> None:
    fab_hash = await store.put(FAB)
    before = (store.root / fab_hash).stat()
    meta_before = (store.root / f"{fab_hash}.META").stat()
    assert await store.put(FAB) == fab_hash
    # An atomic rewrite would have renamed a new inode into place.
    assert (store.root / fab_hash).stat().st_ino == before.st_ino
    assert (store.root / f"{fab_hash}.META").stat().st_ino == meta_before.st_ino


@pytest.mark.anyio
async def test_put_repairs_a_truncated_file_and_a_missing_meta(store: DirectoryFabStore) -> None:
    fab_hash = hashlib.sha256(FAB).hexdigest()
    store.root.mkdir(parents=True)
    (store.root / fab_hash).write_bytes(FAB[:10])  # e.g. left by a reference SuperLink crash
    await store.put(FAB)
    assert (store.root / fab_hash).read_bytes() == FAB
    assert (store.root / f"{fab_hash}.META").read_text() == "{}"


@pytest.mark.anyio
async def test_put_leaves_no_temporary_files_behind(store: DirectoryFabStore) -> None:
    fab_hash = await store.put(FAB)
    await store.put(b"another FAB")
    other = hashlib.sha256(b"another FAB").hexdigest()
    assert sorted(p.name for p in store.root.iterdir()) == sorted(
        [fab_hash, f"{fab_hash}.META", other, f"{other}.META"]
    )


@pytest.mark.anyio
async def test_concurrent_puts_of_the_same_content_are_safe(store: DirectoryFabStore) -> None:
    content = FAB * 1000  # large enough for the writers' threads to overlap
    hashes: list[str] = []

    async def put() -> None:
        hashes.append(await store.put(content))

    async with anyio.create_task_group() as group:
        for _ in range(32):
            group.start_soon(put)

    expected = hashlib.sha256(content).hexdigest()
    assert hashes == [expected] * 32
    assert await store.get(expected) == content
    assert sorted(p.name for p in store.root.iterdir()) == [expected, f"{expected}.META"]


@pytest.mark.anyio
async def test_concurrent_puts_of_different_contents_keep_each_intact(
    store: DirectoryFabStore,
) -> None:
    contents = [FAB + bytes([i]) * 10_000 for i in range(16)]
    async with anyio.create_task_group() as group:
        for content in contents:
            group.start_soon(store.put, content)
    for content in contents:
        assert await store.get(hashlib.sha256(content).hexdigest()) == content


@pytest.mark.anyio
async def test_put_does_its_disk_work_off_the_event_loop_thread(
    store: DirectoryFabStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[threading.Thread] = set()
    write_once = fab_store._write_once

    def spy(path: Path, data: bytes) -> None:
        threads.add(threading.current_thread())
        write_once(path, data)

    monkeypatch.setattr(fab_store, "_write_once", spy)
    await store.put(FAB)
    assert threads
    assert threading.current_thread() not in threads


@pytest.mark.parametrize("fab_hash", INVALID_HASHES.values(), ids=INVALID_HASHES)
def test_validate_hash_rejects_anything_but_64_lowercase_hex_chars(fab_hash: str) -> None:
    with pytest.raises(InvalidFabHashError) as raised:
        validate_hash(fab_hash)
    assert str(raised.value) == (
        f"Invalid FAB hash {fab_hash!r}: expected 64 lowercase hexadecimal characters"
    )
    assert isinstance(raised.value, ValueError)


def test_validate_hash_accepts_a_sha256_hexdigest() -> None:
    validate_hash(hashlib.sha256(FAB).hexdigest())


@pytest.mark.anyio
@pytest.mark.parametrize("fab_hash", INVALID_HASHES.values(), ids=INVALID_HASHES)
async def test_get_rejects_invalid_hash_before_touching_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fab_hash: str
) -> None:
    # A file the traversal would reach: a store that used the key as a path would return it.
    store = DirectoryFabStore(tmp_path / "ffs" / "store")
    (tmp_path / "ffs" / "etc").mkdir(parents=True)
    (tmp_path / "ffs" / "etc" / "passwd").write_bytes(b"root:x:0:0")

    def no_disk(*args: object, **kwargs: object) -> None:
        raise AssertionError("the filesystem was accessed")

    monkeypatch.setattr(anyio.Path, "read_bytes", no_disk)
    monkeypatch.setattr(anyio.to_thread, "run_sync", no_disk)
    with pytest.raises(InvalidFabHashError):
        await store.get(fab_hash)
    assert not store.root.exists()


class CountedReads:
    """A FAB source that counts its reads and answers each once ``answer`` is set."""

    def __init__(self, content: bytes | None) -> None:
        self.content = content
        self.reads = 0
        self.answer = asyncio.Event()
        self.failure: Exception | None = None

    async def __call__(self, fab_hash: str) -> bytes | None:
        self.reads += 1
        await self.answer.wait()
        if self.failure is not None:
            raise self.failure
        return self.content


@pytest.mark.anyio
async def test_fetches_that_come_while_the_fab_is_read_share_that_read() -> None:
    """A round's first instructions reach every node at once: one read serves them all."""
    last, source = LastFab(), CountedReads(FAB)
    fetches = [asyncio.ensure_future(last.get("a" * 64, source)) for _ in range(50)]
    await asyncio.sleep(0)
    source.answer.set()
    assert await asyncio.gather(*fetches) == [FAB] * 50
    assert await last.get("a" * 64, source) == FAB
    assert source.reads == 1


@pytest.mark.anyio
async def test_a_fetch_that_leaves_does_not_cancel_the_read_for_the_others() -> None:
    last, source = LastFab(), CountedReads(FAB)
    leaving = asyncio.ensure_future(last.get("a" * 64, source))
    staying = asyncio.ensure_future(last.get("a" * 64, source))
    await asyncio.sleep(0)
    leaving.cancel()
    source.answer.set()
    assert await staying == FAB
    assert leaving.cancelled()
    assert source.reads == 1


@pytest.mark.anyio
async def test_a_failed_read_and_a_missing_fab_are_not_kept() -> None:
    """The database was down, or the FAB not stored yet: the next fetch reads again."""
    last, source = LastFab(), CountedReads(None)
    source.answer.set()
    assert await last.get("a" * 64, source) is None
    source.failure = OSError("disk gone")
    with pytest.raises(OSError, match="disk gone"):
        await last.get("a" * 64, source)
    source.failure, source.content = None, FAB
    assert await last.get("a" * 64, source) == FAB
    assert await last.get("a" * 64, source) == FAB
    assert source.reads == 3


@pytest.mark.anyio
async def test_a_fab_just_stored_is_served_without_a_read_and_another_one_replaces_it() -> None:
    last, source, other = LastFab(), CountedReads(FAB), CountedReads(b"another FAB")
    source.answer.set()
    other.answer.set()
    last.keep("a" * 64, FAB)
    assert await last.get("a" * 64, source) == FAB
    assert source.reads == 0
    assert await last.get("b" * 64, other) == b"another FAB"
    assert await last.get("a" * 64, source) == FAB  # only the last FAB is kept: read again
    assert source.reads == 1
