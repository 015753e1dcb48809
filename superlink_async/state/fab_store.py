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

import hashlib
import os
import re
import secrets
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


class DirectoryFabStore:
    """FABs on disk, keyed by the SHA-256 of their bytes.

    The FAB stored or read last is also kept in memory: every node of a run fetches the
    run's FAB once, so a round of 1,000 nodes reads the same file 1,000 times otherwise.
    A FAB never changes under its hash, so the copy cannot go stale.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._last: tuple[str, bytes] | None = None

    async def put(self, content: bytes) -> str:
        """Store ``content`` and return its lowercase hex SHA-256 (safe to call concurrently)."""
        fab_hash = await anyio.to_thread.run_sync(self._put, content)
        self._last = (fab_hash, content)
        return fab_hash

    async def get(self, fab_hash: str) -> bytes | None:
        """The FAB stored under ``fab_hash``, or ``None`` if there is none.

        Raises ``InvalidFabHashError`` (before any file access) for a malformed key.
        """
        validate_hash(fab_hash)
        if self._last is not None and self._last[0] == fab_hash:
            return self._last[1]
        try:
            content = await anyio.Path(self.root / fab_hash).read_bytes()
        except FileNotFoundError:
            return None
        self._last = (fab_hash, content)
        return content

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
