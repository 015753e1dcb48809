"""Where FAB bytes are kept: the ``FabStore`` protocol and its directory (``--storage-dir``).

What a valid FAB is (its ``pyproject.toml``) is the services' business
(``superlink_async.services.fabs``); a store only keeps bytes under their SHA-256, so a
database backend can bring a store of its own without touching those rules.

``DirectoryFabStore`` lays FABs out on disk as flwr's ``DiskFfs``: each FAB lives in
``<root>/<sha256>`` beside a ``<sha256>.META`` holding ``{}``. Unlike the
reference, keys are checked before they reach the filesystem (``GetFab`` takes the key from
the network), files appear atomically, and an existing FAB is not rewritten. Disk work runs
in anyio's worker threads so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread

META_SUFFIX = ".META"
#: What the reference writes into every ``.META`` file (``json.dumps({})``).
META_CONTENT = b"{}"

_FAB_HASH = re.compile(r"[0-9a-f]{64}")


class InvalidFabHashError(ValueError):
    """A FAB key that is not a lowercase hex SHA-256, so it must not name a file."""

    def __init__(self, fab_hash: str) -> None:
        super().__init__(
            f"Invalid FAB hash {fab_hash!r}: expected 64 lowercase hexadecimal characters"
        )
        self.fab_hash = fab_hash


def validate_hash(fab_hash: str) -> None:
    """Raise ``InvalidFabHashError`` unless ``fab_hash`` is exactly 64 lowercase hex digits.

    Only such keys are ever used as file names, which rules out path traversal.
    """
    if not _FAB_HASH.fullmatch(fab_hash):
        raise InvalidFabHashError(fab_hash)


class FabStore(Protocol):
    """FABs keyed by the lowercase hex SHA-256 of their bytes."""

    async def put(self, content: bytes) -> str:
        """Store ``content`` and return its hash; storing the same bytes again is harmless."""
        ...

    async def get(self, fab_hash: str) -> bytes | None:
        """The FAB stored under ``fab_hash``, or ``None``; ``InvalidFabHashError`` if malformed."""
        ...


class LastFab:
    """The FAB a store stored or read last, kept in memory, and its read shared while under way.

    Every node of a run fetches the run's FAB, most of them within moments of each other
    when a round's first instructions arrive. Without the copy, a round of 1,000 nodes
    reads the same bytes 1,000 times; without sharing the read, every fetch that comes
    while the first read is still under way reads them again. A FAB never changes under
    its hash, so the copy cannot go stale, whichever process stored it. A read that failed
    or found nothing is not kept: the next fetch reads again.
    """

    def __init__(self) -> None:
        self._hash: str | None = None
        #: The bytes under ``_hash`` once known; the read of them while under way.
        self._content: bytes | None = None
        self._reading: asyncio.Future[bytes | None] | None = None

    def keep(self, fab_hash: str, content: bytes) -> None:
        """``content`` was just stored under ``fab_hash``: serve it from memory from now on."""
        self._hash, self._content, self._reading = fab_hash, content, None

    async def get(
        self, fab_hash: str, read: Callable[[str], Awaitable[bytes | None]]
    ) -> bytes | None:
        """The FAB under ``fab_hash``: the kept copy, the read under way, or ``read``'s.

        The read runs in a task of its own, so a caller that leaves does not cancel it for
        the others waiting on it.
        """
        if self._hash == fab_hash:
            if self._content is not None:
                return self._content
            if self._reading is not None:
                return await asyncio.shield(self._reading)
        reading = asyncio.ensure_future(read(fab_hash))
        self._hash, self._content, self._reading = fab_hash, None, reading
        # Added before the waiters' callbacks, so the copy is kept when they resume.
        reading.add_done_callback(self._settle)
        return await asyncio.shield(reading)

    def _settle(self, reading: asyncio.Future[bytes | None]) -> None:
        # ``exception()`` also marks a failure as seen: the callers waiting got it already.
        found = not reading.cancelled() and reading.exception() is None
        if reading is not self._reading:
            return  # ``keep`` or a read of another FAB came since
        self._reading = None
        content = reading.result() if found else None
        if content is None:
            self._hash = None
        self._content = content


class DirectoryFabStore:
    """FABs on disk, keyed by the SHA-256 of their bytes; the last one in memory (``LastFab``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._last = LastFab()

    async def put(self, content: bytes) -> str:
        """Store ``content`` and return its lowercase hex SHA-256 (safe to call concurrently)."""
        fab_hash = await anyio.to_thread.run_sync(self._put, content)
        self._last.keep(fab_hash, content)
        return fab_hash

    async def get(self, fab_hash: str) -> bytes | None:
        """The FAB stored under ``fab_hash``, or ``None`` if there is none.

        Raises ``InvalidFabHashError`` (before any file access) for a malformed key.
        """
        validate_hash(fab_hash)
        return await self._last.get(fab_hash, self._read)

    async def _read(self, fab_hash: str) -> bytes | None:
        try:
            return await anyio.Path(self.root / fab_hash).read_bytes()
        except FileNotFoundError:
            return None

    def _put(self, content: bytes) -> str:
        """Blocking half of ``put``: hashing a large FAB also belongs off the event loop."""
        fab_hash = hashlib.sha256(content).hexdigest()
        self.root.mkdir(parents=True, exist_ok=True)
        # The metadata first: once the content file is visible, the pair is complete.
        _write_once(self.root / f"{fab_hash}{META_SUFFIX}", META_CONTENT)
        _write_once(self.root / fab_hash, content)
        return fab_hash


def _write_once(path: Path, data: bytes) -> None:
    """Atomically give ``path`` the content ``data`` unless it already has it.

    Names are content hashes, so an existing file of the right size already holds ``data``;
    anything else (e.g. a truncated leftover) is replaced. Writers racing on the same path
    each use their own temporary file and the last rename wins with identical bytes.
    """
    try:
        if path.stat().st_size == len(data):
            return
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        # "x" (O_EXCL): never write through a file or symlink someone else put there.
        with open(temporary, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
